// The interpreter: each reducer step's effects, carried out through Runtime, Prober, Clock and
// EventBus. Completions come back as inputs stamped with the generation they were made in.
#include <spdlog/spdlog.h>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/post.hpp>

#include "runtime/oneshot.h"
#include "supervisor/supervisor.h"
#include "supervisor/unit.h"

namespace gpuvisor {

using namespace lifecycle;

namespace {

constexpr size_t kFailureLogLines = 20;

template <typename... F>
struct Overloaded : F... {
  using F::operator()...;
};
template <typename... F>
Overloaded(F...) -> Overloaded<F...>;

}  // namespace

void Supervisor::apply(Unit& u, const Input& in) {
  Step next = step(u.life, in, {u.spec, clock_.now(), shutting_down_});
  u.life = std::move(next.state);
  // An effect may step u again (a start that fails at once): that step sees this one's state.
  for (const Effect& e : next.effects) perform(u, e);
}

void Supervisor::perform(Unit& u, const Effect& e) {
  const std::string& name = u.spec.name;
  std::visit(
      Overloaded{
          [&](const effect::Publish& p) {
            u.since_unix_ms = clock_.unix_ms();
            const pid_t pid = u.instance && !u.instance->exited() ? u.instance->record().pid : 0;
            spdlog::info("{}: {} -> {} ({})", name, to_string(p.from), to_string(p.to), p.reason);
            // Memory may have come free for a placement that waits on busy services.
            if (p.from == ServiceState::kBusy || p.to == ServiceState::kStopped ||
                p.to == ServiceState::kError || p.to == ServiceState::kSleeping) {
              queue_may_move();
            }
            const bool asleep = p.to == ServiceState::kSleeping;
            if (u.instance && asleep != (p.from == ServiceState::kSleeping)) {
              // A daemon restarted meanwhile adopts it asleep, not as a server to probe.
              if (auto saved = save_record(u); !saved) {
                spdlog::warn("{}: {}", name, saved.error().message);
              }
            }
            events_.publish("service.state_changed", {{"service", name},
                                                      {"from", to_string(p.from)},
                                                      {"to", to_string(p.to)},
                                                      {"reason", p.reason},
                                                      {"generation", p.generation},
                                                      {"pid", pid}});
          },
          [&](const effect::Arm& a) {
            u.timers[static_cast<size_t>(a.kind)]->arm_at(
                a.at, [this, unit = &u, fired = input::TimerFired{a.generation, a.kind}] {
                  apply(*unit, fired);
                });
          },
          [&](const effect::Cancel& c) { u.timers[static_cast<size_t>(c.kind)]->cancel(); },
          [&](const effect::Probe& p) { probe(u, p); },
          [&](const effect::Start& s) { begin_start(u, s.why); },
          [&](const effect::StopInstance& s) {
            u.instance->stop(
                s.grace, guarded([this, unit = &u, s](const StopOutcome& outcome) {
                  if (s.cleanup) {
                    apply(*unit, input::Cleaned{s.generation});
                  } else {
                    apply(*unit, input::StopDone{s.generation, outcome.killed, outcome.how});
                  }
                }));
          },
          [&](const effect::KillNow&) {
            if (u.instance) u.instance->stop(Millis(0), [](StopOutcome) {});
          },
          [&](const effect::RunHook& h) { run_hook(u, h); },
          [&](const effect::ReadVram& r) { read_vram(u, r.generation); },
          [&](const effect::DropInstance& d) { drop_instance(u, d.after); },
          [&](const effect::Note& n) { note(u, n); },
          [&](const effect::Resolve& r) { finish_waiters(u, r.waiters, view(u)); },
          [&](const effect::Fail& f) {
            Error error = f.error;
            if (f.with_log) {
              for (const auto& line : u.log->last(kFailureLogLines)) {
                error.context.push_back(line.text);
              }
            }
            finish_waiters(u, f.waiters, error);
          },
          [&](const effect::ResolveStops& r) {
            const ServiceView v = view(u);
            for (const WaiterId id : r.waiters) {
              const auto it = u.stop_waiters.find(id);
              if (it == u.stop_waiters.end()) continue;
              boost::asio::post(executor_, [done = std::move(it->second), v] { done(v); });
              u.stop_waiters.erase(it);
            }
          },
          [&](const effect::VictimStopped&) { victim_stopped(); },
          [&](const effect::PendingRestart& p) { persist_restart(u, p); },
      },
      e);
}

void Supervisor::drop_instance(Unit& u, const std::string& after) {
  if (!after.empty()) {
    const pid_t pid = u.instance ? u.instance->record().pid : 0;
    events_.publish("service.process_gone",
                    {{"service", u.spec.name}, {"pid", pid}, {"after", after}});
  }
  u.instance.reset();
  store_.remove(u.spec.name);
}

void Supervisor::note(Unit& u, const effect::Note& n) {
  std::string prefix;
  if (u.instance && n.prefix == effect::Note::Prefix::kInstance) {
    prefix = describe(u.instance->record()) + " ";
  } else if (u.instance && n.prefix == effect::Note::Prefix::kPid && u.instance->record().pid > 0) {
    prefix = "pid " + std::to_string(u.instance->record().pid) + " ";
  }
  u.log->note(prefix + n.text);
}

void Supervisor::persist_restart(Unit& u, const effect::PendingRestart& p) {
  const Status saved =
      p.due
          ? store_.save_pending_restart(
                u.spec.name,
                {p.restarts, clock_.unix_ms() +
                                 std::chrono::duration_cast<Millis>(*p.due - clock_.now()).count()})
          : store_.forget_pending_restart(u.spec.name);
  // Only a daemon killed during this backoff would notice: worth a line, not a failure.
  if (!saved) spdlog::warn("{}: pending restart: {}", u.spec.name, saved.error().message);
}

void Supervisor::probe(Unit& u, const effect::Probe& p) {
  if (!p.liveness && !u.instance->launched()) {
    // Nothing to probe yet (a container still being created): poll as for a slow answer.
    apply(u, input::ProbeDone{p.generation, false, false, "not started yet", false});
    return;
  }
  if (p.liveness) u.instance->refresh();
  prober_.check(
      u.spec.health, p.timeout, guarded([this, unit = &u, p](const ProbeResult& r) {
        apply(*unit, input::ProbeDone{p.generation, p.liveness, r.ok, r.detail, r.refused});
      }));
}

void Supervisor::run_hook(Unit& u, const effect::RunHook& h) {
  const HookSpec& hook = h.hook == Hook::kSleep ? u.spec.sleep : u.spec.wake;
  boost::asio::co_spawn(
      executor_, gpuvisor::run_hook(hook),
      guarded([this, unit = &u, h](const std::exception_ptr& thrown, std::string error) {
        if (thrown) error = "the hook could not run";
        apply(*unit, input::HookDone{h.generation, h.hook, std::move(error)});
      }));
}

void Supervisor::read_vram(Unit& u, uint64_t generation) {
  if (!u.instance) return;
  if (const auto held = held_now(*u.instance)) apply(u, input::VramReading{generation, *held});
}

void Supervisor::finish_waiters(Unit& u, const std::vector<WaiterId>& ids,
                                const Result<ServiceView>& result) {
  for (const WaiterId id : ids) {
    const auto it = u.waiters.find(id);
    if (it == u.waiters.end()) continue;
    it->second.timeout->cancel();
    boost::asio::post(executor_, [done = std::move(it->second.done), result] { done(result); });
    u.waiters.erase(it);
  }
}

}  // namespace gpuvisor
