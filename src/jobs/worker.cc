#include "jobs/worker.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <boost/asio/write.hpp>
#include <csignal>
#include <cstring>

#include "runtime/spawn.h"

namespace gpuvisor {

namespace asio = boost::asio;
using nlohmann::json;

Result<std::shared_ptr<Worker>> Worker::start(asio::any_io_executor executor,
                                              const std::vector<std::string>& argv,
                                              const std::string& log_path, OnMessage on_message,
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
  SpawnRequest request{argv, merged_environment({}), "", log_path, ""};
  request.stdin_fd = to_worker[0];
  request.stdout_fd = from_worker[1];
  auto spawned = spawn_process(request);
  close(to_worker[0]);
  close(from_worker[1]);
  if (!spawned) {
    close(to_worker[1]);
    close(from_worker[0]);
    return spawned.error();
  }
  auto worker = std::shared_ptr<Worker>(
      new Worker(std::move(executor), spawned->pid, spawned->pidfd.release(), to_worker[1],
                 from_worker[0], std::move(on_message), std::move(on_exit)));
  worker->read();
  worker->watch();
  return worker;
}

Worker::Worker(asio::any_io_executor executor, pid_t pid, int pidfd, int in, int out,
               OnMessage on_message, OnExit on_exit)
    : executor_(executor),
      pid_(pid),
      pidfd_(executor, pidfd),
      in_(executor, in),
      out_(executor, out),
      kill_timer_(executor),
      on_message_(std::move(on_message)),
      on_exit_(std::move(on_exit)) {}

Worker::~Worker() {
  // Never left running behind us: a worker outliving its owner holds VRAM nobody accounts for.
  if (!exited_) {
    syscall(SYS_pidfd_send_signal, pidfd_.native_handle(), SIGKILL, nullptr, 0);
    waitpid(pid_, nullptr, 0);
  }
}

void Worker::send(const json& message) {
  if (exited_) return;
  queue_.push_back(message.dump() + "\n");
  if (!writing_) flush();
}

void Worker::flush() {
  if (queue_.empty() || exited_) {
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
  pidfd_.async_wait(asio::posix::stream_descriptor::wait_read,
                    [self = shared_from_this()](boost::system::error_code ec) {
                      if (ec || self->exited_) return;
                      // Confirm before believing: a wake-up may be meant for a reused number.
                      pollfd p{self->pidfd_.native_handle(), POLLIN, 0};
                      if (poll(&p, 1, 0) == 0) {
                        self->watch();
                        return;
                      }
                      int status = 0;
                      waitpid(self->pid_, &status, 0);
                      self->exited_ = true;
                      self->kill_timer_.cancel();
                      std::string how =
                          WIFSIGNALED(status)
                              ? "killed by signal " + std::to_string(WTERMSIG(status))
                              : "exited with status " + std::to_string(WEXITSTATUS(status));
                      self->in_.close();
                      self->out_.close();
                      if (self->on_exit_) self->on_exit_(how);
                    });
}

void Worker::stop(Millis grace, Millis ask) {
  if (exited_) return;
  if (ask.count() > 0) {
    kill_timer_.expires_after(ask);
    kill_timer_.async_wait([self = shared_from_this(), grace](boost::system::error_code ec) {
      if (!ec && !self->exited_) self->stop(grace);
    });
    return;
  }
  syscall(SYS_pidfd_send_signal, pidfd_.native_handle(), grace.count() > 0 ? SIGTERM : SIGKILL,
          nullptr, 0);
  if (grace.count() <= 0) return;
  kill_timer_.expires_after(grace);
  kill_timer_.async_wait([self = shared_from_this()](boost::system::error_code ec) {
    if (ec || self->exited_) return;
    syscall(SYS_pidfd_send_signal, self->pidfd_.native_handle(), SIGKILL, nullptr, 0);
  });
}

}  // namespace gpuvisor
