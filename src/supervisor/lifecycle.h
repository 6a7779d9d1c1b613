// One service's lifecycle as a reducer (DESIGN.md): step(state, input, context) gives the next
// state and the effects to carry out. It does no I/O and reads no clock, so every rule (restart
// policy, backoff, deadlines, idle_ttl, who waits for what) is tested by stepping it, in
// microseconds. Supervisor is the interpreter: it feeds inputs from the runtime, the prober,
// timers and callers, and performs the effects through Runtime, Prober, Clock and EventBus.
//
// Generations: ensure-driven starts, stops and failures bump UnitState::generation. Effects that
// complete later (a probe, a stop, a timer) carry the generation they were made in, and an input
// that comes back with an older one changes nothing: a completion after a newer operation is
// stale (STYLE.md practice 5). Putting an instance to sleep and waking it bump the generation
// too, but the instance lives on: its exit still counts (UnitState::live_generation).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <variant>
#include <vector>

#include "core/clock.h"
#include "core/result.h"
#include "core/service_spec.h"
#include "core/service_state.h"

namespace gpuvisor::lifecycle {

// A unit's timers: one of each at most, armed and cancelled by effects.
enum class TimerKind { kProbe, kStartup, kBackoff, kIdle, kSettle };
inline constexpr int kTimerKinds = 5;

// The service's own hooks, run by the interpreter.
enum class Hook { kSleep, kWake };

using WaiterId = uint64_t;

struct UnitState {
  ServiceState state = ServiceState::kStopped;
  std::string reason = "not started";
  uint64_t generation = 0;
  // The instance's exit counts while generation is live_generation (set when it was started or
  // adopted, and by sleep and wake, which keep it); instance_generation is the one it reports.
  uint64_t instance_generation = 0;
  uint64_t live_generation = 0;
  bool has_instance = false;  // a process, container or remote instance of ours exists
  bool adopted = false;       // that instance was taken over, not started by us
  // Desired state: set by ensure, cleared by stop. Automatic restarts happen only while set.
  bool want_running = false;
  bool stop_forced = false;  // the stop in progress was forced: SIGKILL says so, not "grace"
  std::string evicted_for;   // the stop in progress makes room for this service
  int restarts = 0;          // automatic restarts in a row
  // Retries in a row while its engine (dockerd) was unreachable: they pace the backoff but do
  // not spend the restart budget, since the service itself did not fail.
  int engine_retries = 0;
  bool engine_retry = false;            // the restart due is one of those
  std::optional<Millis> restart_delay;  // decided at a failure, applied once cleaned up
  // The backoff is running: persisted, so that a daemon killed meanwhile does not forget it.
  bool restart_pending = false;
  std::optional<SteadyTime> ready_at;
  SteadyTime started_at{};  // of the current readiness watch
  SteadyTime startup_deadline{};
  int liveness_failures = 0;
  int busy_holds = 0;         // acquires not yet released
  double reload_seconds = 0;  // its last start-up, from spawn to healthy
  double wake_seconds = 0;    // its last wake, from the wake hook to healthy
  bool waking = false;        // the start in progress is a wake: it times wake_seconds
  SteadyTime wake_started{};
  // What it still held once its VRAM readings settled after its last sleep (per GPU, the most).
  uint64_t residual_bytes = 0;
  std::optional<uint64_t> last_reading;  // while settling
  int steady_readings = 0;
  SteadyTime settle_deadline{};
  std::string last_exit;
  std::string last_probe;
  std::vector<WaiterId> waiters;       // ensures waiting for ready
  std::vector<WaiterId> stop_waiters;  // stops waiting for the instance to be gone
};

namespace input {
struct Ensure {
  WaiterId waiter;
};
struct Stop {
  WaiterId waiter;
  bool force = false;
};
struct Acquire {  // only when can_acquire() holds
  std::string why;
};
struct Release {
  uint64_t token;  // the generation acquire gave
};
struct WaiterTimedOut {
  WaiterId waiter;
  Millis after;
};
// The daemon goes down: waiters fail; with stop, the instance is stopped (stop_waiter gets it).
struct Shutdown {
  std::optional<WaiterId> stop_waiter;
};
// A previous daemon's instance (or a pid_file's process) is now ours.
struct Adopted {
  std::string why;
  std::optional<int> restarts;  // the restart budget spent, as the last daemon left it
  bool asleep = false;          // it was put to sleep (or its server found unloaded)
};
struct NotAdopted {
  std::string why;
};
// A previous daemon was waiting out this service's restart backoff when it went down.
struct ResumeRestart {
  int restarts;
  SteadyTime due;
};
// About to start or adopt an instance: the generation its exit belongs to is set here.
struct NewInstance {};
struct Launched {
  std::string why;
  std::optional<std::string> record_error;  // persisting the instance failed
};
struct LaunchFailed {
  Error error;
};
struct Queued {  // waiting for its turn in the placement queue
  std::string why;
};
struct AwaitingMemory {  // victims are being evicted for it
  std::string plan;
};
// Its placement waits for busy services to go idle (the admission queue).
struct Blocked {
  std::string why;
};
// It was waiting in the admission queue, and nobody waits for it any more.
struct Abandoned {
  std::string why;
};
struct PlacementFailed {  // refused, or the memory did not come back in time
  Error error;
};
struct Evict {
  std::string for_service;
};
// Make room by putting it to sleep (its sleep hook) instead of stopping it.
struct Sleep {
  std::string for_service;
};
// Placed again: a sleeping service runs its wake hook, then its health check.
struct Wake {
  std::string why;
};
struct HookDone {
  uint64_t generation;
  Hook hook;
  std::string error;  // empty: it succeeded
};
// What the instance holds now, per GPU the most: read while its memory settles after a sleep.
struct VramReading {
  uint64_t generation;
  uint64_t bytes;
};
struct ProbeDone {
  uint64_t generation;
  bool liveness = false;
  bool ok = false;
  std::string detail;
  bool refused = false;  // nothing listened: worth retrying sooner
};
struct TimerFired {
  uint64_t generation;
  TimerKind kind;
};
struct Exited {
  uint64_t generation;
  std::string description;  // ExitInfo::describe()
  bool success = false;
  bool planned = false;  // its backend ended it on purpose: stopped, not failed
  // Its engine could not be reached (ExitInfo::engine_unreachable): retried with backoff, but
  // not counted against restart_limit.
  bool engine_unreachable = false;
};
struct StopDone {  // a stop we asked for finished
  uint64_t generation;
  bool killed = false;
  std::string how;
};
struct Cleaned {  // what a failure left of the instance is gone
  uint64_t generation;
};
}  // namespace input

using Input =
    std::variant<input::Ensure, input::Stop, input::Acquire, input::Release, input::WaiterTimedOut,
                 input::Shutdown, input::Adopted, input::NotAdopted, input::ResumeRestart,
                 input::NewInstance, input::Launched, input::LaunchFailed, input::Queued,
                 input::AwaitingMemory, input::Blocked, input::Abandoned, input::PlacementFailed,
                 input::Evict, input::Sleep, input::Wake, input::HookDone, input::VramReading,
                 input::ProbeDone, input::TimerFired, input::Exited, input::StopDone,
                 input::Cleaned>;

namespace effect {
struct Publish {  // the state changed (or its reason did)
  ServiceState from;
  ServiceState to;
  std::string reason;
  uint64_t generation;
};
struct Arm {
  TimerKind kind;
  SteadyTime at;
  uint64_t generation;
};
struct Cancel {
  TimerKind kind;
};
struct Probe {
  uint64_t generation;
  bool liveness = false;
  Millis timeout;
};
struct Start {  // through placement where the interpreter has a GPU inventory
  std::string why;
};
struct StopInstance {
  uint64_t generation;
  Millis grace;
  bool cleanup = false;  // after a failure: completes as Cleaned, else as StopDone
};
struct KillNow {};  // a forced stop overtakes the graceful one in progress
struct RunHook {    // completes as HookDone
  Hook hook;
  uint64_t generation;
};
struct ReadVram {  // completes as VramReading, where NVML can tell
  uint64_t generation;
};
// The instance is gone: forget it and its record; after "stop" or "failure" say so as an event.
struct DropInstance {
  std::string after;
};
struct Note {                                    // a line in the service's log
  enum class Prefix { kNone, kInstance, kPid };  // "pid 1 " / "container x ", or "pid 1 " only
  std::string text;
  Prefix prefix = Prefix::kNone;
};
struct Resolve {
  std::vector<WaiterId> waiters;
};
struct Fail {
  std::vector<WaiterId> waiters;
  Error error;
  bool with_log = false;  // attach the service's last log lines
};
struct ResolveStops {
  std::vector<WaiterId> waiters;
};
struct VictimStopped {};  // a placement waiting for memory may look again
// Persist (due set) or forget (unset) that the service restarts at due with restarts spent.
struct PendingRestart {
  std::optional<SteadyTime> due;
  int restarts = 0;
};
}  // namespace effect

using Effect =
    std::variant<effect::Publish, effect::Arm, effect::Cancel, effect::Probe, effect::Start,
                 effect::StopInstance, effect::KillNow, effect::RunHook, effect::ReadVram,
                 effect::DropInstance, effect::Note, effect::Resolve, effect::Fail,
                 effect::ResolveStops, effect::VictimStopped, effect::PendingRestart>;

struct Context {
  const ServiceSpec& spec;
  SteadyTime now;
  bool shutting_down = false;
};

struct Step {
  UnitState state;
  std::vector<Effect> effects;
};

Step step(UnitState state, const Input& in, const Context& context);

// acquire() is answered at once, so the interpreter asks before it steps Acquire.
bool can_acquire(const UnitState& state);

}  // namespace gpuvisor::lifecycle
