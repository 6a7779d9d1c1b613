// One running native process tree, watched through its pidfd.
#pragma once

#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/steady_timer.hpp>
#include <map>
#include <memory>
#include <optional>
#include <vector>

#include "runtime/cgroup.h"
#include "runtime/pidfd.h"
#include "runtime/runtime.h"

namespace gpuvisor {

class ProcessInstance : public Instance, public std::enable_shared_from_this<ProcessInstance> {
 public:
  // is_child: spawned by this daemon, so waitid() can read the exit status.
  ProcessInstance(boost::asio::any_io_executor executor, InstanceRecord record, Pidfd pidfd,
                  std::optional<Cgroup> cgroup, bool is_child);
  ~ProcessInstance() override;

  // Begins watching the pidfd; on_exit runs once, posted to the executor.
  void watch(ExitCallback on_exit);

  const InstanceRecord& record() const override { return record_; }
  bool exited() const override { return exited_; }
  std::vector<pid_t> pids() const override;
  void refresh() override;
  void stop(Millis grace, std::function<void(StopOutcome)> done) override;

 private:
  void arm_watch();
  void on_pidfd_readable();
  void signal_tree(int sig);
  bool tree_gone() const;
  void poll_gone();
  void finish_stop();

  boost::asio::any_io_executor executor_;
  InstanceRecord record_;
  boost::asio::posix::stream_descriptor pidfd_;  // owns the pidfd
  std::optional<Cgroup> cgroup_;
  bool is_child_;
  bool exited_ = false;
  ExitCallback on_exit_;

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

}  // namespace gpuvisor
