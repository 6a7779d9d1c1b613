// The asynchronous half of Supervisor: starting, probing, failing, restarting, adopting.
#include <spdlog/spdlog.h>

#include <algorithm>
#include <boost/asio/post.hpp>
#include <filesystem>

#include "core/duration.h"
#include "supervisor/readiness.h"
#include "supervisor/supervisor.h"
#include "supervisor/unit.h"

namespace gpuvisor {

namespace {

constexpr size_t kFailureLogLines = 20;
constexpr size_t kMaxLogBytes = 32 * 1024 * 1024;

std::vector<std::string> last_lines(const LogTail& log) {
  std::vector<std::string> out;
  for (const auto& line : log.last(kFailureLogLines)) out.push_back(line.text);
  return out;
}

}  // namespace

ExitCallback Supervisor::exit_handler(const Unit& u, uint64_t generation) {
  return guarded([this, name = u.spec.name, generation](const ExitInfo& info) {
    on_exit(name, generation, info);
  });
}

void Supervisor::start() {
  for (auto& [name, u] : units_) u->log->start();

  auto loaded = store_.load_all();
  for (const auto& problem : loaded.problems) {
    spdlog::warn("state directory: {}", problem);
    events_.publish("daemon.warning", {{"message", problem}});
  }
  for (const auto& record : loaded.records) {
    Unit* u = find(record.service);
    if (u == nullptr) {
      // Started by a previous daemon for a service no longer configured: it is ours, so it
      // is stopped rather than left to hold VRAM nobody accounts for.
      auto orphan = runtime_.adopt(record, nullptr, [](const ExitInfo&) {});
      if (orphan) {
        spdlog::warn("{}: no longer configured; stopping its pid {}", record.service, record.pid);
        (*orphan)->stop(Millis(10'000), [this, service = record.service,
                                         keep = *orphan](StopOutcome) { store_.remove(service); });
      } else {
        runtime_.discard(record);
        store_.remove(record.service);
      }
      continue;
    }
    const uint64_t generation = ++u->generation;
    auto instance = runtime_.adopt(record, &u->spec, exit_handler(*u, generation));
    if (!instance) {
      spdlog::info("{}: previous instance not adopted: {}", record.service,
                   instance.error().message);
      runtime_.discard(record);
      store_.remove(record.service);
      u->last_exit = instance.error().message;
      continue;
    }
    // The restart budget goes on where the last daemon left it, unless this instance has
    // already run long enough to have reset it.
    const bool ran_long =
        clock_.unix_ms() - record.started_unix_ms >= u->spec.restart_reset_after.count();
    u->restarts = ran_long ? 0 : record.restarts;
    adopt(*u, *instance, "adopted " + describe(record) + " after daemon restart");
  }
  // After the adoptions, so that every cgroup still in use is named by a record.
  for (const auto& leftover : runtime_.reclaim(loaded.records)) {
    spdlog::warn("{}", leftover);
    events_.publish("daemon.warning", {{"message", leftover}});
  }
  for (auto& [name, u] : units_) {
    if (u->instance || u->spec.pid_file.empty()) continue;
    const uint64_t generation = ++u->generation;
    auto instance = runtime_.adopt_existing(u->spec, exit_handler(*u, generation));
    if (instance) {
      adopt(
          *u, *instance,
          "adopted pid " + std::to_string((*instance)->record().pid) + " from " + u->spec.pid_file);
    } else {
      note_not_adopted(*u, instance.error());
    }
  }
}

void Supervisor::adopt(Unit& u, std::shared_ptr<Instance> instance, const std::string& why) {
  u.instance = std::move(instance);
  u.adopted = true;
  u.want_running = true;
  if (const auto saved = save_record(u); !saved) {
    spdlog::warn("{}: {}", u.spec.name, saved.error().message);
  }
  set_state(u, ServiceState::kUnknown, why);
  // It may have been adopted mid-start: give it the whole startup window to become healthy.
  watch_startup(u);
}

Status Supervisor::save_record(const Unit& u) {
  InstanceRecord record = u.instance->record();
  record.restarts = u.restarts;
  return store_.save(record);
}

void Supervisor::note_not_adopted(Unit& u, const Error& why) {
  std::error_code ec;
  if (!std::filesystem::exists(u.spec.pid_file, ec)) return;  // nothing runs yet: the usual case
  spdlog::info("{}: not adopting: {}", u.spec.name, why.message);
  u.log->note("not adopting: " + why.message);
}

void Supervisor::launch(Unit& u, const std::string& why, std::optional<unsigned> gpu) {
  u.backoff_timer->cancel();
  u.gpu.reset();  // an instance adopted below was not placed by us
  const uint64_t generation = ++u.generation;
  if (!u.spec.pid_file.empty()) {
    // Someone else may have started it since: adopting beats starting a second copy.
    auto existing = runtime_.adopt_existing(u.spec, exit_handler(u, generation));
    if (existing) {
      adopt(
          u, *existing,
          "adopted pid " + std::to_string((*existing)->record().pid) + " from " + u.spec.pid_file);
      return;
    }
    note_not_adopted(u, existing.error());
  }
  u.log->rotate_if_larger(kMaxLogBytes);
  u.last_probe.clear();
  LaunchOptions launch{store_.log_path(u.spec.name), {}, gpu};
  // The planner's choice, in the form CUDA programs honour.
  // NVML numbers GPUs in PCI bus order; CUDA does too once told to.
  if (gpu) {
    launch.extra_env.emplace_back("CUDA_DEVICE_ORDER", "PCI_BUS_ID");
    launch.extra_env.emplace_back("CUDA_VISIBLE_DEVICES", std::to_string(*gpu));
  }
  u.gpu = gpu;
  auto started = runtime_.start(u.spec, launch, exit_handler(u, generation));
  if (!started) {
    u.log->note("cannot start: " + started.error().message);
    set_state(u, ServiceState::kError, "cannot start: " + started.error().message);
    fail_waiters(u, started.error());
    return;
  }
  u.instance = std::move(*started);
  u.adopted = false;
  u.log->note("started " + describe(u.instance->record()) + " (" + why + ")");
  // Persisted before anyone hears it started: a daemon that dies now still finds it.
  if (const auto saved = save_record(u); !saved) {
    set_state(u, ServiceState::kStarting, why);
    on_failure(u, "cannot record the new instance: " + saved.error().message, true);
    return;
  }
  set_state(u, ServiceState::kStarting, why);
  watch_startup(u);
}

void Supervisor::watch_startup(Unit& u) {
  u.liveness_failures = 0;
  u.started_at = clock_.now();
  u.startup_deadline = u.started_at + u.spec.startup_timeout;
  u.deadline_timer->arm_at(
      u.startup_deadline, [this, name = u.spec.name, generation = u.generation] {
        Unit* unit = current(name, generation);
        if (unit == nullptr) return;
        std::string what =
            "not healthy within startup_timeout " + format_duration(unit->spec.startup_timeout);
        if (!unit->last_probe.empty()) what += " (last health check: " + unit->last_probe + ")";
        on_failure(*unit, what, true);
      });
  readiness_probe(u);
}

void Supervisor::readiness_probe(Unit& u) {
  const auto remaining = std::chrono::duration_cast<Millis>(u.startup_deadline - clock_.now());
  const Millis timeout = std::clamp(remaining, Millis(1), u.spec.health.timeout);
  if (!u.instance->launched()) {
    u.last_probe = "not started yet";
    const auto elapsed = std::chrono::duration_cast<Millis>(clock_.now() - u.started_at);
    u.probe_timer->arm_after(readiness_poll_delay(elapsed, u.spec.health.startup_poll_cap, false),
                             [this, name = u.spec.name, generation = u.generation] {
                               Unit* again = current(name, generation);
                               if (again != nullptr) readiness_probe(*again);
                             });
    return;
  }
  prober_.check(u.spec.health, timeout,
                guarded([this, name = u.spec.name, generation = u.generation](ProbeResult r) {
                  Unit* unit = current(name, generation);
                  if (unit == nullptr) return;
                  if (r.ok) {
                    on_ready(*unit, r.detail);
                    return;
                  }
                  unit->last_probe = r.detail;
                  const auto elapsed =
                      std::chrono::duration_cast<Millis>(clock_.now() - unit->started_at);
                  unit->probe_timer->arm_after(
                      readiness_poll_delay(elapsed, unit->spec.health.startup_poll_cap, r.refused),
                      [this, name, generation] {
                        Unit* again = current(name, generation);
                        if (again != nullptr) readiness_probe(*again);
                      });
                }));
}

void Supervisor::on_ready(Unit& u, const std::string& detail) {
  u.deadline_timer->cancel();
  u.last_probe.clear();
  u.ready_at = clock_.now();
  if (!u.adopted) {  // an adopted instance's start-up was not watched from its beginning
    u.reload_seconds = std::chrono::duration<double>(*u.ready_at - u.started_at).count();
  }
  set_state(u, ServiceState::kReady,
            u.spec.health.empty() ? "running (no health check configured)"
                                  : "health check passed (" + detail + ")");
  resolve_waiters(u);
  if (!u.spec.health.empty()) {
    u.probe_timer->arm_after(u.spec.health.interval,
                             [this, name = u.spec.name, generation = u.generation] {
                               Unit* unit = current(name, generation);
                               if (unit != nullptr) liveness_probe(*unit);
                             });
  }
}

void Supervisor::liveness_probe(Unit& u) {
  u.instance->refresh();
  prober_.check(
      u.spec.health, u.spec.health.timeout,
      guarded([this, name = u.spec.name, generation = u.generation](ProbeResult r) {
        Unit* unit = current(name, generation);
        if (unit == nullptr) return;
        if (r.ok) {
          unit->liveness_failures = 0;
          unit->last_probe.clear();
        } else {
          unit->last_probe = r.detail;
          if (++unit->liveness_failures >= unit->spec.health.failure_threshold) {
            on_failure(*unit,
                       "liveness check failed " + std::to_string(unit->liveness_failures) +
                           " times in a row (" + r.detail + ")",
                       true);
            return;
          }
        }
        unit->probe_timer->arm_after(unit->spec.health.interval, [this, name, generation] {
          Unit* again = current(name, generation);
          if (again != nullptr) liveness_probe(*again);
        });
      }));
}

void Supervisor::on_exit(const std::string& name, uint64_t generation, const ExitInfo& info) {
  Unit* u = current(name, generation);
  if (u == nullptr) return;  // an exit we asked for (stop bumped the generation) or stale
  u->last_exit = info.describe();
  u->log->note(describe(u->instance->record()) + " " + u->last_exit);
  if (info.planned) {
    // Its backend ended it on purpose (idle, budget): stopped, as if asked, and not restarted.
    ++u->generation;
    cancel_timers(*u);
    u->want_running = false;
    u->instance.reset();
    u->adopted = false;
    u->ready_at.reset();
    store_.remove(name);
    fail_waiters(*u, make_error(ErrorCode::kFailed, "'" + name + "' " + u->last_exit));
    set_state(*u, ServiceState::kStopped, u->last_exit);
    return;
  }
  const bool was_starting = u->state == ServiceState::kStarting;
  on_failure(*u, (was_starting ? u->last_exit + " while starting" : u->last_exit), !info.success());
}

void Supervisor::on_failure(Unit& u, const std::string& what, bool failed) {
  const uint64_t generation = ++u.generation;
  u.busy_holds = 0;  // the work on it is lost; its releases must not make the next one ready
  cancel_timers(u);
  const auto now = clock_.now();
  if (u.ready_at && now - *u.ready_at >= u.spec.restart_reset_after) u.restarts = 0;
  u.ready_at.reset();

  const bool policy_restarts = u.spec.restart == RestartPolicy::kAlways ||
                               (u.spec.restart == RestartPolicy::kOnFailure && failed);
  std::string reason = what;
  u.restart_delay.reset();
  if (u.want_running && policy_restarts && !shutting_down_) {
    if (u.restarts >= u.spec.restart_limit) {
      reason += "; gave up after " + std::to_string(u.restarts) + " restarts";
    } else {
      Millis delay = u.spec.restart_backoff;
      for (int i = 0; i < u.restarts && delay < u.spec.restart_backoff_max; ++i) delay *= 2;
      delay = std::min(delay, u.spec.restart_backoff_max);
      ++u.restarts;
      u.restart_delay = delay;
      reason += "; restarting in " + format_duration(delay) + " (restart " +
                std::to_string(u.restarts) + " of " + std::to_string(u.spec.restart_limit) + ")";
    }
  }
  Error error = make_error(ErrorCode::kFailed, "'" + u.spec.name + "' failed: " + what);
  error.context = last_lines(*u.log);
  fail_waiters(u, error);
  set_state(u, ServiceState::kError, reason);
  // Whatever is left of the tree goes before anything new starts: a crashed main process
  // may leave children holding VRAM; a hung one is still running.
  u.instance->stop(u.spec.stop_grace, guarded([this, name = u.spec.name, generation](StopOutcome) {
                     on_cleaned(name, generation);
                   }));
}

void Supervisor::on_cleaned(const std::string& name, uint64_t generation) {
  Unit* u = current(name, generation);
  if (u == nullptr) return;
  events_.publish("service.process_gone",
                  {{"service", name}, {"pid", u->instance->record().pid}, {"after", "failure"}});
  u->instance.reset();
  u->adopted = false;
  store_.remove(name);
  if (shutting_down_) return;
  if (!u->ensure_waiters.empty()) {
    begin_start(*u, "ensure requested");  // a person asked while it was failing
    return;
  }
  if (!u->restart_delay) return;
  u->backoff_timer->arm_after(*u->restart_delay, [this, name, generation] {
    Unit* unit = current(name, generation);
    if (unit == nullptr || !unit->want_running) return;
    unit->restart_delay.reset();
    begin_start(*unit, "restart " + std::to_string(unit->restarts) + " of " +
                           std::to_string(unit->spec.restart_limit) + " after failure");
  });
}

}  // namespace gpuvisor
