#include "runtime/external_runtime.h"

#include <poll.h>
#include <spdlog/spdlog.h>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/post.hpp>
#include <chrono>
#include <fstream>

#include "core/duration.h"
#include "runtime/oneshot.h"
#include "runtime/pidfd.h"
#include "runtime/proc.h"

namespace gpuvisor {

namespace asio = boost::asio;

namespace {

class ExternalInstance : public Instance, public std::enable_shared_from_this<ExternalInstance> {
 public:
  ExternalInstance(asio::any_io_executor executor, const ServiceSpec& spec, InstanceRecord record,
                   ExitCallback on_exit)
      : executor_(std::move(executor)),
        spec_(spec),
        record_(std::move(record)),
        on_exit_(std::move(on_exit)),
        watch_(executor_) {}

  const InstanceRecord& record() const override { return record_; }
  bool exited() const override { return exited_; }
  bool launched() const override { return launched_; }
  std::vector<pid_t> pids() const override {
    if (exited_ || record_.pid <= 0 || !same_process_alive(record_.pid, record_.start_time))
      return {};
    std::vector<pid_t> out{record_.pid};
    for (const auto& p : list_service_tree(record_.pid)) out.push_back(p.pid);
    return out;
  }
  void refresh() override {
    if (!exited_ && record_.pid <= 0) find_server();
  }

  static asio::awaitable<void> wake(std::shared_ptr<ExternalInstance> self) {
    if (!self->spec_.wake.empty()) {
      const std::string failed = co_await run_hook(self->spec_.wake);
      if (!failed.empty()) {
        self->exit_with("wake hook failed: " + failed);
        co_return;
      }
    }
    self->find_server();
    const bool declared = self->spec_.external.port != 0 || !self->spec_.external.pid_file.empty();
    if (declared && self->record_.pid <= 0) {
      // Not gpuvisor's to start: say what is missing rather than wait for a timeout.
      self->exit_with(self->spec_.name + " is not running (" + self->where() +
                      "); gpuvisor does not start external services");
      co_return;
    }
    self->launched_ = true;
  }

  void stop(Millis, std::function<void(StopOutcome)> done) override {
    waiters_.push_back(std::move(done));
    if (stopping_) return;
    stopping_ = true;
    asio::co_spawn(executor_, put_to_sleep(shared_from_this()), asio::detached);
  }

  void attach() {
    find_server();
    launched_ = true;
  }

 private:
  static asio::awaitable<void> put_to_sleep(std::shared_ptr<ExternalInstance> self) {
    StopOutcome outcome;
    if (self->exited_) {
      outcome.how = "stopped";
    } else if (self->spec_.sleep.empty()) {
      outcome.how =
          "left running: it has no sleep hook, and gpuvisor does not stop external services";
    } else {
      const std::string failed = co_await run_hook(self->spec_.sleep);
      outcome.how = failed.empty() ? "put to sleep (its VRAM released by the sleep hook)"
                                   : "sleep hook failed: " + failed + "; it may still hold VRAM";
      if (!failed.empty()) spdlog::warn("{}: {}", self->spec_.name, outcome.how);
    }
    // No exit to report: the server runs on. The watch ends with this instance.
    self->exited_ = true;
    self->watch_.close();
    auto waiters = std::move(self->waiters_);
    self->stopping_ = false;
    for (auto& w : waiters) w(outcome);
  }

  std::string where() const {
    if (spec_.external.port != 0) {
      return "nothing listens on port " + std::to_string(spec_.external.port);
    }
    return "no live process in " + spec_.external.pid_file;
  }

  void find_server() {
    std::optional<pid_t> pid;
    if (spec_.external.port != 0) pid = find_tcp_listener(spec_.external.port);
    if (!pid && !spec_.external.pid_file.empty()) {
      std::ifstream in(spec_.external.pid_file);
      pid_t read = 0;
      if (in >> read && read > 0) pid = read;
    }
    if (!pid) return;
    const auto st = read_proc_stat(*pid);
    if (!st || st->state == 'Z') return;
    if (record_.pid != *pid) {
      spdlog::info("{}: its server is pid {} ({})", spec_.name, *pid,
                   spec_.external.port != 0
                       ? "listening on port " + std::to_string(spec_.external.port)
                       : "from " + spec_.external.pid_file);
    }
    record_.pid = *pid;
    record_.start_time = st->start_time;
    watch_exit();
  }

