#include "runtime/child_process.h"

#include <poll.h>
#include <sys/wait.h>

#include <algorithm>
#include <boost/asio/post.hpp>
#include <cerrno>
#include <csignal>
#include <cstring>

#include "runtime/proc.h"
#include "runtime/spawn.h"

namespace gpuvisor {

namespace {
constexpr Millis kMaxGonePoll{50};
}

std::string ExitInfo::describe() const {
  if (!detail.empty()) return detail;
  if (!known) return "exited (status unknown: not a child of this daemon)";
  if (signal != 0) {
    return "killed by signal " + std::to_string(signal) + " (" + strsignal(signal) + ")";
  }
  return "exited with status " + std::to_string(code);
}

Result<std::shared_ptr<ChildProcess>> ChildProcess::spawn(boost::asio::any_io_executor executor,
                                                          const ChildSpec& spec) {
  SpawnRequest request{spec.argv, merged_environment(spec.env), spec.cwd, spec.log_path, ""};
  request.stdin_fd = spec.stdin_fd;
  request.stdout_fd = spec.stdout_fd;
  std::optional<Cgroup> cgroup;
  if (!spec.cgroup_dir.empty()) {
    auto created = Cgroup::create(spec.cgroup_dir);
    if (!created) return created.error();
    cgroup = std::move(*created);
    request.cgroup_dir = cgroup->dir();
  }
  auto spawned = spawn_process(request);
  if (!spawned) {
    if (cgroup) cgroup->remove();
    return spawned.error();
  }
  return std::shared_ptr<ChildProcess>(new ChildProcess(std::move(executor), spawned->pid,
                                                        std::move(spawned->pidfd),
                                                        std::move(cgroup), /*is_child=*/true));
}

std::shared_ptr<ChildProcess> ChildProcess::adopt(boost::asio::any_io_executor executor, pid_t pid,
                                                  Pidfd pidfd, std::optional<Cgroup> cgroup) {
  auto child = std::shared_ptr<ChildProcess>(new ChildProcess(
      std::move(executor), pid, std::move(pidfd), std::move(cgroup), /*is_child=*/false));
  child->refresh();
  return child;
}

ChildProcess::ChildProcess(boost::asio::any_io_executor executor, pid_t pid, Pidfd pidfd,
                           std::optional<Cgroup> cgroup, bool is_child)
    : executor_(executor),
      pid_(pid),
      pidfd_(executor, pidfd.release()),
      cgroup_(std::move(cgroup)),
      is_child_(is_child),
      kill_timer_(executor),
      poll_timer_(executor) {}

ChildProcess::~ChildProcess() {
  if (cgroup_ && !cgroup_->populated()) cgroup_->remove();
}

void ChildProcess::watch(OnExit on_exit) {
  on_exit_ = std::move(on_exit);
  arm_watch();
}

void ChildProcess::arm_watch() {
  std::weak_ptr<ChildProcess> weak = weak_from_this();
  pidfd_.async_wait(boost::asio::posix::stream_descriptor::wait_read,
                    [weak](const boost::system::error_code& ec) {
                      auto self = weak.lock();
                      if (!self || ec || self->exited_) return;
                      self->on_pidfd_readable();
                    });
}

void ChildProcess::on_pidfd_readable() {
  // Confirm before believing: Asio can hand a wake-up meant for a closed descriptor to a new
  // one that reused its number (seen when one service starts the moment another's stop ends).
  pollfd readable{pidfd_.native_handle(), POLLIN, 0};
  if (poll(&readable, 1, 0) == 0) {
    arm_watch();
    return;
  }
  // Last look at the tree while the exited main process still pins its PID (and session id):
  // after the reap, its orphans could be told apart from a stranger's only by luck.
  refresh();
  const ExitInfo info = reap();
  if (on_exit_) {
    boost::asio::post(executor_, [cb = std::move(on_exit_), info] { cb(info); });
  }
  // The usual end of a stop: the main process is gone, and with it (most often) the whole
  // tree. Look now rather than at the next poll.
  if (stopping_) {
    poll_timer_.cancel();
    poll_interval_ = Millis(1);
    poll_gone();
  }
}

// Called once the main process has exited, or to wait for it (kill_now). By PID, not pidfd:
// Asio made the pidfd non-blocking, and waitid() on it would not wait. The PID is safe to use,
// as an unreaped child's PID cannot be reused.
ExitInfo ChildProcess::reap() {
  ExitInfo info;
  exited_ = true;
  if (!is_child_) return info;
  siginfo_t si{};
  int rc = 0;
  do {
    rc = waitid(P_PID, static_cast<id_t>(pid_), &si, WEXITED);
  } while (rc != 0 && errno == EINTR);
  if (rc == 0) {
    info.known = true;
    if (si.si_code == CLD_EXITED) {
      info.code = si.si_status;
    } else {
      info.signal = si.si_status;
    }
  }
  return info;
}

std::vector<pid_t> ChildProcess::pids() const {
  if (cgroup_) return cgroup_->pids();
  std::vector<pid_t> out;
  if (!exited_) out.push_back(pid_);
  for (const auto& [pid, start] : seen_descendants_) {
    if (same_process_alive(pid, start)) out.push_back(pid);
  }
  return out;
}

void ChildProcess::refresh() {
  if (cgroup_ || exited_) return;
  for (const auto& st : list_service_tree(pid_)) seen_descendants_[st.pid] = st.start_time;
}

void ChildProcess::signal_tree(int sig) {
  if (!exited_) Pidfd::send_signal(pidfd_.native_handle(), sig);
  if (cgroup_) {
    cgroup_->signal_all(sig);
    return;
  }
  for (const auto& [pid, start] : seen_descendants_) {
    // Pin the PID first, then prove it is the process we saw: only then signal it.
    Pidfd fd = Pidfd::open(pid);
    if (fd.valid() && same_process_alive(pid, start)) fd.send_signal(sig);
  }
}

bool ChildProcess::tree_gone() const {
  if (!exited_) return false;
  if (cgroup_) return !cgroup_->populated();
  return std::none_of(seen_descendants_.begin(), seen_descendants_.end(), [](const auto& entry) {
    return same_process_alive(entry.first, entry.second);
  });
}

void ChildProcess::stop(Millis grace, std::function<void(StopOutcome)> done) {
  stop_waiters_.push_back(std::move(done));
  if (!stopping_) {
    stopping_ = true;
    refresh();
    if (grace.count() > 0) signal_tree(SIGTERM);
  }
  arm_kill(std::chrono::steady_clock::now() + grace);
  poll_interval_ = Millis(1);
  poll_gone();
}

void ChildProcess::arm_kill(std::chrono::steady_clock::time_point at) {
  if (kill_at_ && *kill_at_ <= at) return;  // a later deadline never postpones an earlier one
  kill_at_ = at;
  if (at <= std::chrono::steady_clock::now()) {
    if (!tree_gone()) {
      killed_ = true;
      signal_tree(SIGKILL);
    }
    return;
  }
  kill_timer_.expires_at(at);
  // A stop, once begun, runs to its end even if the owner lets go of this object meanwhile:
  // the timers hold it, not the owner.
  kill_timer_.async_wait([self = shared_from_this()](const boost::system::error_code& ec) {
    if (ec || self->tree_gone()) return;
    self->killed_ = true;
    self->refresh();
    self->signal_tree(SIGKILL);
  });
}

// The main process's exit arrives through the pidfd; the rest of the tree has no such signal
// without a cgroup notification fd, so it is polled with a growing interval, bounded by 50 ms.
void ChildProcess::poll_gone() {
  if (tree_gone()) {
    finish_stop();
    return;
  }
  poll_timer_.expires_after(poll_interval_);
  poll_interval_ = std::min(kMaxGonePoll, poll_interval_ * 2);
  poll_timer_.async_wait([self = shared_from_this()](const boost::system::error_code& ec) {
    if (!ec) self->poll_gone();
  });
}

void ChildProcess::finish_stop() {
  kill_timer_.cancel();
  if (cgroup_) cgroup_->remove();
  const StopOutcome outcome{killed_};
  for (auto& waiter : stop_waiters_) {
    boost::asio::post(executor_, [w = std::move(waiter), outcome] { w(outcome); });
  }
  stop_waiters_.clear();
}

void ChildProcess::kill_now() {
  on_exit_ = nullptr;  // its owner is going away and hears nothing more
  refresh();
  signal_tree(SIGKILL);
  if (!exited_) reap();
  kill_timer_.cancel();
  poll_timer_.cancel();
}

}  // namespace gpuvisor
