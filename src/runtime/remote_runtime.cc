#include "runtime/remote_runtime.h"

#include <spdlog/spdlog.h>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <chrono>
#include <cmath>
#include <fstream>
#include <map>
#include <sstream>

#include "core/duration.h"
#include "runtime/atomic_file.h"
#include "runtime/oneshot.h"

namespace gpuvisor {

namespace asio = boost::asio;
using nlohmann::json;

namespace {

std::string usd(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "$%.2f", v);
  return buf;
}

bool ended(const std::string& status) {
  return status == "terminated" || status == "stopped" || status == "failed" || status == "deleted";
}

}  // namespace

Result<RemoteResource> parse_provider_output(const std::string& output, bool need_instance_id) {
  // The JSON object is the last line that parses: providers often log before it.
  json j;
  std::string line, last_text;
  std::istringstream lines(output);
  while (std::getline(lines, line)) {
    if (line.empty()) continue;
    last_text = line;
    auto parsed = json::parse(line, nullptr, false);
    if (parsed.is_object()) j = std::move(parsed);
  }
  const auto bad = [&](const std::string& what) {
    return make_error(ErrorCode::kFailed,
                      "the provider " + what +
                          (last_text.empty() ? " (it printed nothing)"
                                             : " (last line: " + last_text.substr(0, 200) + ")"));
  };
  if (!j.is_object()) return bad("printed no JSON object");
  RemoteResource r;
  const auto text = [&](const char* key, std::string& out) -> bool {
    if (!j.contains(key)) return true;
    if (!j[key].is_string()) return false;
    out = j[key].get<std::string>();
    return true;
  };
  if (!text("instance_id", r.instance_id)) return bad("sent an instance_id that is not a string");
  if (need_instance_id && r.instance_id.empty()) return bad("sent no instance_id");
  if (!text("status", r.status) || r.status.empty()) return bad("sent no status");
  if (!text("endpoint", r.endpoint)) return bad("sent an endpoint that is not a string");
  if (!text("ssh_host", r.ssh_host)) return bad("sent an ssh_host that is not a string");
  if (j.contains("ssh_port")) {
    if (!j["ssh_port"].is_number_unsigned() || j["ssh_port"].get<unsigned>() > 65535) {
      return bad("sent an ssh_port that is not a port number");
    }
    r.ssh_port = j["ssh_port"].get<unsigned>();
  }
  return r;
}

// Cost so far and the live resource of each remote service, kept in one file so that a budget
// holds across daemon restarts.
class RemoteLedger {
 public:
  RemoteLedger(std::string path, RemoteRuntime::Publish publish)
      : path_(std::move(path)), publish_(std::move(publish)) {
    std::ifstream in(path_);
    if (!in) return;
    const auto j = json::parse(in, nullptr, false);
    if (!j.is_object() || !j.contains("services") || !j["services"].is_object()) {
      spdlog::warn("{}: unreadable; cost so far starts at zero", path_);
      return;
    }
    entries_ = j["services"];
  }

  double cost(const std::string& service) const {
    if (!entries_.contains(service)) return 0;
    const auto& e = entries_[service];
    double spent = e.value("spent_usd", 0.0);
    if (e.contains("resource") && e["resource"].is_object()) spent += running_cost(e["resource"]);
    return spent;
  }

  json details(const std::string& service) const {
    json out = {{"cost_usd", cost(service)}};
    if (entries_.contains(service) && entries_[service].contains("resource") &&
        entries_[service]["resource"].is_object()) {
      out["resource"] = entries_[service]["resource"];
    }
    return out;
  }