  // The server going away is noticed at once, through a pidfd (never used to signal it).
  void watch_exit() {
    Pidfd fd = Pidfd::open(record_.pid);
    if (!fd.valid()) return;
    watch_.close();
    watch_.assign(fd.release());
    arm_watch();
  }

  void arm_watch() {
    watch_.async_wait(asio::posix::stream_descriptor::wait_read,
                      [weak = weak_from_this(), pid = record_.pid](boost::system::error_code ec) {
                        auto self = weak.lock();
                        if (ec || !self || self->exited_ || self->stopping_) return;
                        // Confirm before believing: Asio can hand a wake-up meant for a closed
                        // descriptor to a new one that reused its number.
                        pollfd readable{self->watch_.native_handle(), POLLIN, 0};
                        if (poll(&readable, 1, 0) == 0) {
                          self->arm_watch();
                          return;
                        }
                        self->exit_with("external server pid " + std::to_string(pid) + " exited");
                      });
  }

  void exit_with(std::string why) {
    if (exited_) return;
    exited_ = true;
    watch_.close();
    asio::post(executor_, [self = shared_from_this(), why = std::move(why)] {
      if (self->on_exit_) self->on_exit_(ExitInfo{false, 0, 0, why});
    });
  }

  asio::any_io_executor executor_;
  const ServiceSpec& spec_;
  InstanceRecord record_;
  ExitCallback on_exit_;
  asio::posix::stream_descriptor watch_;
  bool launched_ = false;
  bool exited_ = false;
  bool stopping_ = false;
  std::vector<std::function<void(StopOutcome)>> waiters_;
};

InstanceRecord record_for(const ServiceSpec& spec) {
  InstanceRecord record;
  record.service = spec.name;
  record.runtime = RuntimeKind::kExternal;
  record.from_pid_file = true;  // someone else's: a daemon shutdown leaves it alone
  record.started_unix_ms = unix_ms_now();
  return record;
}

}  // namespace

Result<std::shared_ptr<Instance>> ExternalRuntime::start(const ServiceSpec& spec,
                                                         const LaunchOptions&,
                                                         ExitCallback on_exit) {
  auto instance =
      std::make_shared<ExternalInstance>(executor_, spec, record_for(spec), std::move(on_exit));
  asio::co_spawn(executor_, ExternalInstance::wake(instance), asio::detached);
  return std::shared_ptr<Instance>(instance);
}

Result<std::shared_ptr<Instance>> ExternalRuntime::adopt(const InstanceRecord& record,
                                                         const ServiceSpec* spec,
                                                         ExitCallback on_exit) {
  if (spec == nullptr || spec->runtime != RuntimeKind::kExternal) {
    return make_error(ErrorCode::kNotFound, record.service + " is no longer an external service");
  }
  auto instance =
      std::make_shared<ExternalInstance>(executor_, *spec, record_for(*spec), std::move(on_exit));
  instance->attach();
  return std::shared_ptr<Instance>(instance);
}

// Its server, when one runs where the spec says to look: claimed before any plan is made.
Result<std::shared_ptr<Instance>> ExternalRuntime::adopt_existing(const ServiceSpec& spec,
                                                                  ExitCallback on_exit) {
  if (spec.external.port == 0 && spec.external.pid_file.empty()) {
    return make_error(ErrorCode::kNotFound, spec.name + ": no port or pid_file to find it by");
  }
  auto instance =
      std::make_shared<ExternalInstance>(executor_, spec, record_for(spec), std::move(on_exit));
  instance->attach();
  if (instance->record().pid <= 0) {
    return make_error(ErrorCode::kNotFound, spec.name + ": its server is not running");
  }
  return std::shared_ptr<Instance>(instance);
}

}  // namespace gpuvisor
