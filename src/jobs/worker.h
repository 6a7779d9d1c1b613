// A plugin's worker: a long-lived process that speaks JSON lines on stdin/stdout. gpuvisor
// sends {"type": "init", "config"}, {"type": "execute", "job_id", "input"} and {"type": "stop"};
// the worker answers {"type": "ready"}, {"type": "stream_chunk", "job_id", "data"},
// {"type": "progress", "job_id", "progress"}, {"type": "result", "job_id", "result"} or
// {"type": "error", "job_id", "message"}. Its stderr goes to a log file. It is a ChildProcess:
// in a cgroup of its own where the machine allows one, so stopping it (SIGTERM, then SIGKILL)
// stops whatever it started too, even a descendant that called setsid(); never by name.
#pragma once

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/steady_timer.hpp>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "core/duration.h"
#include "core/result.h"
#include "runtime/child_process.h"

namespace gpuvisor {

class Worker : public std::enable_shared_from_this<Worker> {
 public:
  using OnMessage = std::function<void(const nlohmann::json&)>;
  using OnExit = std::function<void(const std::string& how)>;

  // Starts argv (in cgroup_dir, unless empty); messages and the exit arrive on executor. A line
  // that is not a JSON object is reported as {"type": "error", "message": "worker sent ..."}.
  // on_exit hears how it ended (ExitInfo::describe()); whatever it left running is then ended.
  static Result<std::shared_ptr<Worker>> start(boost::asio::any_io_executor executor,
                                               const std::vector<std::string>& argv,
                                               const std::string& log_path,
                                               const std::string& cgroup_dir, OnMessage on_message,
                                               OnExit on_exit);
  ~Worker();

  pid_t pid() const { return child_->pid(); }
  bool exited() const { return child_->exited(); }
  void send(const nlohmann::json& message);
  // SIGTERM to its whole tree, SIGKILL after grace; on_exit reports it. With ask > 0 the worker
  // is first given that long to leave on its own (after a "stop" message), and only then
  // signalled.
  void stop(Millis grace, Millis ask = Millis(0));

 private:
  Worker(boost::asio::any_io_executor executor, std::shared_ptr<ChildProcess> child, int in,
         int out, OnMessage on_message, OnExit on_exit);
  void read();
  void watch();
  void flush();

  std::shared_ptr<ChildProcess> child_;
  boost::asio::posix::stream_descriptor in_;   // its stdin
  boost::asio::posix::stream_descriptor out_;  // its stdout
  boost::asio::steady_timer kill_timer_;
  OnMessage on_message_;
  OnExit on_exit_;
  std::string read_buf_;
  char chunk_[8192] = {};
  std::vector<std::string> queue_;
  bool writing_ = false;
};

}  // namespace gpuvisor