  void opened(const ServiceSpec& spec, const RemoteResource& r) {
    auto& e = entries_[spec.name];
    if (!e.contains("spent_usd")) e["spent_usd"] = 0.0;
    e["resource"] = {{"provider", spec.remote.provider},
                     {"region", spec.remote.region},
                     {"instance_id", r.instance_id},
                     {"endpoint", r.endpoint},
                     {"ssh_host", r.ssh_host},
                     {"ssh_port", r.ssh_port},
                     {"gpu_type", spec.remote.gpu_type},
                     {"gpu_count", spec.remote.gpu_count},
                     {"cost_per_hour", spec.remote.cost_per_hour},
                     {"status", r.status},
                     {"started_ms", unix_ms_now()}};
    save();
    publish("remote.provisioned", spec.name);
  }

  void status(const std::string& service, const std::string& status) {
    if (!has_resource(service)) return;
    auto& res = entries_[service]["resource"];
    const bool changed = res.value("status", "") != status;
    res["status"] = status;
    save();
    publish(changed ? "remote.status_changed" : "remote.cost", service);
  }

  void closed(const std::string& service, const std::string& why) {
    if (!has_resource(service)) return;
    auto& e = entries_[service];
    e["spent_usd"] = e.value("spent_usd", 0.0) + running_cost(e["resource"]);
    e["resource"]["status"] = "terminated";
    const json last = e["resource"];
    e.erase("resource");
    save();
    json data = last;
    data["service"] = service;
    data["cost_usd"] = cost(service);
    data["why"] = why;
    publish_("remote.terminated", data);
  }

  const json* resource(const std::string& service) const {
    return has_resource(service) ? &entries_[service]["resource"] : nullptr;
  }

 private:
  bool has_resource(const std::string& service) const {
    return entries_.contains(service) && entries_[service].contains("resource") &&
           entries_[service]["resource"].is_object();
  }

  static double running_cost(const json& r) {
    const double hours = static_cast<double>(std::max<int64_t>(
                             0, unix_ms_now() - r.value("started_ms", int64_t{0}))) /
                         3'600'000.0;
    return hours * r.value("cost_per_hour", 0.0);
  }

  void publish(const char* type, const std::string& service) {
    json data = entries_[service]["resource"];
    data["service"] = service;
    data["cost_usd"] = cost(service);
    publish_(type, data);
  }

  void save() {
    if (auto saved = write_file_atomically(path_, json{{"services", entries_}}.dump(2) + "\n");
        !saved) {
      spdlog::warn("remote ledger: {}", saved.error().message);
    }
  }

  std::string path_;
  RemoteRuntime::Publish publish_;
  json entries_ = json::object();
};

namespace {

class RemoteInstance : public Instance, public std::enable_shared_from_this<RemoteInstance> {
 public:
  RemoteInstance(asio::any_io_executor executor, std::shared_ptr<RemoteLedger> ledger,
                 const ServiceSpec& spec, InstanceRecord record, ExitCallback on_exit)
      : executor_(executor),
        ledger_(std::move(ledger)),
        spec_(spec),
        record_(std::move(record)),
        on_exit_(std::move(on_exit)),
        tick_(executor),
        idle_(executor) {}

  const InstanceRecord& record() const override { return record_; }
  bool exited() const override { return exited_; }
  bool launched() const override { return running_; }
  std::vector<pid_t> pids() const override { return {}; }  // nothing of it runs here
  void refresh() override {}
  void touch() override { arm_idle(); }

  void stop(Millis, std::function<void(StopOutcome)> done) override {
    waiters_.push_back(std::move(done));
    if (provisioning_) {
      stop_pending_ = true;  // the provider is creating it: it is terminated once it exists
      return;
    }
    if (stopping_) return;
    stopping_ = true;
    asio::co_spawn(executor_, terminate(shared_from_this(), "stop requested", false),
                   asio::detached);
  }

  static asio::awaitable<void> provision(std::shared_ptr<RemoteInstance> self) {
    self->provisioning_ = true;
    co_await self->provision_once();
    self->provisioning_ = false;
    if (self->exited_) {
      self->resolve_waiters(StopOutcome{false, "nothing was provisioned"});
    } else if (self->stop_pending_) {
      co_await terminate(self, "stop requested", false);
    } else {
      co_await self->follow("");
    }
  }

