#include "supervisor/lifecycle.h"

#include <algorithm>

#include "core/duration.h"
#include "supervisor/lifecycle_reducer.h"
#include "supervisor/readiness.h"

namespace gpuvisor::lifecycle::detail {

void Reducer::set_state(ServiceState to, std::string reason) {
  const ServiceState from = s().state;
  s().state = to;
  s().reason = std::move(reason);
  if (to == ServiceState::kReady) {
    arm_idle();
  } else {
    emit(effect::Cancel{TimerKind::kIdle});
  }
  emit(effect::Publish{from, to, s().reason, s().generation});
}

void Reducer::cancel_timers() {
  for (const auto kind :
       {TimerKind::kProbe, TimerKind::kStartup, TimerKind::kIdle, TimerKind::kSettle}) {
    emit(effect::Cancel{kind});
  }
  cancel_backoff();
}

void Reducer::cancel_backoff() {
  emit(effect::Cancel{TimerKind::kBackoff});
  if (std::exchange(s().restart_pending, false)) emit(effect::PendingRestart{});
}

void Reducer::arm_backoff(SteadyTime at) {
  arm(TimerKind::kBackoff, at);
  s().restart_pending = true;
  emit(effect::PendingRestart{at, s().restarts});
}

void Reducer::arm_idle() {
  if (spec_.idle_ttl.count() > 0) arm(TimerKind::kIdle, now() + spec_.idle_ttl);
}

void Reducer::fail_waiters(Error error, bool with_log) {
  if (s().waiters.empty()) return;
  emit(effect::Fail{std::exchange(s().waiters, {}), std::move(error), with_log});
}

void Reducer::resolve_waiters() {
  if (s().waiters.empty()) return;
  emit(effect::Resolve{std::exchange(s().waiters, {})});
}

void Reducer::on(const input::Ensure& in) {
  s().want_running = true;
  if (s().state == ServiceState::kReady) arm_idle();  // a use: the idle time starts over
  switch (s().state) {
    case ServiceState::kReady:
    case ServiceState::kBusy:
      emit(effect::Resolve{{in.waiter}});
      return;
    case ServiceState::kStarting:
    case ServiceState::kUnknown:
    case ServiceState::kStopping:  // StopDone starts it again: want_running is set
      s().waiters.push_back(in.waiter);
      return;
    case ServiceState::kSleeping:  // woken once placed: its memory may have to be made again
      s().waiters.push_back(in.waiter);
      emit(effect::Start{"ensure requested: waking it"});
      return;
    case ServiceState::kStopped:
    case ServiceState::kError:
      s().waiters.push_back(in.waiter);
      s().restarts = 0;  // a person asked: the automatic restart budget starts over
      s().engine_retries = 0;
      cancel_backoff();
      // In error with an instance: its cleanup is running, and Cleaned starts it.
      if (!s().has_instance) emit(effect::Start{"ensure requested"});
      return;
  }
}

void Reducer::on(const input::Stop& in) {
  s().want_running = false;
  s().restart_delay.reset();
  fail_waiters(make_error(ErrorCode::kConflict,
                          "stop of '" + spec_.name + "' requested before it became ready"));
  if (!s().has_instance) {
    cancel_timers();
    ++s().generation;
    if (s().state != ServiceState::kStopped) set_state(ServiceState::kStopped, "stop requested");
    emit(effect::ResolveStops{{in.waiter}});
    return;
  }
  s().stop_waiters.push_back(in.waiter);
  s().stop_forced = s().stop_forced || in.force;
  if (s().state == ServiceState::kStopping) {
    if (in.force) emit(effect::KillNow{});  // already on its way down: SIGKILL now
    return;
  }
  begin_stop(in.force ? Millis(0) : spec_.stop_grace,
             in.force ? "stop requested (force)" : "stop requested");
}

void Reducer::on(const input::Acquire& in) {
  if (s().busy_holds++ == 0) set_state(ServiceState::kBusy, in.why);
}

void Reducer::on(const input::Release& in) {
  // A failure or a stop meanwhile ended that instance, and its holds with it.
  if (s().generation != in.token || s().busy_holds == 0) return;
  if (--s().busy_holds == 0 && s().state == ServiceState::kBusy) {
    set_state(ServiceState::kReady, "idle again");
  }
}

void Reducer::on(const input::WaiterTimedOut& in) {
  auto& waiters = s().waiters;
  const auto it = std::find(waiters.begin(), waiters.end(), in.waiter);
  if (it == waiters.end()) return;
  waiters.erase(it);
  std::string message = "'" + spec_.name + "' not ready after " + format_duration(in.after) +
                        " (state " + to_string(s().state) + ": " + s().reason + ")";
  if (!s().last_probe.empty()) message += "; last health check: " + s().last_probe;
  emit(effect::Fail{{in.waiter}, make_error(ErrorCode::kTimeout, message)});
}

void Reducer::on(const input::Shutdown& in) {
  fail_waiters(make_error(ErrorCode::kUnavailable, "daemon is shutting down"));
  if (in.stop_waiter && s().has_instance) {
    on(input::Stop{*in.stop_waiter, false});
    return;
  }
  // A pending restart stays recorded: the next daemon carries it out.
  for (const auto kind : {TimerKind::kProbe, TimerKind::kStartup, TimerKind::kBackoff,
                          TimerKind::kIdle, TimerKind::kSettle}) {
    emit(effect::Cancel{kind});
  }
}

void Reducer::on(const input::ResumeRestart& in) {
  s().want_running = true;
  s().restarts = in.restarts;
  set_state(ServiceState::kError, "restart " + std::to_string(in.restarts) + " of " +
                                      std::to_string(spec_.restart_limit) +
                                      " was pending when the previous daemon stopped");
  arm_backoff(std::max(in.due, now()));
}

void Reducer::on(const input::Adopted& in) {
  if (in.restarts) s().restarts = *in.restarts;
  s().has_instance = true;
  s().adopted = true;
  if (in.asleep) {
    set_state(ServiceState::kSleeping, in.why);  // woken, through placement, when ensured
    return;
  }
  s().want_running = true;
  set_state(ServiceState::kUnknown, in.why);
  // It may have been adopted mid-start: give it the whole startup window to become healthy.
  watch_startup();
}

void Reducer::on(const input::NewInstance&) {
  cancel_backoff();
  ++s().generation;
  s().instance_generation = s().live_generation = s().generation;
  s().residual_bytes = 0;  // a new process: what the last one kept asleep says nothing of it
}

void Reducer::on(const input::Launched& in) {
  s().has_instance = true;
  s().adopted = false;
  s().last_probe.clear();
  set_state(ServiceState::kStarting, in.why);
  if (in.record_error) {
    on_failure("cannot record the new instance: " + *in.record_error, true);
    return;
  }
  watch_startup();
}

void Reducer::on(const input::LaunchFailed& in) {
  emit(effect::Note{"cannot start: " + in.error.message});
  set_state(ServiceState::kError, "cannot start: " + in.error.message);
  fail_waiters(in.error);
}

// A sleeping service waits to be woken still asleep: it holds its residual, and serves nothing.
ServiceState Reducer::waiting_state() {
  return s().state == ServiceState::kSleeping ? ServiceState::kSleeping : ServiceState::kStarting;
}

void Reducer::on(const input::Queued& in) {
  set_state(waiting_state(), in.why + "; waiting for its turn to be placed on a GPU");
}

void Reducer::on(const input::AwaitingMemory& in) {
  set_state(waiting_state(), "waiting for GPU memory: " + in.plan);
}

void Reducer::on(const input::Blocked& in) {
  if (s().reason == in.why) return;  // looked at again, still waiting for the same
  set_state(waiting_state(), in.why);
}

void Reducer::on(const input::Abandoned& in) {
  s().want_running = false;
  const bool asleep = s().state == ServiceState::kSleeping;
  set_state(asleep ? ServiceState::kSleeping : ServiceState::kStopped, in.why);
}

void Reducer::on(const input::PlacementFailed& in) {
  s().want_running = false;
  if (s().state == ServiceState::kSleeping) {
    set_state(ServiceState::kSleeping, "asleep; cannot wake it: " + in.error.message);
  } else {
    set_state(ServiceState::kError, in.error.message);
  }
  fail_waiters(in.error);
}

void Reducer::on(const input::Evict& in) {
  s().want_running = false;
  s().evicted_for = in.for_service;
  const std::string why = "evicted to make room for " + in.for_service;
  fail_waiters(make_error(ErrorCode::kConflict, why));
  if (s().state != ServiceState::kStopping) begin_stop(spec_.stop_grace, why);
}

void Reducer::begin_stop(Millis grace, const std::string& why) {
  ++s().generation;
  s().busy_holds = 0;
  cancel_timers();
  set_state(ServiceState::kStopping, why);
  emit(effect::StopInstance{s().generation, grace, false});
}

void Reducer::watch_startup() {
  s().liveness_failures = 0;
  s().started_at = now();
  s().startup_deadline = now() + spec_.startup_timeout;
  arm(TimerKind::kStartup, s().startup_deadline);
  readiness_probe();
}

void Reducer::readiness_probe() {
  const auto remaining = std::chrono::duration_cast<Millis>(s().startup_deadline - now());
  emit(
      effect::Probe{s().generation, false, std::clamp(remaining, Millis(1), spec_.health.timeout)});
}

void Reducer::on(const input::ProbeDone& in) {
  if (in.generation != s().generation) return;
  if (in.liveness) {
    on_liveness(in);
    return;
  }
  if (in.ok) {
    on_ready(in.detail);
    return;
  }
  s().last_probe = in.detail;
  const auto elapsed = std::chrono::duration_cast<Millis>(now() - s().started_at);
  arm(TimerKind::kProbe,
      now() + readiness_poll_delay(elapsed, spec_.health.startup_poll_cap, in.refused));
}

void Reducer::on_ready(const std::string& detail) {
  emit(effect::Cancel{TimerKind::kStartup});
  s().last_probe.clear();
  s().ready_at = now();
  s().engine_retries = 0;
  if (std::exchange(s().waking, false)) {
    s().wake_seconds = std::chrono::duration<double>(now() - s().wake_started).count();
  } else if (!s().adopted) {  // an adopted instance's start-up was not watched from its start
    s().reload_seconds = std::chrono::duration<double>(now() - s().started_at).count();
  }
  set_state(ServiceState::kReady, spec_.health.empty() ? "running (no health check configured)"
                                                       : "health check passed (" + detail + ")");
  resolve_waiters();
  if (!spec_.health.empty()) arm(TimerKind::kProbe, now() + spec_.health.interval);
}

void Reducer::on_liveness(const input::ProbeDone& in) {
  if (in.ok) {
    s().liveness_failures = 0;
    s().last_probe.clear();
  } else {
    s().last_probe = in.detail;
    if (++s().liveness_failures >= spec_.health.failure_threshold) {
      on_failure("liveness check failed " + std::to_string(s().liveness_failures) +
                     " times in a row (" + in.detail + ")",
                 true);
      return;
    }
  }
  arm(TimerKind::kProbe, now() + spec_.health.interval);
}

void Reducer::on(const input::TimerFired& in) {
  if (in.generation != s().generation) return;
  switch (in.kind) {
    case TimerKind::kProbe: {
      const bool live = s().state == ServiceState::kReady || s().state == ServiceState::kBusy;
      if (live) {
        emit(effect::Probe{s().generation, true, spec_.health.timeout});
      } else {
        readiness_probe();
      }
      return;
    }
    case TimerKind::kStartup: {
      std::string what =
          "not healthy within startup_timeout " + format_duration(spec_.startup_timeout);
      if (!s().last_probe.empty()) what += " (last health check: " + s().last_probe + ")";
      on_failure(what, true);
      return;
    }
    case TimerKind::kBackoff:
      s().restart_pending = false;
      emit(effect::PendingRestart{});
      if (!s().want_running) return;
      s().restart_delay.reset();
      if (s().engine_retry) {
        emit(effect::Start{"retry " + std::to_string(s().engine_retries) +
                           " after the engine was unreachable"});
        return;
      }
      emit(effect::Start{"restart " + std::to_string(s().restarts) + " of " +
                         std::to_string(spec_.restart_limit) + " after failure"});
      return;
    case TimerKind::kIdle:
      // Busy (a job, a proxied request) cancels the timer; ready again re-arms it.
      if (s().state != ServiceState::kReady || !s().has_instance) return;
      s().want_running = false;
      begin_stop(spec_.stop_grace, "idle for " + format_duration(spec_.idle_ttl) + " (idle_ttl)");
      return;
    case TimerKind::kSettle:
      read_vram();
      return;
  }
}

void Reducer::on(const input::Exited& in) {
  // An exit we asked for (a stop or a failure moved the generation on), or stale.
  if (in.generation != s().instance_generation || s().live_generation != s().generation) return;
  s().last_exit = in.description;
  emit(effect::Note{in.description, effect::Note::Prefix::kInstance});
  if (in.planned) {
    // Its backend ended it on purpose (idle, budget): stopped, as if asked, not restarted.
    ++s().generation;
    cancel_timers();
    s().want_running = false;
    s().has_instance = false;
    s().adopted = false;
    s().ready_at.reset();
    emit(effect::DropInstance{""});
    fail_waiters(make_error(ErrorCode::kFailed, "'" + spec_.name + "' " + s().last_exit));
    set_state(ServiceState::kStopped, s().last_exit);
    return;
  }
  const bool was_starting = s().state == ServiceState::kStarting;
  const bool was_asleep = s().state == ServiceState::kSleeping;
  on_failure(was_starting ? s().last_exit + " while starting"
             : was_asleep ? s().last_exit + " while asleep"
                          : s().last_exit,
             !in.success, in.engine_unreachable);
}

// restart_backoff doubled per attempt already made, capped at restart_backoff_max.
Millis Reducer::backoff(int attempts) const {
  Millis delay = spec_.restart_backoff;
  for (int i = 0; i < attempts && delay < spec_.restart_backoff_max; ++i) delay *= 2;
  return std::min(delay, spec_.restart_backoff_max);
}

void Reducer::on_failure(const std::string& what, bool failed, bool engine_unreachable) {
  ++s().generation;
  s().busy_holds = 0;  // the work on it is lost; its releases must not make the next one ready
  cancel_timers();
  if (s().ready_at && now() - *s().ready_at >= spec_.restart_reset_after) s().restarts = 0;
  s().ready_at.reset();

  const bool policy_restarts = spec_.restart == RestartPolicy::kAlways ||
                               (spec_.restart == RestartPolicy::kOnFailure && failed);
  std::string reason = what;
  s().restart_delay.reset();
  s().engine_retry = false;
  if (s().want_running && policy_restarts && !context_.shutting_down) {
    if (engine_unreachable && spec_.restart_limit > 0) {
      // Not the service's failure (dockerd restarting, say): it keeps retrying, paced by its own
      // doubling, and the budget is left for the service's own failures.
      const Millis delay = backoff(s().engine_retries++);
      s().restart_delay = delay;
      s().engine_retry = true;
      reason += "; engine unreachable, retrying in " + format_duration(delay) +
                " (not counted against restart_limit)";
    } else if (s().restarts >= spec_.restart_limit) {
      reason += "; gave up after " + std::to_string(s().restarts) + " restarts";
    } else {
      const Millis delay = backoff(s().restarts);
      ++s().restarts;
      s().restart_delay = delay;
      reason += "; restarting in " + format_duration(delay) + " (restart " +
                std::to_string(s().restarts) + " of " + std::to_string(spec_.restart_limit) + ")";
    }
  }
  fail_waiters(make_error(ErrorCode::kFailed, "'" + spec_.name + "' failed: " + what), true);
  set_state(ServiceState::kError, reason);
  // Whatever is left of the tree goes before anything new starts: a crashed main process may
  // leave children holding VRAM; a hung one is still running.
  emit(effect::StopInstance{s().generation, spec_.stop_grace, true});
}

void Reducer::on(const input::StopDone& in) {
  if (in.generation != s().generation) return;
  std::string reason = !in.how.empty()   ? in.how
                       : !in.killed      ? "stopped"
                       : s().stop_forced ? "killed with SIGKILL (stop --force)"
                                         : "killed with SIGKILL (did not exit within stop_grace " +
                                               format_duration(spec_.stop_grace) + ")";
  s().stop_forced = false;
  if (!s().evicted_for.empty()) {
    const bool say_how = in.killed || !in.how.empty();
    reason = "evicted to make room for " + s().evicted_for + (say_how ? " (" + reason + ")" : "");
    s().evicted_for.clear();
  }
  emit(effect::Note{reason, effect::Note::Prefix::kPid});
  emit(effect::DropInstance{"stop"});
  s().has_instance = false;
  s().adopted = false;
  s().ready_at.reset();
  set_state(ServiceState::kStopped, reason);
  emit(effect::VictimStopped{});
  if (!s().stop_waiters.empty()) emit(effect::ResolveStops{std::exchange(s().stop_waiters, {})});
  if (s().want_running && !context_.shutting_down) {
    emit(effect::Start{"ensure requested while stopping"});
  }
}

void Reducer::on(const input::Cleaned& in) {
  if (in.generation != s().generation) return;
  emit(effect::DropInstance{"failure"});
  s().has_instance = false;
  s().adopted = false;
  if (context_.shutting_down) return;
  if (!s().waiters.empty()) {
    emit(effect::Start{"ensure requested"});  // a person asked while it was failing
    return;
  }
  if (s().restart_delay) arm_backoff(now() + *s().restart_delay);
}

}  // namespace gpuvisor::lifecycle::detail

namespace gpuvisor::lifecycle {

Step step(UnitState state, const Input& in, const Context& context) {
  detail::Reducer reducer(std::move(state), context);
  std::visit([&](const auto& i) { reducer.on(i); }, in);
  return reducer.take();
}

bool can_acquire(const UnitState& state) {
  return state.state == ServiceState::kReady || state.state == ServiceState::kBusy;
}

}  // namespace gpuvisor::lifecycle
