// The lifecycle reducer's workings, shared by the files that hold its rules: lifecycle.cc (the
// lifecycle of a process) and lifecycle_sleep.cc (sleep, wake and the residual after a sleep).
// Nothing outside them includes this.
#pragma once

#include <string>

#include "supervisor/lifecycle.h"

namespace gpuvisor::lifecycle::detail {

// One step's work on a copy of the state: each handler is the rule for one input.
class Reducer {
 public:
  Reducer(UnitState state, const Context& context) : context_(context), spec_(context.spec) {
    out_.state = std::move(state);
  }
  Step take() { return std::move(out_); }

  void on(const input::Ensure& in);
  void on(const input::Stop& in);
  void on(const input::Acquire& in);
  void on(const input::Release& in);
  void on(const input::WaiterTimedOut& in);
  void on(const input::Shutdown& in);
  void on(const input::Adopted& in);
  void on(const input::NotAdopted& in) { s().last_exit = in.why; }
  void on(const input::ResumeRestart& in);
  void on(const input::NewInstance& in);
  void on(const input::Launched& in);
  void on(const input::LaunchFailed& in);
  void on(const input::Queued& in);
  void on(const input::AwaitingMemory& in);
  void on(const input::Blocked& in);
  void on(const input::Abandoned& in);
  void on(const input::PlacementFailed& in);
  void on(const input::Evict& in);
  void on(const input::Sleep& in);
  void on(const input::Wake& in);
  void on(const input::HookDone& in);
  void on(const input::VramReading& in);
  void on(const input::ProbeDone& in);
  void on(const input::TimerFired& in);
  void on(const input::Exited& in);
  void on(const input::StopDone& in);
  void on(const input::Cleaned& in);

 private:
  UnitState& s() { return out_.state; }
  SteadyTime now() const { return context_.now; }
  template <typename E>
  void emit(E e) {
    out_.effects.emplace_back(std::move(e));
  }

  void set_state(ServiceState to, std::string reason);
  void arm(TimerKind kind, SteadyTime at) { emit(effect::Arm{kind, at, s().generation}); }
  void cancel_timers();
  void cancel_backoff();
  void arm_backoff(SteadyTime at);
  void arm_idle();
  void fail_waiters(Error error, bool with_log = false);
  void resolve_waiters();
  void begin_stop(Millis grace, const std::string& why);
  void watch_startup();
  void readiness_probe();
  void on_ready(const std::string& detail);
  void on_liveness(const input::ProbeDone& in);
  void on_failure(const std::string& what, bool failed, bool engine_unreachable = false);
  Millis backoff(int attempts) const;
  void on_slept(const input::HookDone& in);
  void on_woken(const input::HookDone& in);
  void read_vram() { emit(effect::ReadVram{s().generation}); }
  void settled(uint64_t bytes);
  void renew_instance_generation();
  ServiceState waiting_state();

  const Context& context_;
  const ServiceSpec& spec_;
  Step out_;
};

}  // namespace gpuvisor::lifecycle::detail