  static asio::awaitable<void> attach(std::shared_ptr<RemoteInstance> self) {
    co_await self->follow("");
  }

 private:
  asio::awaitable<void> provision_once() {
    auto self = shared_from_this();
    const auto& r = spec_.remote;
    const double spent = self->ledger_->cost(self->spec_.name);
    if (r.budget > 0 && spent >= r.budget) {
      self->exit_with("budget reached: " + usd(spent) + " spent of the " + usd(r.budget) +
                          " budget for " + self->spec_.name + "; nothing provisioned",
                      false);
      co_return;
    }
    const auto out = co_await run_command(r.provision, r.command_timeout, true);
    if (!out.ok()) {
      const std::string said = last_line(out.output);
      self->exit_with("provision failed: " + out.describe() + (said.empty() ? "" : ": " + said) +
                          (out.error.rfind("timed out", 0) == 0
                               ? " (check the provider: an instance may have been created)"
                               : ""),
                      false);
      co_return;
    }
    auto resource = parse_provider_output(out.output, true);
    if (!resource) {
      self->exit_with("provision: " + resource.error().message, false);
      co_return;
    }
    self->record_.container = resource->instance_id;
    self->ledger_->opened(self->spec_, *resource);
    self->running_ = resource->status == "running";
  }

  void resolve_waiters(const StopOutcome& outcome) {
    auto waiters = std::move(waiters_);
    waiters_.clear();
    stopping_ = false;
    for (auto& w : waiters) w(outcome);
  }

  // Polls the provider's status until the instance ends, publishing cost as it goes.
  asio::awaitable<void> follow(std::string status) {
    auto self = shared_from_this();
    const auto& r = spec_.remote;
    arm_idle();
    while (!exited_ && !stopping_) {
      if (status.empty()) {
        std::vector<std::string> argv = r.status;
        argv.push_back(record_.container);
        const auto out = co_await run_command(argv, r.command_timeout, true);
        if (exited_ || stopping_) break;
        auto parsed = out.ok() ? parse_provider_output(out.output, false)
                               : Result<RemoteResource>(make_error(
                                     ErrorCode::kFailed, "status failed: " + out.describe()));
        if (!parsed) {
          // A provider hiccup is not the machine's end: say so, and ask again next time.
          spdlog::warn("{}: {}", spec_.name, parsed.error().message);
        } else {
          status = parsed->status;
        }
      }
      if (!status.empty()) {
        ledger_->status(spec_.name, status);
        if (ended(status)) {
          exit_with(
              "remote instance " + record_.container + " is " + status + " (ended by the provider)",
              false);
          break;
        }
        running_ = running_ || status == "running";
      }
      if (r.budget > 0 && ledger_->cost(spec_.name) >= r.budget) {
        co_await terminate(self, "budget of " + usd(r.budget) + " reached", true);
        break;
      }
      status.clear();
      tick_.expires_after(running_ ? r.status_interval : std::min(r.status_interval, Millis(1000)));
      boost::system::error_code ec;
      co_await tick_.async_wait(asio::redirect_error(asio::use_awaitable, ec));
    }
  }

  void arm_idle() {
    if (spec_.remote.idle_timeout.count() <= 0 || exited_) return;
    idle_.expires_after(spec_.remote.idle_timeout);
    idle_.async_wait([weak = weak_from_this()](boost::system::error_code ec) {
      auto self = weak.lock();
      if (ec || !self || self->exited_ || self->stopping_) return;
      self->stopping_ = true;
      asio::co_spawn(
          self->executor_,
          terminate(self, "idle for " + format_duration(self->spec_.remote.idle_timeout), true),
          asio::detached);
    });
  }

