#include "runtime/process_instance.h"

#include <poll.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <boost/asio/post.hpp>
#include <csignal>

#include "runtime/proc.h"

#ifndef P_PIDFD
#define P_PIDFD 3
#endif

namespace gpuvisor {

namespace {
constexpr Millis kMaxGonePoll{50};
}

ProcessInstance::ProcessInstance(boost::asio::any_io_executor executor, InstanceRecord record,
                                 Pidfd pidfd, std::optional<Cgroup> cgroup, bool is_child)
    : executor_(executor),
      record_(std::move(record)),
      pidfd_(executor, pidfd.release()),
      cgroup_(std::move(cgroup)),
      is_child_(is_child),
      kill_timer_(executor),
      poll_timer_(executor) {}

ProcessInstance::~ProcessInstance() {
  if (cgroup_ && !cgroup_->populated()) cgroup_->remove();
}

void ProcessInstance::watch(ExitCallback on_exit) {
  on_exit_ = std::move(on_exit);
  arm_watch();
}

void ProcessInstance::arm_watch() {
  std::weak_ptr<ProcessInstance> weak = weak_from_this();
  pidfd_.async_wait(boost::asio::posix::stream_descriptor::wait_read,
                    [weak](const boost::system::error_code& ec) {
                      auto self = weak.lock();
                      if (!self || ec) return;
                      self->on_pidfd_readable();
                    });
}

void ProcessInstance::on_pidfd_readable() {
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
  ExitInfo info;
  if (is_child_) {
    siginfo_t si{};
    if (waitid(static_cast<idtype_t>(P_PIDFD), static_cast<id_t>(pidfd_.native_handle()), &si,
               WEXITED) == 0) {
      info.known = true;
      if (si.si_code == CLD_EXITED) {
        info.code = si.si_status;
      } else {
        info.signal = si.si_status;
      }
    }
  }
  exited_ = true;
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

std::vector<pid_t> ProcessInstance::pids() const {
  if (cgroup_) return cgroup_->pids();
  std::vector<pid_t> out;
  if (!exited_) out.push_back(record_.pid);
  for (const auto& [pid, start] : seen_descendants_) {
    if (same_process_alive(pid, start)) out.push_back(pid);
  }
  return out;
}

void ProcessInstance::refresh() {
  if (cgroup_ || exited_) return;
  for (const auto& st : list_service_tree(record_.pid)) seen_descendants_[st.pid] = st.start_time;
}

void ProcessInstance::signal_tree(int sig) {
  if (!exited_) {
    syscall(SYS_pidfd_send_signal, pidfd_.native_handle(), sig, nullptr, 0);
  }
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

bool ProcessInstance::tree_gone() const {
  if (!exited_) return false;
  if (cgroup_) return !cgroup_->populated();
  for (const auto& [pid, start] : seen_descendants_) {
    if (same_process_alive(pid, start)) return false;
  }
  return true;
}

void ProcessInstance::stop(Millis grace, std::function<void(StopOutcome)> done) {
  stop_waiters_.push_back(std::move(done));
  const auto now = std::chrono::steady_clock::now();
  if (!stopping_) {
    stopping_ = true;
    refresh();
    if (grace.count() > 0) signal_tree(SIGTERM);
  }
  const auto kill_at = now + grace;
  if (!kill_at_ || kill_at < *kill_at_) {  // a later deadline never postpones an earlier one
    kill_at_ = kill_at;
    if (grace.count() == 0) {
      if (!tree_gone()) {
        killed_ = true;
        signal_tree(SIGKILL);
      }
    } else {
      kill_timer_.expires_at(kill_at);
      std::weak_ptr<ProcessInstance> weak = weak_from_this();
      kill_timer_.async_wait([weak](const boost::system::error_code& ec) {
        auto self = weak.lock();
        if (!self || ec || self->tree_gone()) return;
        self->killed_ = true;
        self->refresh();
        self->signal_tree(SIGKILL);
      });
    }
  }
  poll_interval_ = Millis(1);
  poll_gone();
}

// The main process's exit arrives through the pidfd; the rest of the tree has no such signal
// without a cgroup notification fd, so it is polled with a growing interval, bounded by 50 ms.
void ProcessInstance::poll_gone() {
  if (tree_gone()) {
    finish_stop();
    return;
  }
  poll_timer_.expires_after(poll_interval_);
  poll_interval_ = std::min(kMaxGonePoll, poll_interval_ * 2);
  std::weak_ptr<ProcessInstance> weak = weak_from_this();
  poll_timer_.async_wait([weak](const boost::system::error_code& ec) {
    auto self = weak.lock();
    if (!self || ec) return;
    self->poll_gone();
  });
}

void ProcessInstance::finish_stop() {
  kill_timer_.cancel();
  if (cgroup_) cgroup_->remove();
  const StopOutcome outcome{killed_};
  for (auto& waiter : stop_waiters_) {
    boost::asio::post(executor_, [w = std::move(waiter), outcome] { w(outcome); });
  }
  stop_waiters_.clear();
}

}  // namespace gpuvisor
