// One process tree that the daemon started (a service, a plugin worker, a hook) or adopted (a
// service a previous daemon started). Whatever owns it, it is handled one way:
// - born into a cgroup of its own where the machine delegates cgroup v2, so every descendant is
//   found, even one that called setsid() and outlived its parent; else its session and the
//   descendants seen so far (/proc), with start times checked against PID reuse;
// - its exit watched through a pidfd on an executor, reported once as an ExitInfo;
// - stopped as a whole tree: SIGTERM, a grace timer, then SIGKILL (cgroup.kill where it can).
// Nothing else in gpuvisor forks, signals or reaps a child.
#pragma once

#include <sys/types.h>

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/steady_timer.hpp>
#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "core/duration.h"
#include "core/result.h"
#include "runtime/cgroup.h"
#include "runtime/exit_info.h"
#include "runtime/pidfd.h"

namespace gpuvisor {

struct ChildSpec {
  std::vector<std::string> argv;  // argv[0] is looked up in PATH when it has no '/'
  // Laid over the daemon's environment (see merged_environment()).
  std::vector<std::pair<std::string, std::string>> env{};
  std::string cwd{};         // empty: inherit
  std::string log_path{};    // stdout and stderr are appended here; empty: /dev/null
  std::string cgroup_dir{};  // created for this child, which starts in it; empty: no cgroup
  // A worker's pipes: its stdin and stdout instead of /dev/null and the log (stderr stays in
  // the log). The caller keeps and closes its own descriptors.
  int stdin_fd = -1;
  int stdout_fd = -1;
};

class ChildProcess : public std::enable_shared_from_this<ChildProcess> {
 public:
  using OnExit = std::function<void(ExitInfo)>;

  // Starts spec.argv. An exec failure is an error naming the step ("cannot execute 'x': ..."),
  // not an exit 127; the cgroup made for it is removed again.
  static Result<std::shared_ptr<ChildProcess>> spawn(boost::asio::any_io_executor executor,
                                                     const ChildSpec& spec);
  // A process this daemon did not start, already pinned by pidfd and proven by the caller to
  // be the one it means. Its exit status cannot be read (ExitInfo::known is false).
  static std::shared_ptr<ChildProcess> adopt(boost::asio::any_io_executor executor, pid_t pid,
                                             Pidfd pidfd, std::optional<Cgroup> cgroup);
  // Removes its cgroup when empty. Never signals: a service may be left running on purpose.
  ~ChildProcess();
  ChildProcess(const ChildProcess&) = delete;
  ChildProcess& operator=(const ChildProcess&) = delete;

  // Begins watching; on_exit runs once, posted to the executor, when the main process exits.
  void watch(OnExit on_exit);

  pid_t pid() const { return pid_; }
  // True once the main process has exited (its tree may still have members).
  bool exited() const { return exited_; }
  // The cgroup holding the tree, or empty.
  std::string cgroup_dir() const { return cgroup_ ? cgroup_->dir() : ""; }
  // Every live process of the tree, main process included.
  std::vector<pid_t> pids() const;
  // Looks for new descendants (only needed where no cgroup holds the tree).
  void refresh();
  // SIGTERM to the whole tree, SIGKILL after grace (zero: at once). done runs once, on the
  // executor, after every process of the tree is gone. Calling again with a shorter grace
  // escalates; a longer one never postpones; every done given is called.
  void stop(Millis grace, std::function<void(StopOutcome)> done);
  // SIGKILL to the whole tree, and the main process reaped before returning: for an owner that
  // is going away and must leave nothing running (a plugin worker's).
  void kill_now();

 private:
  ChildProcess(boost::asio::any_io_executor executor, pid_t pid, Pidfd pidfd,
               std::optional<Cgroup> cgroup, bool is_child);
  void arm_watch();
  void on_pidfd_readable();
  ExitInfo reap();
  void signal_tree(int sig);
  bool tree_gone() const;
  void arm_kill(std::chrono::steady_clock::time_point at);
  void poll_gone();
  void finish_stop();

  boost::asio::any_io_executor executor_;
  pid_t pid_;
  boost::asio::posix::stream_descriptor pidfd_;  // owns the pidfd
  std::optional<Cgroup> cgroup_;
  bool is_child_;  // spawned here, so waitid() can read (and must reap) its exit status
  bool exited_ = false;
  OnExit on_exit_;

  // Without a cgroup: descendants seen so far, PID -> start time, so that one whose parent
  // died is still found (and one whose PID was reused is not signalled).
  std::map<pid_t, uint64_t> seen_descendants_;

  bool stopping_ = false;
  bool killed_ = false;
  std::optional<std::chrono::steady_clock::time_point> kill_at_;
  boost::asio::steady_timer kill_timer_;
  boost::asio::steady_timer poll_timer_;
  Millis poll_interval_{1};
  std::vector<std::function<void(StopOutcome)>> stop_waiters_;
};

// Raises the daemon's soft descriptor limit to its hard limit (each event stream, log follower
// and proxied connection is a descriptor; 1024 is soon reached). Children spawned afterwards
// get the original soft limit back.
void raise_fd_limit();

// The daemon's environment without GPUVISOR_TOKEN, merged with overrides (overrides win), as
// "KEY=value" strings: what a child is given.
std::vector<std::string> merged_environment(
    const std::vector<std::pair<std::string, std::string>>& overrides);

}  // namespace gpuvisor