  static asio::awaitable<void> terminate(std::shared_ptr<RemoteInstance> self, std::string why,
                                         bool planned) {
    self->stopping_ = true;
    self->tick_.cancel();
    self->idle_.cancel();
    StopOutcome outcome;
    if (!self->record_.container.empty() && !self->exited_) {
      std::vector<std::string> argv = self->spec_.remote.terminate;
      argv.push_back(self->record_.container);
      const auto out = co_await run_command(argv, self->spec_.remote.command_timeout, true);
      if (out.ok()) {
        self->ledger_->closed(self->spec_.name, why);
        outcome.how = "terminated remote instance " + self->record_.container + " (" + why + ")";
      } else {
        const std::string said = last_line(out.output);
        outcome.how = "terminate failed: " + out.describe() + (said.empty() ? "" : ": " + said) +
                      "; remote instance " + self->record_.container +
                      " may still be running, and costing";
        spdlog::error("{}: {}", self->spec_.name, outcome.how);
      }
    }
    if (planned) {
      self->exit_with(outcome.how.empty() ? why : outcome.how, true);
    } else {
      self->exited_ = true;
    }
    self->resolve_waiters(outcome);
  }

  void exit_with(std::string why, bool planned) {
    if (exited_) return;
    exited_ = true;
    tick_.cancel();
    idle_.cancel();
    asio::post(executor_, [self = shared_from_this(), why = std::move(why), planned] {
      ExitInfo info{false, 0, 0, why};
      info.planned = planned;
      if (self->on_exit_) self->on_exit_(info);
    });
  }

  asio::any_io_executor executor_;
  std::shared_ptr<RemoteLedger> ledger_;
  const ServiceSpec& spec_;
  InstanceRecord record_;
  ExitCallback on_exit_;
  asio::steady_timer tick_;
  asio::steady_timer idle_;
  bool running_ = false;
  bool provisioning_ = false;
  bool stop_pending_ = false;
  bool exited_ = false;
  bool stopping_ = false;
  std::vector<std::function<void(StopOutcome)>> waiters_;
};

}  // namespace

RemoteRuntime::RemoteRuntime(asio::any_io_executor executor, std::string ledger_path,
                             Publish publish)
    : executor_(std::move(executor)),
      ledger_(std::make_shared<RemoteLedger>(std::move(ledger_path), std::move(publish))) {}

RemoteRuntime::~RemoteRuntime() = default;

Result<std::shared_ptr<Instance>> RemoteRuntime::start(const ServiceSpec& spec,
                                                       const LaunchOptions&, ExitCallback on_exit) {
  InstanceRecord record;
  record.service = spec.name;
  record.runtime = RuntimeKind::kRemote;
  record.started_unix_ms = unix_ms_now();
  auto instance = std::make_shared<RemoteInstance>(executor_, ledger_, spec, std::move(record),
                                                   std::move(on_exit));
  asio::co_spawn(executor_, RemoteInstance::provision(instance), asio::detached);
  return std::shared_ptr<Instance>(instance);
}

Result<std::shared_ptr<Instance>> RemoteRuntime::adopt(const InstanceRecord& record,
                                                       const ServiceSpec* spec,
                                                       ExitCallback on_exit) {
  // Without its spec (no longer configured) there are no commands to watch it with.
  const auto* resource = ledger_->resource(record.service);
  InstanceRecord r = record;
  if (resource != nullptr) r.container = resource->value("instance_id", "");
  if (spec == nullptr || spec->runtime != RuntimeKind::kRemote || r.container.empty()) {
    return make_error(ErrorCode::kNotFound, record.service + ": no live remote instance recorded");
  }
  auto instance =
      std::make_shared<RemoteInstance>(executor_, ledger_, *spec, r, std::move(on_exit));
  asio::co_spawn(executor_, RemoteInstance::attach(instance), asio::detached);
  return std::shared_ptr<Instance>(instance);
}

Result<std::shared_ptr<Instance>> RemoteRuntime::adopt_existing(const ServiceSpec& spec,
                                                                ExitCallback) {
  return make_error(ErrorCode::kNotFound, spec.name + ": remote instances are provisioned");
}

json RemoteRuntime::details(const ServiceSpec& spec) const {
  return ledger_->details(spec.name);
}

}  // namespace gpuvisor
