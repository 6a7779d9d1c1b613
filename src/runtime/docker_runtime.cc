#include "runtime/docker_runtime.h"

#include <fcntl.h>
#include <signal.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <chrono>
#include <cmath>
#include <map>

#include "runtime/docker_body.h"
#include "runtime/docker_client.h"
#include "runtime/docker_log_lines.h"
#include "runtime/proc.h"

namespace gpuvisor {

namespace asio = boost::asio;

namespace {

constexpr Millis kCallTimeout{30'000};
constexpr Millis kStartTimeout{120'000};  // the engine may have to set up mounts and devices
constexpr Millis kStopSlack{30'000};      // beyond the grace period, for the engine itself

int64_t unix_ns_now() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

// Query strings carry JSON filters; only a few characters need escaping.
std::string url_encode(const std::string& text) {
  static const char* hex = "0123456789ABCDEF";
  std::string out;
  for (const unsigned char c : text) {
    if (std::isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~') {
      out += static_cast<char>(c);
    } else {
      out += '%';
      out += hex[c >> 4];
      out += hex[c & 15];
    }
  }
  return out;
}

std::string since_param(int64_t ns) {
  const int64_t s = ns / 1'000'000'000;
  const int64_t frac = ns % 1'000'000'000;
  char buf[40];
  std::snprintf(buf, sizeof buf, "%lld.%09lld", static_cast<long long>(s),
                static_cast<long long>(frac));
  return buf;
}

// DockerClient's contract: kUnavailable means the engine did not answer at all (no socket,
// refused, timed out, dropped), so a failure with it is the engine's, not the service's.
ExitInfo engine_failure(const Error& error) {
  ExitInfo info{false, 0, 0, error.message};
  info.engine_unreachable = error.code == ErrorCode::kUnavailable;
  return info;
}

std::string what_failed(const std::string& doing, const DockerReply& reply) {
  return doing + ": HTTP " + std::to_string(reply.status) + ": " + docker_message(reply);
}

}  // namespace

class DockerInstance;

// What every container of one engine shares: the client, and the one events stream that
// reports their exits.
class DockerEngine : public std::enable_shared_from_this<DockerEngine> {
 public:
  DockerEngine(asio::any_io_executor executor, std::string socket)
      : executor_(executor), client_(executor, std::move(socket)), retry_(executor) {}

  asio::any_io_executor executor() const { return executor_; }
  DockerClient& client() { return client_; }

  void watch(const std::string& id, const std::shared_ptr<DockerInstance>& instance);
  void unwatch(const std::string& id) { watched_.erase(id); }
  void shutdown() {
    shut_ = true;
    retry_.cancel();
    if (control_) control_->cancel();
  }
  bool shut() const { return shut_; }

 private:
  static asio::awaitable<void> follow(std::shared_ptr<DockerEngine> self);
  void on_line(const std::string& line);

  asio::any_io_executor executor_;
  DockerClient client_;
  asio::steady_timer retry_;
  std::map<std::string, std::weak_ptr<DockerInstance>> watched_;  // by full container id
  bool following_ = false;
  bool shut_ = false;
  int64_t since_ns_ = 0;
  std::shared_ptr<StreamControl> control_;
};

class DockerInstance : public Instance, public std::enable_shared_from_this<DockerInstance> {
 public:
  DockerInstance(std::shared_ptr<DockerEngine> engine, ServiceSpec spec, InstanceRecord record,
                 ExitCallback on_exit)
      : engine_(std::move(engine)),
        spec_(std::move(spec)),
        record_(std::move(record)),
        on_exit_(std::move(on_exit)) {}
  ~DockerInstance() override {
    if (log_control_) log_control_->cancel();
  }

  const InstanceRecord& record() const override { return record_; }
  bool exited() const override { return exited_; }
  bool launched() const override { return !launching_ && record_.pid > 0; }
  std::vector<pid_t> pids() const override {
    if (exited_ || record_.pid <= 0 || !same_process_alive(record_.pid, record_.start_time))
      return {};
    return list_namespace_members(record_.pid);
  }
  void refresh() override {}
  void stop(Millis grace, std::function<void(StopOutcome)> done) override;

  static asio::awaitable<void> launch(std::shared_ptr<DockerInstance> self, LaunchOptions options);
  static asio::awaitable<void> attach(std::shared_ptr<DockerInstance> self);
  // Adopted: its log goes on after since_ns (the last line the previous daemon wrote).
  void set_log(std::string path, int64_t since_ns) {
    log_path_ = std::move(path);
    log_since_ns_ = since_ns;
  }
  // After the events stream was down: an exit it missed is found by asking.
  static asio::awaitable<void> resync(std::shared_ptr<DockerInstance> self);
  void on_event(const ContainerEvent& event);

 private:
  static asio::awaitable<void> run_stop(std::shared_ptr<DockerInstance> self, Millis grace);
  static asio::awaitable<void> kill(std::shared_ptr<DockerInstance> self);
  static asio::awaitable<void> follow_logs(std::shared_ptr<DockerInstance> self, bool tty);
  asio::awaitable<Result<ContainerState>> inspect(const std::string& name);
  // Runs the container as found: watches it, or reports how it ended.
  void take(const ContainerState& state);
  void finish_exit(ExitInfo info);
  void finish_stop(bool killed);
  std::string missing(const std::string& name) const;

  std::shared_ptr<DockerEngine> engine_;
  ServiceSpec spec_;
  InstanceRecord record_;
  ExitCallback on_exit_;
  std::string id_;  // full container id, once known
  std::string log_path_;
  int64_t launched_ns_ = unix_ns_now();
  int64_t log_since_ns_ = 0;  // 0: from the second it was launched
  bool launching_ = false;
  bool exited_ = false;
  bool oom_ = false;
  bool stopping_ = false;
  bool stopped_ = false;
  std::optional<Millis> pending_grace_;  // a stop asked for while launching
  std::vector<std::function<void(StopOutcome)>> stop_waiters_;
  std::shared_ptr<StreamControl> log_control_;
};

void DockerEngine::watch(const std::string& id, const std::shared_ptr<DockerInstance>& instance) {
  watched_[id] = instance;
  if (following_ || shut_) return;
  following_ = true;
  // A moment back, so that the exit of a container that dies before the stream is up is
  // still replayed to it.
  if (since_ns_ == 0) since_ns_ = unix_ns_now() - 1'000'000'000;
  asio::co_spawn(executor_, follow(shared_from_this()), asio::detached);
}

asio::awaitable<void> DockerEngine::follow(std::shared_ptr<DockerEngine> self) {
  const std::string filters =
      url_encode(R"({"type":["container"],"event":["die","oom","health_status"]})");
  Millis backoff(50);
  bool first = true;
  while (!self->shut_ && !self->watched_.empty()) {
    if (!first) {
      // Whatever died while the stream was down (an engine restart forgets its events).
      std::vector<std::shared_ptr<DockerInstance>> live;
      for (const auto& [id, weak] : self->watched_) {
        if (auto i = weak.lock()) live.push_back(i);
      }
      for (const auto& i : live) co_await DockerInstance::resync(i);
      if (self->shut_ || self->watched_.empty()) break;
    }
    first = false;
    std::string partial;
    bool got_data = false;
    const std::function<void(std::string_view)> on_data = [&](std::string_view data) {
      got_data = true;
      partial.append(data);
      for (size_t nl; (nl = partial.find('\n')) != std::string::npos;) {
        const std::string line = partial.substr(0, nl);
        partial.erase(0, nl + 1);
        self->on_line(line);
      }
    };
    self->control_ = std::make_shared<StreamControl>();
    const auto started = std::chrono::steady_clock::now();
    const Status ended = co_await self->client_.stream(
        "/events?since=" + since_param(self->since_ns_) + "&filters=" + filters, on_data,
        self->control_);
    if (self->shut_) break;
    if (!ended) spdlog::warn("docker events: {}; reconnecting", ended.error().message);
    if (got_data || std::chrono::steady_clock::now() - started > std::chrono::seconds(10)) {
      backoff = Millis(50);
    }
    self->retry_.expires_after(backoff);
    boost::system::error_code ec;
    co_await self->retry_.async_wait(asio::redirect_error(asio::use_awaitable, ec));
    backoff = std::min(backoff * 2, Millis(5000));
  }
  self->following_ = false;
}

void DockerEngine::on_line(const std::string& line) {
  const auto event = parse_container_event(line);
  if (!event) {
    if (!line.empty()) spdlog::debug("docker events: ignoring {}", line.substr(0, 200));
    return;
  }
  since_ns_ = std::max(since_ns_, event->time_ns);
  const auto it = watched_.find(event->id);
  if (it == watched_.end()) return;
  if (auto instance = it->second.lock()) instance->on_event(*event);
}

std::string DockerInstance::missing(const std::string& name) const {
  return "container '" + name + "' does not exist (service " + spec_.name +
         "): create it first (docker create --name " + name +
         " ...), or set docker.image so that gpuvisor creates it";
}

asio::awaitable<Result<ContainerState>> DockerInstance::inspect(const std::string& name) {
  auto reply = co_await engine_->client().call("GET", "/containers/" + url_encode(name) + "/json",
                                               "", kCallTimeout);
  if (!reply) co_return reply.error();
  if (reply->status == 404) co_return make_error(ErrorCode::kNotFound, missing(name));
  if (reply->status != 200) {
    co_return make_error(ErrorCode::kFailed, what_failed("inspecting container " + name, *reply));
  }
  co_return parse_container_inspect(reply->body);
}

asio::awaitable<void> DockerInstance::launch(std::shared_ptr<DockerInstance> self,
                                             LaunchOptions options) {
  self->launching_ = true;
  self->log_path_ = options.log_path;
  auto& client = self->engine_->client();
  const auto& spec = self->spec_;
  const std::string name = self->record_.container;
  const auto fail_with = [&](ExitInfo info) {
    self->launching_ = false;
    self->finish_exit(std::move(info));
    self->finish_stop(false);
  };
  const auto fail = [&](const std::string& why) { fail_with(ExitInfo{false, 0, 0, why}); };

  if (!spec.docker.image.empty()) {
    std::vector<std::pair<std::string, std::string>> env(spec.env.begin(), spec.env.end());
    for (const auto& kv : options.extra_env) {
      // Inside the container the NVIDIA runtime renumbers its GPUs from 0.
      if (kv.first.rfind("CUDA_", 0) != 0) env.push_back(kv);
    }
    const std::string body = container_create_body(spec, options.gpus, env).dump();
    const std::string create = "/containers/create?name=" + url_encode(name);
    auto reply = co_await client.call("POST", create, body, kCallTimeout);
    if (reply && reply->status == 409) {
      // Left by an earlier run; replaced only when it is ours, so the current config applies.
      auto old = co_await self->inspect(name);
      if (!old) co_return fail_with(engine_failure(old.error()));
      if (old->service_label != spec.name) {
        co_return fail("a container named '" + name +
                       "' already exists and was not created by gpuvisor for " + spec.name +
                       ": remove it, or set docker.container to another name");
      }
      auto removed =
          co_await client.call("DELETE", "/containers/" + old->id + "?force=1", "", kCallTimeout);
      if (removed && removed->status != 204 && removed->status != 404) {
        co_return fail(what_failed("removing the old container " + name, *removed));
      }
      reply = co_await client.call("POST", create, body, kCallTimeout);
    }
    if (!reply) co_return fail_with(engine_failure(reply.error()));
    if (reply->status == 404) {
      co_return fail("image '" + spec.docker.image + "' is not in the Docker engine (service " +
                     spec.name + "): docker pull " + spec.docker.image + ", or docker load it");
    }
    if (reply->status != 201) co_return fail(what_failed("creating container " + name, *reply));
  }
  auto found = co_await self->inspect(name);
  if (!found) co_return fail_with(engine_failure(found.error()));
  self->id_ = found->id;
  self->engine_->watch(self->id_, self);
  if (!found->running) {
    auto started =
        co_await client.call("POST", "/containers/" + self->id_ + "/start", "", kStartTimeout);
    if (!started) co_return fail_with(engine_failure(started.error()));
    if (started->status == 404) co_return fail(self->missing(name));
    // 304: someone started it in between, which is what was wanted.
    if (started->status != 204 && started->status != 304) {
      co_return fail(what_failed("starting container " + name, *started));
    }
    found = co_await self->inspect(self->id_);
    if (!found) co_return fail_with(engine_failure(found.error()));
  }
  self->launching_ = false;
  self->take(*found);
  if (self->pending_grace_ && !self->stopping_) {
    self->stopping_ = true;
    asio::co_spawn(self->engine_->executor(), run_stop(self, *self->pending_grace_),
                   asio::detached);
  }
}

asio::awaitable<void> DockerInstance::attach(std::shared_ptr<DockerInstance> self) {
  self->launching_ = true;
  auto found = co_await self->inspect(self->record_.container);
  self->launching_ = false;
  if (!found) {
    self->finish_exit(engine_failure(found.error()));
    self->finish_stop(false);
    co_return;
  }
  self->id_ = found->id;
  self->engine_->watch(self->id_, self);
  self->take(*found);
  if (self->pending_grace_ && !self->stopping_) {
    self->stopping_ = true;
    asio::co_spawn(self->engine_->executor(), run_stop(self, *self->pending_grace_),
                   asio::detached);
  }
}

void DockerInstance::take(const ContainerState& state) {
  if (!state.running) {
    finish_exit(ExitInfo{true, state.exit_code, 0,
                         state.oom_killed ? "killed for lack of memory (OOM)" : ""});
    return;
  }
  record_.pid = state.pid;
  if (const auto st = read_proc_stat(state.pid)) record_.start_time = st->start_time;
  if (!log_path_.empty() && !log_control_) {
    log_control_ = std::make_shared<StreamControl>();
    asio::co_spawn(engine_->executor(), follow_logs(shared_from_this(), state.tty), asio::detached);
  }
}

asio::awaitable<void> DockerInstance::resync(std::shared_ptr<DockerInstance> self) {
  if (self->exited_ || self->launching_ || self->id_.empty()) co_return;
  auto found = co_await self->inspect(self->id_);
  if (self->exited_) co_return;
  if (!found && found.error().code == ErrorCode::kNotFound) {
    self->finish_exit(
        ExitInfo{false, 0, 0, "container " + self->record_.container + " was removed"});
  } else if (!found && found.error().code == ErrorCode::kUnavailable &&
             !same_process_alive(self->record_.pid, self->record_.start_time)) {
    // The engine cannot say, but its first process is gone, so the container is too: most
    // likely stopped by the engine going down, which is no failure of the service's.
    ExitInfo gone = engine_failure(found.error());
    gone.detail = "container " + self->record_.container +
                  " ended while the Docker engine was unreachable (" + found.error().message + ")";
    self->finish_exit(std::move(gone));
  } else if (found && !found->running) {
    self->take(*found);
  }
}

void DockerInstance::on_event(const ContainerEvent& event) {
  if (event.time_ns < launched_ns_) return;  // replayed from an earlier run of the container
  if (event.action == "oom") {
    oom_ = true;
  } else if (event.action == "die") {
    finish_exit(ExitInfo{
        true, event.exit_code, 0,
        oom_ ? "killed for lack of memory (OOM), exit code " + std::to_string(event.exit_code)
             : ""});
  } else if (event.action.rfind("health_status", 0) == 0) {
    spdlog::info("{}: container {}", spec_.name, event.action);
  }
}

void DockerInstance::finish_exit(ExitInfo info) {
  if (exited_) return;
  exited_ = true;
  if (!id_.empty()) engine_->unwatch(id_);
  asio::post(engine_->executor(), [self = shared_from_this(), info = std::move(info)] {
    if (self->on_exit_) self->on_exit_(info);
  });
}

void DockerInstance::finish_stop(bool killed) {
  stopped_ = true;
  stopping_ = false;
  auto waiters = std::move(stop_waiters_);
  stop_waiters_.clear();
  for (auto& w : waiters) {
    asio::post(engine_->executor(), [w = std::move(w), killed] { w(StopOutcome{killed}); });
  }
}

void DockerInstance::stop(Millis grace, std::function<void(StopOutcome)> done) {
  stop_waiters_.push_back(std::move(done));
  if (stopped_) {
    finish_stop(false);
    return;
  }
  if (launching_) {
    pending_grace_ = std::min(pending_grace_.value_or(grace), grace);
    return;
  }
  if (stopping_) {
    if (grace == Millis(0))
      asio::co_spawn(engine_->executor(), kill(shared_from_this()), asio::detached);
    return;
  }
  stopping_ = true;
  asio::co_spawn(engine_->executor(), run_stop(shared_from_this(), grace), asio::detached);
}

asio::awaitable<void> DockerInstance::kill(std::shared_ptr<DockerInstance> self) {
  auto reply = co_await self->engine_->client().call("POST", "/containers/" + self->id_ + "/kill",
                                                     "", kCallTimeout);
  // 409: not running any more, which is what a kill wants.
  if (reply && reply->status != 204 && reply->status != 409 && reply->status != 404) {
    spdlog::warn("{}: {}", self->spec_.name, what_failed("killing container", *reply));
  }
}

asio::awaitable<void> DockerInstance::run_stop(std::shared_ptr<DockerInstance> self, Millis grace) {
  auto& client = self->engine_->client();
  const std::string path = "/containers/" + self->id_;
  if (!self->exited_) {
    if (grace == Millis(0)) {
      co_await kill(self);
      // Whatever the wait answers, the inspect below says whether it still runs.
      (void)co_await client.call("POST", path + "/wait?condition=not-running", "", kCallTimeout);
    } else {
      const auto seconds = static_cast<long long>(std::ceil(grace.count() / 1000.0));
      auto reply = co_await client.call("POST", path + "/stop?t=" + std::to_string(seconds), "",
                                        grace + kStopSlack);
      // 204 stopped, 304 was not running, 404 gone: in every case nothing runs any more.
      if (!reply || (reply->status != 204 && reply->status != 304 && reply->status != 404)) {
        const std::string why = reply ? what_failed("stopping", *reply) : reply.error().message;
        spdlog::warn("{}: {}; killing its processes directly", self->spec_.name, why);
        // The engine cannot be asked: the container's processes are ours, found by namespace.
        for (const pid_t pid : self->pids()) ::kill(pid, SIGKILL);
      }
    }
  }
  auto state = co_await self->inspect(self->id_);
  bool killed = grace == Millis(0);
  if (state && !state->running) {
    killed = killed || state->exit_code == 128 + SIGKILL;
    self->take(*state);
  } else if (!state) {
    self->finish_exit(ExitInfo{false, 0, 0, "container " + self->record_.container + " stopped"});
  }
  if (!self->spec_.docker.image.empty()) {
    // Ours, made from the config: the next start makes a fresh one, so none is left behind.
    (void)co_await client.call("DELETE", path + "?force=1", "", kCallTimeout);
  }
  self->finish_stop(killed);
}

asio::awaitable<void> DockerInstance::follow_logs(std::shared_ptr<DockerInstance> self, bool tty) {
  const int fd = ::open(self->log_path_.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
  if (fd < 0) co_return;
  const int pos_fd =
      ::open(log_position_path(self->log_path_).c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0640);
  LogDemux demux(tty);
  DockerLogLines lines;
  const std::function<void(std::string_view)> on_data = [&](std::string_view data) {
    const std::string text = lines.feed(demux.feed(data));
    if (text.empty()) return;
    if (::write(fd, text.data(), text.size()) < 0) {
      spdlog::debug("{}: cannot write its log", self->spec_.name);
    } else if (pos_fd >= 0) {
      write_log_position(pos_fd, lines.last_ns());  // after the lines: a crash between repeats
    }
  };
  // The engine's since= keeps lines at or after it; the second launched keeps what the
  // container printed at once.
  const int64_t since = self->log_since_ns_ > 0
                            ? self->log_since_ns_
                            : self->launched_ns_ / 1'000'000'000 * 1'000'000'000;
  // The log ends when the stream does, however it ends; the container's exit is seen elsewhere.
  (void)co_await self->engine_->client().stream(
      "/containers/" + self->id_ +
          "/logs?follow=1&stdout=1&stderr=1&timestamps=1&since=" + since_param(since),
      on_data, self->log_control_);
  if (pos_fd >= 0) ::close(pos_fd);
  ::close(fd);
}

DockerRuntime::DockerRuntime(asio::any_io_executor executor, std::string socket_path,
                             std::string log_dir)
    : engine_(std::make_shared<DockerEngine>(std::move(executor), std::move(socket_path))),
      log_dir_(std::move(log_dir)) {}

DockerRuntime::~DockerRuntime() {
  engine_->shutdown();
}

Result<std::shared_ptr<Instance>> DockerRuntime::start(const ServiceSpec& spec,
                                                       const LaunchOptions& options,
                                                       ExitCallback on_exit) {
  InstanceRecord record;
  record.service = spec.name;
  record.runtime = RuntimeKind::kDocker;
  record.container = spec.docker.image.empty() ? spec.docker.container : owned_container_name(spec);
  record.started_unix_ms = unix_ns_now() / 1'000'000;
  auto instance =
      std::make_shared<DockerInstance>(engine_, spec, std::move(record), std::move(on_exit));
  asio::co_spawn(engine_->executor(), DockerInstance::launch(instance, options), asio::detached);
  return std::shared_ptr<Instance>(instance);
}

Result<std::shared_ptr<Instance>> DockerRuntime::adopt(const InstanceRecord& record,
                                                       const ServiceSpec* spec,
                                                       ExitCallback on_exit) {
  if (record.container.empty()) {
    return make_error(ErrorCode::kNotFound, "the record names no container");
  }
  // With the spec, a container it created is removed when it stops; without (no longer
  // configured), it is only stopped.
  ServiceSpec known;
  known.name = record.service;
  auto instance = std::make_shared<DockerInstance>(engine_, spec != nullptr ? *spec : known, record,
                                                   std::move(on_exit));
  if (!log_dir_.empty()) {
    // After the last line the previous daemon wrote, if that was of this container (else all
    // of it): nothing printed meanwhile is lost, nothing written is repeated.
    const std::string path = log_dir_ + "/" + record.service + ".log";
    const int64_t started_ns = record.started_unix_ms * 1'000'000;
    const int64_t written_ns = read_log_position(path);
    instance->set_log(path,
                      written_ns >= started_ns ? written_ns + 1 : std::max<int64_t>(started_ns, 1));
  }
  asio::co_spawn(engine_->executor(), DockerInstance::attach(instance), asio::detached);
  return std::shared_ptr<Instance>(instance);
}

void DockerRuntime::discard(const InstanceRecord&) {}

Result<std::shared_ptr<Instance>> DockerRuntime::adopt_existing(const ServiceSpec& spec,
                                                                ExitCallback) {
  return make_error(ErrorCode::kNotFound, spec.name + ": start() attaches to a running container");
}

}  // namespace gpuvisor
