// Supervisor's private per-service record. Only supervisor*.cc include this.
#pragma once

#include <chrono>
#include <cmath>
#include <list>
#include <memory>
#include <optional>
#include <string>

#include "supervisor/supervisor.h"

namespace gpuvisor {

struct Supervisor::Waiter {
  uint64_t id = 0;
  Done done;
  std::unique_ptr<Timer> timer;
};

struct Supervisor::Unit {
  Unit(Clock& clock, const ServiceSpec& s)
      : spec(s),
        probe_timer(clock.make_timer()),
        deadline_timer(clock.make_timer()),
        backoff_timer(clock.make_timer()),
        idle_timer(clock.make_timer()) {}

  const ServiceSpec& spec;
  ServiceState state = ServiceState::kStopped;
  std::string reason = "not started";
  int64_t since_unix_ms = 0;
  uint64_t generation = 0;

  std::shared_ptr<Instance> instance;
  bool adopted = false;
  // Desired state: set by ensure, cleared by stop. Automatic restarts happen only while set.
  bool want_running = false;
  bool stop_forced = false;     // the stop in progress was forced: SIGKILL says so, not "grace"
  std::string evicted_for;      // the stop in progress makes room for this service
  std::optional<unsigned> gpu;  // where the planner put it (CUDA_VISIBLE_DEVICES), if it did
  uint64_t measured_bytes = 0;  // the most VRAM it was seen holding (persisted)
  int64_t last_used_ms = 0;     // the last ensure: least recently used goes first
  int keep_for_phase = 0;       // > 0 while a phase it belongs to is being ensured
  // Use, for the planner: ensures counted with a half-life, and its last start-up time.
  double uses = 0;
  SteadyTime uses_at;
  double reload_seconds = 0;
  double recent_uses(SteadyTime now) const {
    return uses *
           std::exp2(-std::chrono::duration<double>(now - uses_at).count() / kUseHalfLifeSeconds);
  }
  static constexpr double kUseHalfLifeSeconds = 1800;

  int busy_holds = 0;  // acquires not yet released
  int restarts = 0;
  std::optional<Millis> restart_delay;  // decided at a failure, applied once it is cleaned up
  std::optional<SteadyTime> ready_at;
  std::string last_exit;
  std::string last_probe;

  SteadyTime startup_deadline;
  SteadyTime started_at;  // of the current readiness watch
  int liveness_failures = 0;
  std::unique_ptr<Timer> probe_timer;
  std::unique_ptr<Timer> deadline_timer;
  std::unique_ptr<Timer> backoff_timer;
  std::unique_ptr<Timer> idle_timer;  // idle_ttl: armed while ready, restarted by any use

  std::list<Waiter> ensure_waiters;
  std::vector<Done> stop_waiters;
  std::shared_ptr<LogTail> log;
};

template <typename F>
auto Supervisor::guarded(F f) const {
  return [alive = std::weak_ptr<bool>(alive_), f = std::move(f)](auto&&... args) mutable {
    if (alive.expired()) return;
    f(std::forward<decltype(args)>(args)...);
  };
}

}  // namespace gpuvisor
