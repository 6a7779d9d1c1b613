// A cgroup v2 directory that holds one child's process tree (a service's, a worker's). Membership
// is how gpuvisor finds every descendant, including one that called setsid() or outlived its
// parent; cgroup.kill (Linux 5.14) ends them all at once.
#pragma once

#include <sys/types.h>

#include <optional>
#include <string>
#include <vector>

#include "core/result.h"

namespace gpuvisor {

class Cgroup {
 public:
  // Creates (or reuses) dir. Refuses a dir that does not live on a cgroup2 mount.
  static Result<Cgroup> create(const std::string& dir);
  // An existing cgroup, e.g. from a persisted record after a daemon restart.
  static std::optional<Cgroup> open_existing(const std::string& dir);

  const std::string& dir() const { return dir_; }
  std::string procs_file() const { return dir_ + "/cgroup.procs"; }

  std::vector<pid_t> pids() const;
  bool populated() const;
  // SIGKILL goes through cgroup.kill where the kernel has it; other signals go to each member.
  void signal_all(int sig) const;
  // Removes the directory once it is empty; a no-op while processes remain.
  void remove() const;

 private:
  explicit Cgroup(std::string dir) : dir_(std::move(dir)) {}
  std::string dir_;
};

}  // namespace gpuvisor
