// Reading the kernel's process table (/proc). Start times are how a PID is proven to still be
// the process gpuvisor started: a PID can be reused, a (PID, start time) pair cannot.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace gpuvisor {

struct ProcStat {
  pid_t pid = 0;
  pid_t ppid = 0;
  pid_t pgid = 0;
  pid_t sid = 0;
  char state = '?';         // R, S, D, Z (zombie), ...
  uint64_t start_time = 0;  // clock ticks after boot (field 22 of /proc/PID/stat)
  std::string comm;         // short command name, for display only, never for matching
};

// The process's stat line, or nullopt when it is gone (or /proc cannot be read).
std::optional<ProcStat> read_proc_stat(pid_t pid);

// True when pid runs (not a zombie) and started at start_time.
bool same_process_alive(pid_t pid, uint64_t start_time);

// When a process with this start_time started, in Unix seconds (10 ms resolution).
double start_time_unix_seconds(uint64_t start_time);

// The live processes that belong to the service whose main process is root (root excluded), in
// one /proc scan: those whose parent chain reaches root, and those still in root's session
// (root called setsid, so its PID is the session id), whose parent may have exited already.
// Only meaningful while root's PID cannot be reused, i.e. before it is reaped.
std::vector<ProcStat> list_service_tree(pid_t root);

// The live processes in root's PID namespace (a container's), root included. Where that is the
// daemon's own namespace (a container run with --pid=host), root and its service tree instead.
std::vector<pid_t> list_namespace_members(pid_t root);

// The process listening on this TCP port (IPv4 or IPv6), found through /proc/net and the
// processes' descriptors; where several share the socket (pre-forked workers), the oldest.
std::optional<pid_t> find_tcp_listener(unsigned port);

// All processes, for callers that need more than one query per scan.
std::vector<ProcStat> list_processes();

}  // namespace gpuvisor
