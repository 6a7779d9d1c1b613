#include "supervisor/supervisor.h"

#include <spdlog/spdlog.h>

#include <boost/asio/post.hpp>

#include "core/duration.h"
#include "supervisor/unit.h"

namespace gpuvisor {

namespace {}  // namespace

Supervisor::Supervisor(boost::asio::any_io_executor executor, Clock& clock, const Config& config,
                       Runtime& runtime, Prober& prober, StateStore& store, EventBus& events)
    : executor_(std::move(executor)),
      clock_(clock),
      config_(config),
      runtime_(runtime),
      prober_(prober),
      store_(store),
      events_(events),
      placement_timer_(clock.make_timer()) {
  for (const auto& spec : config_.services) {
    auto unit = std::make_unique<Unit>(clock_, spec);
    unit->since_unix_ms = clock_.unix_ms();
    unit->log = std::make_shared<LogTail>(executor_, store_.log_path(spec.name),
                                          config_.daemon.log_ring_lines);
    units_.emplace(spec.name, std::move(unit));
  }
}

Supervisor::~Supervisor() = default;

Supervisor::Unit* Supervisor::find(const std::string& name) const {
  const auto it = units_.find(name);
  return it == units_.end() ? nullptr : it->second.get();
}

Supervisor::Unit* Supervisor::current(const std::string& name, uint64_t generation) const {
  Unit* u = find(name);
  return u != nullptr && u->generation == generation ? u : nullptr;
}

Error Supervisor::not_found(const std::string& name) const {
  std::string known;
  for (const auto& [n, u] : units_) known += (known.empty() ? "" : ", ") + n;
  return make_error(ErrorCode::kNotFound, "no service named '" + name + "' (configured: " +
                                              (known.empty() ? "none" : known) + ")");
}

ServiceView Supervisor::view(const Unit& u) const {
  ServiceView v;
  v.spec = &u.spec;
  v.state = u.state;
  v.reason = u.reason;
  v.since_unix_ms = u.since_unix_ms;
  v.generation = u.generation;
  if (u.instance && !u.instance->exited()) v.pid = u.instance->record().pid;
  if (u.instance) v.started_unix_ms = u.instance->record().started_unix_ms;
  if (u.instance && !u.instance->exited()) v.container = u.instance->record().container;
  v.adopted = u.adopted;
  v.restarts = u.restarts;
  v.last_exit = u.last_exit;
  v.last_probe = u.last_probe;
  if (u.instance) v.gpu = u.gpu;
  v.measured_vram_bytes = u.measured_bytes;
  v.details = runtime_.details(u.spec);
  return v;
}

std::vector<ServiceView> Supervisor::list() const {
  std::vector<ServiceView> out;
  for (const auto& spec : config_.services) out.push_back(view(*find(spec.name)));
  return out;
}

Result<ServiceView> Supervisor::get(const std::string& name) const {
  const Unit* u = find(name);
  if (u == nullptr) return not_found(name);
  return view(*u);
}

std::map<pid_t, std::string> Supervisor::owned_pids() const {
  std::map<pid_t, std::string> out;
  for (const auto& [name, u] : units_) {
    if (!u->instance) continue;
    u->instance->refresh();  // descendants started since the last look count too
    for (const pid_t pid : u->instance->pids()) out.emplace(pid, name);
  }
  return out;
}

std::shared_ptr<LogTail> Supervisor::logs(const std::string& name) const {
  const Unit* u = find(name);
  return u == nullptr ? nullptr : u->log;
}

void Supervisor::set_state(Unit& u, ServiceState state, std::string reason) {
  const ServiceState from = u.state;
  u.state = state;
  u.reason = std::move(reason);
  u.since_unix_ms = clock_.unix_ms();
  if (state == ServiceState::kReady) {
    arm_idle(u);
  } else {
    u.idle_timer->cancel();
  }
  const pid_t pid = u.instance && !u.instance->exited() ? u.instance->record().pid : 0;
  spdlog::info("{}: {} -> {} ({})", u.spec.name, to_string(from), to_string(state), u.reason);
  events_.publish("service.state_changed", {{"service", u.spec.name},
                                            {"from", to_string(from)},
                                            {"to", to_string(state)},
                                            {"reason", u.reason},
                                            {"generation", u.generation},
                                            {"pid", pid}});
}

void Supervisor::add_waiter(Unit& u, Millis timeout, Done done) {
  Waiter waiter;
  waiter.id = next_waiter_++;
  waiter.done = std::move(done);
  waiter.timer = clock_.make_timer();
  waiter.timer->arm_after(timeout, [this, name = u.spec.name, id = waiter.id, timeout] {
    Unit* unit = find(name);
    if (unit == nullptr) return;
    for (auto it = unit->ensure_waiters.begin(); it != unit->ensure_waiters.end(); ++it) {
      if (it->id != id) continue;
      std::string message = "'" + name + "' not ready after " + format_duration(timeout) +
                            " (state " + to_string(unit->state) + ": " + unit->reason + ")";
      if (!unit->last_probe.empty()) message += "; last health check: " + unit->last_probe;
      auto waiter_done = std::move(it->done);
      unit->ensure_waiters.erase(it);
      waiter_done(make_error(ErrorCode::kTimeout, message));
      return;
    }
  });
  u.ensure_waiters.push_back(std::move(waiter));
}

void Supervisor::resolve_waiters(Unit& u) {
  const ServiceView v = view(u);
  for (auto& w : u.ensure_waiters) {
    w.timer->cancel();
    boost::asio::post(executor_, [done = std::move(w.done), v] { done(v); });
  }
  u.ensure_waiters.clear();
}

void Supervisor::fail_waiters(Unit& u, const Error& error) {
  for (auto& w : u.ensure_waiters) {
    w.timer->cancel();
    boost::asio::post(executor_, [done = std::move(w.done), error] { done(error); });
  }
  u.ensure_waiters.clear();
}

void Supervisor::cancel_timers(Unit& u) {
  u.probe_timer->cancel();
  u.deadline_timer->cancel();
  u.backoff_timer->cancel();
  u.idle_timer->cancel();
}

void Supervisor::arm_idle(Unit& u) {
  if (u.spec.idle_ttl.count() <= 0) return;
  u.idle_timer->arm_after(u.spec.idle_ttl, [this, name = u.spec.name, generation = u.generation] {
    Unit* unit = current(name, generation);
    // Busy (a job, a proxied request) cancels the timer; ready again re-arms it.
    if (unit == nullptr || unit->state != ServiceState::kReady || !unit->instance) {
      return;
    }
    unit->want_running = false;
    begin_stop(*unit, unit->spec.stop_grace,
               "idle for " + format_duration(unit->spec.idle_ttl) + " (idle_ttl)");
  });
}

void Supervisor::ensure(const std::string& name, Millis timeout, Done done) {
  Unit* u = find(name);
  if (u == nullptr || shutting_down_) {
    Error error = u == nullptr ? not_found(name)
                               : make_error(ErrorCode::kUnavailable, "daemon is shutting down");
    boost::asio::post(executor_, [done = std::move(done), error] { done(error); });
    return;
  }
  u->want_running = true;
  const auto now = clock_.now();
  u->uses = u->recent_uses(now) + 1;
  u->uses_at = now;
  u->last_used_ms = clock_.unix_ms();
  if (u->instance) u->instance->touch();
  if (u->state == ServiceState::kReady) arm_idle(*u);  // a use: the idle time starts over
  switch (u->state) {
    case ServiceState::kReady:
    case ServiceState::kBusy:
      boost::asio::post(executor_, [done = std::move(done), v = view(*u)] { done(v); });
      return;
    case ServiceState::kStarting:
    case ServiceState::kUnknown:
    case ServiceState::kStopping:  // on_stopped() starts it again: want_running is set
      add_waiter(*u, timeout, std::move(done));
      return;
    case ServiceState::kStopped:
    case ServiceState::kError:
      add_waiter(*u, timeout, std::move(done));
      u->restarts = 0;  // a person asked: the automatic restart budget starts over
      u->backoff_timer->cancel();
      // In error with an instance: its cleanup is running; on_cleaned() starts it.
      if (!u->instance) begin_start(*u, "ensure requested");
      return;
  }
}

void Supervisor::stop(const std::string& name, bool force, Done done) {
  Unit* u = find(name);
  if (u == nullptr) {
    boost::asio::post(executor_, [done = std::move(done), e = not_found(name)] { done(e); });
    return;
  }
  u->want_running = false;
  u->restart_delay.reset();
  fail_waiters(*u, make_error(ErrorCode::kConflict,
                              "stop of '" + name + "' requested before it became ready"));
  if (!u->instance) {
    cancel_timers(*u);
    ++u->generation;
    if (u->state != ServiceState::kStopped) set_state(*u, ServiceState::kStopped, "stop requested");
    boost::asio::post(executor_, [done = std::move(done), v = view(*u)] { done(v); });
    return;
  }
  u->stop_waiters.push_back(std::move(done));
  u->stop_forced = u->stop_forced || force;
  if (u->state == ServiceState::kStopping) {
    // Already on its way down; force only brings the SIGKILL forward.
    if (force) u->instance->stop(Millis(0), [](StopOutcome) {});
    return;
  }
  begin_stop(*u, force ? Millis(0) : u->spec.stop_grace,
             force ? "stop requested (force)" : "stop requested");
}

Result<uint64_t> Supervisor::acquire(const std::string& name, const std::string& why) {
  Unit* u = find(name);
  if (u == nullptr) return not_found(name);
  if (u->state != ServiceState::kReady && u->state != ServiceState::kBusy) {
    return make_error(ErrorCode::kConflict,
                      "'" + name + "' is " + to_string(u->state) + ", not ready");
  }
  if (u->busy_holds++ == 0) set_state(*u, ServiceState::kBusy, why);
  return u->generation;
}

void Supervisor::release(const std::string& name, uint64_t token) {
  Unit* u = find(name);
  // A failure or a stop meanwhile ended that instance, and its holds with it.
  if (u == nullptr || u->generation != token || u->busy_holds == 0) return;
  if (--u->busy_holds == 0 && u->state == ServiceState::kBusy) {
    set_state(*u, ServiceState::kReady, "idle again");
  }
}

bool Supervisor::held(const std::string& name, uint64_t token) const {
  const Unit* u = find(name);
  return u != nullptr && u->generation == token && u->busy_holds > 0 &&
         u->state == ServiceState::kBusy;
}

void Supervisor::restart(const std::string& name, Millis timeout, Done done) {
  stop(name, false,
       guarded([this, name, timeout, done = std::move(done)](Result<ServiceView> stopped) mutable {
         if (!stopped) {
           done(stopped.error());
           return;
         }
         ensure(name, timeout, std::move(done));
       }));
}

void Supervisor::begin_stop(Unit& u, Millis grace, const std::string& why) {
  const uint64_t generation = ++u.generation;
  u.busy_holds = 0;
  cancel_timers(u);
  set_state(u, ServiceState::kStopping, why);
  u.instance->stop(grace,
                   guarded([this, name = u.spec.name, generation](const StopOutcome& outcome) {
                     on_stopped(name, generation, outcome);
                   }));
}

void Supervisor::on_stopped(const std::string& name, uint64_t generation,
                            const StopOutcome& outcome) {
  Unit* u = current(name, generation);
  if (u == nullptr) return;
  const pid_t pid = u->instance ? u->instance->record().pid : 0;
  u->instance.reset();
  u->adopted = false;
  store_.remove(name);
  std::string reason = !outcome.how.empty() ? outcome.how
                       : !outcome.killed    ? "stopped"
                       : u->stop_forced     ? "killed with SIGKILL (stop --force)"
                                        : "killed with SIGKILL (did not exit within stop_grace " +
                                              format_duration(u->spec.stop_grace) + ")";
  u->stop_forced = false;
  if (!u->evicted_for.empty()) {
    const bool say_how = outcome.killed || !outcome.how.empty();
    reason = "evicted to make room for " + u->evicted_for + (say_how ? " (" + reason + ")" : "");
    u->evicted_for.clear();
  }
  u->log->note((pid > 0 ? "pid " + std::to_string(pid) + " " : "") + reason);
  events_.publish("service.process_gone", {{"service", name}, {"pid", pid}, {"after", "stop"}});
  u->ready_at.reset();
  set_state(*u, ServiceState::kStopped, reason);
  victim_stopped();
  const ServiceView v = view(*u);
  for (auto& done : u->stop_waiters) {
    boost::asio::post(executor_, [done = std::move(done), v] { done(v); });
  }
  u->stop_waiters.clear();
  if (u->want_running && !shutting_down_) begin_start(*u, "ensure requested while stopping");
}

void Supervisor::shutdown(bool stop_services, std::function<void()> done) {
  shutting_down_ = true;
  auto remaining = std::make_shared<size_t>(1);
  auto finish = std::make_shared<std::function<void()>>(std::move(done));
  auto one_done = [remaining, finish](auto&&...) {
    if (--*remaining == 0) (*finish)();
  };
  for (auto& [name, u] : units_) {
    fail_waiters(*u, make_error(ErrorCode::kUnavailable, "daemon is shutting down"));
    u->backoff_timer->cancel();
    if (stop_services && u->instance && !u->instance->record().from_pid_file) {
      ++*remaining;
      stop(name, false, one_done);
    } else {
      cancel_timers(*u);
    }
  }
  boost::asio::post(executor_, [one_done] { one_done(); });
}

}  // namespace gpuvisor
