// SPDX-License-Identifier: Apache-2.0
// Sleep and wake: an eviction that keeps the process (its sleep hook frees most of its VRAM),
// the residual it keeps, measured once NVML's readings settle, and the wake that brings it back
// through its health check instead of a cold start.
#include <algorithm>

#include "core/bytes.h"
#include "supervisor/lifecycle_reducer.h"

namespace gpuvisor::lifecycle::detail {

namespace {

// Readings are this far apart, and agree within this much, twice in a row, to count as settled:
// a server frees its memory in steps (weights, then the cache) over a moment.
constexpr Millis kSettleInterval{100};
constexpr uint64_t kSettleTolerance = 16ULL << 20;
constexpr int kSteadyReadings = 2;
// Past this, the last reading is taken as it is.
constexpr Millis kSettleLimit{10'000};

}  // namespace

// The process lives on through sleep and wake: its exit still counts, but every completion
// started before (a probe, a timer) is stale.
void Reducer::renew_instance_generation() {
  ++s().generation;
  s().live_generation = s().generation;
}

void Reducer::on(const input::Sleep& in) {
  const bool awake = s().state == ServiceState::kReady || s().state == ServiceState::kBusy;
  if (!awake || !s().has_instance || spec_.sleep.empty()) {
    on(input::Evict{in.for_service});  // still loading, or no way to sleep: stopped instead
    return;
  }
  s().want_running = false;
  s().evicted_for = in.for_service;
  s().busy_holds = 0;
  renew_instance_generation();
  cancel_timers();
  set_state(ServiceState::kStopping, "putting it to sleep to make room for " + in.for_service);
  emit(effect::RunHook{Hook::kSleep, s().generation});
}

void Reducer::on(const input::HookDone& in) {
  if (in.generation != s().generation) return;
  if (in.hook == Hook::kSleep) {
    on_slept(in);
  } else {
    on_woken(in);
  }
}

void Reducer::on_slept(const input::HookDone& in) {
  const std::string for_service = std::exchange(s().evicted_for, "");
  if (!in.error.empty()) {
    // The memory is still needed: a stop frees it where the hook could not.
    emit(effect::Note{"sleep hook failed: " + in.error + "; stopping it instead"});
    s().evicted_for = for_service;
    begin_stop(spec_.stop_grace, "sleep hook failed (" + in.error + "); stopping it instead");
    return;
  }
  set_state(ServiceState::kSleeping, "asleep: put to sleep to make room for " + for_service);
  emit(effect::Note{"put to sleep to make room for " + for_service});
  emit(effect::VictimStopped{});
  if (!s().stop_waiters.empty()) {
    begin_stop(spec_.stop_grace, "stop requested");
    return;
  }
  if (s().want_running) {
    emit(effect::Start{"ensure requested while it went to sleep: waking it"});
    return;
  }
  s().last_reading.reset();
  s().steady_readings = 0;
  s().settle_deadline = now() + kSettleLimit;
  read_vram();
}

void Reducer::on(const input::VramReading& in) {
  if (in.generation != s().generation || s().state != ServiceState::kSleeping) return;
  const bool steady = s().last_reading && std::max(in.bytes, *s().last_reading) -
                                                  std::min(in.bytes, *s().last_reading) <=
                                              kSettleTolerance;
  s().steady_readings = steady ? s().steady_readings + 1 : 0;
  s().last_reading = in.bytes;
  if (s().steady_readings >= kSteadyReadings || now() >= s().settle_deadline) {
    settled(in.bytes);
    return;
  }
  arm(TimerKind::kSettle, now() + kSettleInterval);
}

void Reducer::settled(uint64_t bytes) {
  s().residual_bytes = bytes;
  s().last_reading.reset();
  set_state(ServiceState::kSleeping, s().reason + "; still holds " + format_bytes(bytes));
}

void Reducer::on(const input::Wake& in) {
  if (s().state != ServiceState::kSleeping || !s().has_instance) return;
  renew_instance_generation();
  cancel_timers();
  s().waking = true;
  s().wake_started = now();
  s().last_probe.clear();
  set_state(ServiceState::kStarting, "waking: " + in.why);
  if (spec_.wake.empty()) {
    watch_startup();  // it loads again on its own: the health check says when
    return;
  }
  emit(effect::RunHook{Hook::kWake, s().generation});
}

void Reducer::on_woken(const input::HookDone& in) {
  if (in.error.empty()) {
    watch_startup();
    return;
  }
  // Half awake is no state to serve from: it is restarted (or stopped) like any failure.
  s().waking = false;
  on_failure("wake hook failed: " + in.error, true);
}

}  // namespace gpuvisor::lifecycle::detail
