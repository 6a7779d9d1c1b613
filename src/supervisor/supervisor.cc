#include "supervisor/supervisor.h"

#include <spdlog/spdlog.h>

#include <boost/asio/post.hpp>

#include "supervisor/unit.h"

namespace gpuvisor {

using namespace lifecycle;

Supervisor::Supervisor(boost::asio::any_io_executor executor, Clock& clock, const Config& config,
                       Runtime& runtime, Prober& prober, StateStore& store, EventBus& events)
    : executor_(std::move(executor)),
      clock_(clock),
      config_(config),
      runtime_(runtime),
      prober_(prober),
      store_(store),
      events_(events),
      queue_timer_(clock.make_timer()),
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

Error Supervisor::not_found(const std::string& name) const {
  std::string known;
  for (const auto& [n, u] : units_) known += (known.empty() ? "" : ", ") + n;
  return make_error(ErrorCode::kNotFound, "no service named '" + name + "' (configured: " +
                                              (known.empty() ? "none" : known) + ")");
}

ServiceView Supervisor::view(const Unit& u) const {
  ServiceView v;
  v.spec = &u.spec;
  v.state = u.life.state;
  v.reason = u.life.reason;
  v.since_unix_ms = u.since_unix_ms;
  v.generation = u.life.generation;
  if (u.instance && !u.instance->exited()) v.pid = u.instance->record().pid;
  if (u.instance) v.started_unix_ms = u.instance->record().started_unix_ms;
  if (u.instance && !u.instance->exited()) v.container = u.instance->record().container;
  v.adopted = u.life.adopted;
  v.restarts = u.life.restarts;
  v.last_exit = u.life.last_exit;
  v.last_probe = u.life.last_probe;
  if (u.instance) v.gpus = u.gpus;
  v.measured_vram_bytes = u.measured_bytes;
  v.residual_vram_bytes = u.life.residual_bytes;
  v.reload_seconds = u.life.reload_seconds;
  v.wake_seconds = u.life.wake_seconds;
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

std::map<pid_t, std::string> Supervisor::service_pids() {
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

void Supervisor::ensure(const std::string& name, Millis timeout, Done done) {
  Unit* u = find(name);
  if (u == nullptr || shutting_down_) {
    Error error = u == nullptr ? not_found(name)
                               : make_error(ErrorCode::kUnavailable, "daemon is shutting down");
    boost::asio::post(executor_, [done = std::move(done), error] { done(error); });
    return;
  }
  const auto now = clock_.now();
  u->uses = u->recent_uses(now) + 1;
  u->uses_at = now;
  u->last_used_ms = clock_.unix_ms();
  if (u->instance) u->instance->touch();
  const WaiterId id = next_waiter_++;
  Waiter& waiter = u->waiters[id];
  waiter.done = std::move(done);
  waiter.timeout = clock_.make_timer();
  waiter.timeout->arm_after(timeout, [this, u, id, timeout] {
    if (!held_back_timed_out(*u, id, timeout)) apply(*u, input::WaiterTimedOut{id, timeout});
  });
  const bool serving =
      u->life.state == ServiceState::kReady || u->life.state == ServiceState::kBusy;
  if (!u->draining_for.empty() && serving) {
    u->held_back.push_back(id);  // its turn comes once what it drains for is placed
    return;
  }
  apply(*u, input::Ensure{id});
}

void Supervisor::stop(const std::string& name, bool force, Done done) {
  Unit* u = find(name);
  if (u == nullptr) {
    boost::asio::post(executor_, [done = std::move(done), e = not_found(name)] { done(e); });
    return;
  }
  const WaiterId id = next_waiter_++;
  u->stop_waiters.emplace(id, std::move(done));
  apply(*u, input::Stop{id, force});
}

Result<uint64_t> Supervisor::acquire(const std::string& name, const std::string& why) {
  Unit* u = find(name);
  if (u == nullptr) return not_found(name);
  if (!can_acquire(u->life)) {
    return make_error(ErrorCode::kConflict,
                      "'" + name + "' is " + to_string(u->life.state) + ", not ready");
  }
  apply(*u, input::Acquire{why});
  return u->life.generation;
}

void Supervisor::release(const std::string& name, uint64_t token) {
  if (Unit* u = find(name)) apply(*u, input::Release{token});
}

bool Supervisor::held(const std::string& name, uint64_t token) const {
  const Unit* u = find(name);
  return u != nullptr && u->life.generation == token && u->life.busy_holds > 0 &&
         u->life.state == ServiceState::kBusy;
}

Result<Hold> Supervisor::hold(const std::string& name, const std::string& why) {
  auto token = acquire(name, why);
  if (!token) return token.error();
  return Hold(*this, alive_, name, *token);
}

void Supervisor::ensure_held(const std::string& name, Millis timeout, const std::string& why,
                             std::function<void(Result<Hold>)> done) {
  const SteadyTime deadline = clock_.now() + timeout;
  ensure(name, timeout,
         guarded([this, name, why, deadline,
                  done = std::move(done)](const Result<ServiceView>& ready) mutable {
           if (!ready) {
             done(ready.error());
             return;
           }
           auto held = hold(name, why);
           const auto left = std::chrono::duration_cast<Millis>(deadline - clock_.now());
           // Evicted between ready and now (a queued placement took its turn): it is started
           // again for this caller, within what is left of its wait.
           if (!held && held.error().code == ErrorCode::kConflict && left.count() > 0 &&
               !shutting_down_) {
             ensure_held(name, left, why, std::move(done));
             return;
           }
           done(std::move(held));
         }));
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

void Supervisor::shutdown(bool stop_services, std::function<void()> done) {
  shutting_down_ = true;
  auto remaining = std::make_shared<size_t>(1);
  auto finish = std::make_shared<std::function<void()>>(std::move(done));
  auto one_done = [remaining, finish](auto&&...) {
    if (--*remaining == 0) (*finish)();
  };
  for (auto& [name, u] : units_) {
    std::optional<WaiterId> stop_waiter;
    if (stop_services && u->instance && !u->instance->record().from_pid_file) {
      ++*remaining;
      stop_waiter = next_waiter_++;
      u->stop_waiters.emplace(*stop_waiter, one_done);
    }
    for (const WaiterId id : std::exchange(u->held_back, {})) {
      finish_waiters(*u, {id}, make_error(ErrorCode::kUnavailable, "daemon is shutting down"));
    }
    apply(*u, input::Shutdown{stop_waiter});
  }
  boost::asio::post(executor_, [one_done] { one_done(); });
}

}  // namespace gpuvisor
