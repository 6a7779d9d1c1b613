#include "jobs/worker.h"

#include <fcntl.h>
#include <unistd.h>

#include <boost/asio/write.hpp>
#include <cstring>

namespace gpuvisor {

namespace asio = boost::asio;
using nlohmann::json;

Result<std::shared_ptr<Worker>> Worker::start(asio::any_io_executor executor,
                                              const std::vector<std::string>& argv,
                                              const std::string& log_path,
                                              const std::string& cgroup_dir, OnMessage on_message,
                                              OnExit on_exit) {
  int to_worker[2], from_worker[2];
  if (pipe2(to_worker, O_CLOEXEC) != 0) {
    return make_error(ErrorCode::kFailed, std::string("pipe: ") + std::strerror(errno));
  }
  if (pipe2(from_worker, O_CLOEXEC) != 0) {
    close(to_worker[0]);
    close(to_worker[1]);
    return make_error(ErrorCode::kFailed, std::string("pipe: ") + std::strerror(errno));
  }
  ChildSpec spec{argv, {}, "", log_path, cgroup_dir};
  spec.stdin_fd = to_worker[0];
  spec.stdout_fd = from_worker[1];
  auto child = ChildProcess::spawn(executor, spec);
  close(to_worker[0]);
  close(from_worker[1]);
  if (!child) {
    close(to_worker[1]);
    close(from_worker[0]);
    return child.error();
  }
  auto worker = std::shared_ptr<Worker>(new Worker(std::move(executor), std::move(*child),
                                                   to_worker[1], from_worker[0],
                                                   std::move(on_message), std::move(on_exit)));
  worker->read();
  worker->watch();
  return worker;
}

Worker::Worker(asio::any_io_executor executor, std::shared_ptr<ChildProcess> child, int in, int out,
               OnMessage on_message, OnExit on_exit)
    : child_(std::move(child)),
      in_(executor, in),
      out_(executor, out),
      kill_timer_(executor),
      on_message_(std::move(on_message)),
      on_exit_(std::move(on_exit)) {}

Worker::~Worker() {
  // Never left running behind us: a worker outliving its owner holds VRAM nobody accounts for.
  if (!child_->exited()) child_->kill_now();
}

void Worker::send(const json& message) {
  if (child_->exited()) return;
  queue_.push_back(message.dump() + "\n");
  if (!writing_) flush();
}

void Worker::flush() {
  if (queue_.empty() || child_->exited()) {
    writing_ = false;
    return;
  }
  writing_ = true;
  auto line = std::make_shared<std::string>(std::move(queue_.front()));
  queue_.erase(queue_.begin());
  asio::async_write(in_, asio::buffer(*line),
                    [self = shared_from_this(), line](boost::system::error_code ec, size_t) {
                      if (ec) {
                        self->writing_ = false;
                        return;  // it is going away; the exit says how
                      }
                      self->flush();
                    });
}

void Worker::read() {
  out_.async_read_some(
      asio::buffer(chunk_), [self = shared_from_this()](boost::system::error_code ec, size_t n) {
        if (ec) return;  // EOF: the exit follows through the pidfd
        self->read_buf_.append(self->chunk_, n);
        for (size_t nl; (nl = self->read_buf_.find('\n')) != std::string::npos;) {
          const std::string line = self->read_buf_.substr(0, nl);
          self->read_buf_.erase(0, nl + 1);
          if (line.empty()) continue;
          auto message = json::parse(line, nullptr, false);
          if (!message.is_object() || !message.contains("type") || !message["type"].is_string()) {
            message = {{"type", "error"},
                       {"message", "worker sent something that is not a JSON message: " +
                                       line.substr(0, 200)}};
          }
          self->on_message_(message);
        }
        self->read();
      });
}

void Worker::watch() {
  // Weak: the child keeps this callback, and this worker keeps the child.
  child_->watch([weak = weak_from_this()](const ExitInfo& exit) {
    const auto self = weak.lock();
    if (!self) return;
    self->kill_timer_.cancel();
    self->in_.close();
    self->out_.close();
    // A worker's job is over with it: what it started and left behind (a setsid() helper, a
    // server it forked) would hold memory for nobody.
    self->child_->stop(Millis(0), [](StopOutcome) {});
    if (self->on_exit_) self->on_exit_(exit.describe());
  });
}

void Worker::stop(Millis grace, Millis ask) {
  if (child_->exited()) return;
  if (ask.count() > 0) {
    kill_timer_.expires_after(ask);
    kill_timer_.async_wait([self = shared_from_this(), grace](boost::system::error_code ec) {
      if (!ec && !self->child_->exited()) self->stop(grace);
    });
    return;
  }
  child_->stop(grace, [](StopOutcome) {});  // the exit, not the stop's end, is what on_exit says
}

}  // namespace gpuvisor
