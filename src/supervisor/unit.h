// Supervisor's private per-service record: the reducer's state, and what the interpreter keeps
// beside it (the instance, timers, callers' callbacks, planner bookkeeping). Only supervisor*.cc
// include this.
#pragma once

#include <array>
#include <chrono>
#include <cmath>
#include <map>
#include <memory>
#include <optional>
#include <string>

#include "supervisor/lifecycle.h"
#include "supervisor/supervisor.h"

namespace gpuvisor {

struct Supervisor::Waiter {
  Done done;
  std::unique_ptr<Timer> timeout;
};

struct Supervisor::Unit {
  Unit(Clock& clock, const ServiceSpec& s) : spec(s) {
    for (auto& t : timers) t = clock.make_timer();
  }

  const ServiceSpec& spec;
  lifecycle::UnitState life;
  int64_t since_unix_ms = 0;  // of the last state change

  std::shared_ptr<Instance> instance;
  std::vector<unsigned> gpus;   // where the planner put it (CUDA_VISIBLE_DEVICES), if it did
  uint64_t measured_bytes = 0;  // the most VRAM it was seen holding (persisted)
  int64_t last_used_ms = 0;     // the last ensure: least recently used goes first
  int keep_for_phase = 0;       // > 0 while a phase it belongs to is being ensured
  // Use, for the planner: ensures counted with a half-life.
  double uses = 0;
  SteadyTime uses_at;
  double recent_uses(SteadyTime now) const {
    return uses *
           std::exp2(-std::chrono::duration<double>(now - uses_at).count() / kUseHalfLifeSeconds);
  }
  static constexpr double kUseHalfLifeSeconds = 1800;

  std::array<std::unique_ptr<Timer>, lifecycle::kTimerKinds> timers;
  std::map<lifecycle::WaiterId, Waiter> waiters;     // ensures, by the id the reducer knows
  std::map<lifecycle::WaiterId, Done> stop_waiters;  // stops, likewise
  // Draining: a queued service has waited daemon.queue_max_wait while this one kept serving, so
  // this one takes no new work until that one is placed or leaves the queue. Ensures meanwhile
  // wait here, outside the reducer (supervisor_queue.cc).
  std::string draining_for;
  std::vector<lifecycle::WaiterId> held_back;
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
