// Instances: adopting what a previous daemon left running, and launching new ones. Each becomes
// the unit's through the reducer (NewInstance sets the generation its exit belongs to).
#include <spdlog/spdlog.h>

#include <algorithm>
#include <filesystem>
#include <map>

#include "core/bytes.h"
#include "supervisor/supervisor.h"
#include "supervisor/unit.h"

namespace gpuvisor {

using namespace lifecycle;

namespace {
constexpr size_t kMaxLogBytes = 32 * 1024 * 1024;
}  // namespace

ExitCallback Supervisor::exit_handler(const Unit& u) {
  return guarded(
      [this, name = u.spec.name, generation = u.life.instance_generation](const ExitInfo& info) {
        if (Unit* unit = find(name)) {
          apply(*unit, input::Exited{generation, info.describe(), info.success(), info.planned,
                                     info.engine_unreachable});
        }
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
    apply(*u, input::NewInstance{});
    auto instance = runtime_.adopt(record, &u->spec, exit_handler(*u));
    if (!instance) {
      spdlog::info("{}: previous instance not adopted: {}", record.service,
                   instance.error().message);
      runtime_.discard(record);
      store_.remove(record.service);
      apply(*u, input::NotAdopted{instance.error().message});
      continue;
    }
    // The restart budget goes on where the last daemon left it, unless this instance has
    // already run long enough to have reset it.
    const bool ran_long =
        clock_.unix_ms() - record.started_unix_ms >= u->spec.restart_reset_after.count();
    adopt(
        *u, *instance,
        "adopted " + describe(record) + (record.asleep ? " asleep" : "") + " after daemon restart",
        ran_long ? 0 : record.restarts, record.asleep);
  }
  // After the adoptions, so that every cgroup still in use is named by a record.
  for (const auto& leftover : runtime_.reclaim(loaded.records)) {
    spdlog::warn("{}", leftover);
    events_.publish("daemon.warning", {{"message", leftover}});
  }
  resume_pending_restarts();
  for (auto& [name, u] : units_) {
    // Not while a restart is pending: its backoff stands until it is due.
    if (!u->instance && u->spec.runtime == RuntimeKind::kExternal && !u->life.restart_pending) {
      claim(*u);
    }
  }
  for (auto& [name, u] : units_) {
    if (u->instance || u->spec.pid_file.empty()) continue;
    apply(*u, input::NewInstance{});
    auto instance = runtime_.adopt_existing(u->spec, exit_handler(*u));
    if (instance) {
      adopt(
          *u, *instance,
          "adopted pid " + std::to_string((*instance)->record().pid) + " from " + u->spec.pid_file);
    } else {
      note_not_adopted(*u, instance.error());
    }
  }
}

void Supervisor::resume_pending_restarts() {
  for (const auto& [name, pending] : store_.load_pending_restarts()) {
    Unit* u = find(name);
    if (u == nullptr || u->instance) {  // no longer configured, or its new instance was adopted
      (void)store_.forget_pending_restart(name);
      continue;
    }
    const SteadyTime due = clock_.now() + Millis(pending.due_unix_ms - clock_.unix_ms());
    apply(*u, input::ResumeRestart{pending.restarts, due});
  }
}

void Supervisor::adopt(Unit& u, std::shared_ptr<Instance> instance, const std::string& why,
                       std::optional<int> restarts, bool asleep) {
  u.instance = std::move(instance);
  apply(u, input::Adopted{why, restarts, asleep});
  if (const auto saved = save_record(u); !saved) {
    spdlog::warn("{}: {}", u.spec.name, saved.error().message);
  }
}

Status Supervisor::save_record(const Unit& u) {
  InstanceRecord record = u.instance->record();
  record.restarts = u.life.restarts;
  record.asleep = u.life.state == ServiceState::kSleeping;
  return store_.save(record);
}

// An external server that already runs (systemd started Ollama with a model loaded) is the
// service's own, memory and all, before any plan counts it as someone else's. Holding less than
// half its vram_mb, it is taken as unloaded: asleep, and woken through placement.
bool Supervisor::claim(Unit& u) {
  apply(u, input::NewInstance{});
  auto found = runtime_.adopt_existing(u.spec, exit_handler(u));
  if (!found) return false;
  const pid_t pid = (*found)->record().pid;
  std::string holds;
  bool asleep = false;
  if (const auto held = held_now(**found); held && u.spec.vram_mb > 0) {
    asleep = *held < static_cast<uint64_t>(u.spec.vram_mb) * (1ULL << 20) / 2;
    holds = ", holding " + format_bytes(*held) + (asleep ? ": not loaded" : "");
  }
  adopt(u, *found, "claimed its running server pid " + std::to_string(pid) + holds, std::nullopt,
        asleep);
  return true;
}

std::optional<uint64_t> Supervisor::held_now(const Instance& instance) const {
  if (gpus_ == nullptr || !gpus_->available()) return std::nullopt;
  const auto snapshot = gpus_->snapshot();
  if (!snapshot) return std::nullopt;
  const std::vector<pid_t> pids = instance.pids();
  std::map<unsigned, uint64_t> held;
  for (const auto& p : snapshot->processes) {
    if (std::find(pids.begin(), pids.end(), p.pid) != pids.end())
      held[p.gpu] += p.used_bytes.value_or(0);
  }
  uint64_t most = 0;
  for (const auto& [gpu, bytes] : held) most = std::max(most, bytes);
  return most;
}

void Supervisor::note_not_adopted(Unit& u, const Error& why) {
  std::error_code ec;
  if (!std::filesystem::exists(u.spec.pid_file, ec)) return;  // nothing runs yet: the usual case
  spdlog::info("{}: not adopting: {}", u.spec.name, why.message);
  u.log->note("not adopting: " + why.message);
}

void Supervisor::launch(Unit& u, const std::string& why, const std::vector<unsigned>& gpus) {
  u.gpus.clear();  // an instance adopted below was not placed by us
  apply(u, input::NewInstance{});
  if (!u.spec.pid_file.empty()) {
    // Someone else may have started it since: adopting beats starting a second copy.
    auto existing = runtime_.adopt_existing(u.spec, exit_handler(u));
    if (existing) {
      adopt(
          u, *existing,
          "adopted pid " + std::to_string((*existing)->record().pid) + " from " + u.spec.pid_file);
      return;
    }
    note_not_adopted(u, existing.error());
  }
  u.log->rotate_if_larger(kMaxLogBytes);
  LaunchOptions launch{store_.log_path(u.spec.name), {}, gpus};
  // The planner's choice, in the form CUDA programs honour.
  // NVML numbers GPUs in PCI bus order; CUDA does too once told to.
  if (!gpus.empty()) {
    std::string visible;
    for (const unsigned g : gpus) visible += (visible.empty() ? "" : ",") + std::to_string(g);
    launch.extra_env.emplace_back("CUDA_DEVICE_ORDER", "PCI_BUS_ID");
    launch.extra_env.emplace_back("CUDA_VISIBLE_DEVICES", visible);
  }
  u.gpus = gpus;
  auto started = runtime_.start(u.spec, launch, exit_handler(u));
  if (!started) {
    apply(u, input::LaunchFailed{started.error()});
    return;
  }
  u.instance = std::move(*started);
  u.log->note("started " + describe(u.instance->record()) + " (" + why + ")");
  // Persisted before anyone hears it started: a daemon that dies now still finds it.
  const auto saved = save_record(u);
  apply(u, input::Launched{
               why, saved ? std::nullopt : std::optional<std::string>(saved.error().message)});
}

}  // namespace gpuvisor
