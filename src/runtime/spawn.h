// fork/exec of one child process, for ChildProcess (its only caller), done so that the daemon
// can always find and stop all of it: a new session and process group, a cgroup it is born into (so
// every descendant is in it), output straight into a log file (so it survives a daemon restart),
// and an exec failure reported back as an error instead of a mysterious exit 127.
#pragma once

#include <sys/types.h>

#include <string>
#include <vector>

#include "core/result.h"
#include "runtime/pidfd.h"

namespace gpuvisor {

struct SpawnRequest {
  std::vector<std::string> argv;  // argv[0] is looked up in PATH when it has no '/'
  std::vector<std::string> env;   // complete environment, "KEY=value"
  std::string cwd;                // empty: inherit
  std::string log_path;           // stdout and stderr are appended here; empty: /dev/null
  std::string cgroup_dir;         // cgroup v2 directory the process starts in; empty: none
  // A worker's pipes: its stdin and stdout instead of /dev/null and the log (stderr stays in
  // the log). The caller keeps its own ends; these are closed in the daemon by the caller.
  int stdin_fd = -1;
  int stdout_fd = -1;
};

struct Spawned {
  pid_t pid = 0;
  Pidfd pidfd;
};

Result<Spawned> spawn_process(const SpawnRequest& request);

}  // namespace gpuvisor
