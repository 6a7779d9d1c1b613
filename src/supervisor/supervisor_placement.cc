// Starting a service where it fits: snapshot, plan, evict, wait for the VRAM, start. One
// placement at a time, so two plans never evict each other's services.
#include <spdlog/spdlog.h>

#include <algorithm>
#include <boost/asio/post.hpp>

#include "runtime/proc.h"
#include "supervisor/supervisor.h"
#include "supervisor/unit.h"

namespace gpuvisor {

namespace {

constexpr Millis kFirstMemoryPoll{1};
// NVML reports freed memory a moment after the process is gone; 4 ms bounds that lag.
constexpr Millis kMaxMemoryPoll{4};

constexpr uint64_t kMiB = 1ULL << 20;
constexpr int kMaxEvictionRounds = 3;

// The GPU a holder holds the most on, and how much.
std::pair<unsigned, uint64_t> most_held(const std::map<unsigned, uint64_t>& by_gpu) {
  return *std::max_element(by_gpu.begin(), by_gpu.end(),
                           [](const auto& a, const auto& b) { return a.second < b.second; });
}

// With no plan to choose (no NVML, no vram_mb), a service runs on the GPUs it is pinned to when
// they are exactly as many as it spans; otherwise it is left to see them all.
std::vector<unsigned> pinned_set(const ServiceSpec& spec) {
  return spec.pinned_gpus.size() == spec.gpu_count ? spec.pinned_gpus : std::vector<unsigned>{};
}

}  // namespace

void Supervisor::set_gpu_inventory(GpuInventory* inventory, bool preempt_busy_lower) {
  gpus_ = inventory;
  preempt_busy_lower_ = preempt_busy_lower;
  for (const auto& [name, bytes] : store_.load_measured_vram()) {
    if (Unit* u = find(name)) u->measured_bytes = bytes;
  }
}

void Supervisor::begin_start(Unit& u, const std::string& why) {
  // A running external server is already in place: claimed, it needs a plan only to wake.
  if (u.spec.runtime == RuntimeKind::kExternal && !u.instance && claim(u) &&
      u.life.state != ServiceState::kSleeping) {
    return;
  }
  // A remote service holds no VRAM here; the others need a placement once VRAM is known.
  if (gpus_ == nullptr || !gpus_->available() || u.spec.vram_mb <= 0 ||
      u.spec.runtime == RuntimeKind::kRemote) {
    start_placed(u, why, pinned_set(u.spec));
    return;
  }
  const auto queued = std::find_if(placement_queue_.begin(), placement_queue_.end(),
                                   [&](const auto& q) { return q.first == u.spec.name; });
  if (queued == placement_queue_.end()) placement_queue_.emplace_back(u.spec.name, why);
  apply(u, lifecycle::input::Queued{why});
  if (!placement_) place_next();
}

// Started where the plan put it: launched, or woken where it sleeps.
void Supervisor::start_placed(Unit& u, const std::string& why, const std::vector<unsigned>& gpus) {
  if (u.instance && u.life.state == ServiceState::kSleeping) {
    apply(u, lifecycle::input::Wake{why});
    return;
  }
  launch(u, why, gpus);
}

void Supervisor::observe(const GpuSnapshot& snapshot, const Ownership& owners) {
  // Per GPU: a service spanning two holds its share on each, and vram_mb is per GPU.
  std::map<std::string, std::map<unsigned, uint64_t>> held;
  for (const auto& p : snapshot.processes) {
    const Holder* owner = owners.find(p.pid);
    if (owner != nullptr && owner->kind == HolderKind::kService)
      held[owner->name][p.gpu] += p.used_bytes.value_or(0);
  }
  bool grew = false;
  for (const auto& [name, by_gpu] : held) {
    Unit* u = find(name);
    const uint64_t bytes = most_held(by_gpu).second;
    if (u != nullptr && bytes > u->measured_bytes) {
      u->measured_bytes = bytes;
      grew = true;
    }
  }
  if (!grew) return;
  std::map<std::string, uint64_t> all;
  for (const auto& [name, u] : units_) {
    if (u->measured_bytes > 0) all[name] = u->measured_bytes;
  }
  if (auto saved = store_.save_measured_vram(all); !saved) {
    spdlog::warn("cannot save VRAM measurements: {}", saved.error().message);
  }
}

Ownership Supervisor::ownership() {
  if (owners_ != nullptr) return owners_->snapshot();
  std::map<std::string, std::vector<pid_t>> services;
  for (const auto& [pid, name] : service_pids()) services[name].push_back(pid);
  Ownership out;
  for (const auto& [name, pids] : services) out.add(Holder{HolderKind::kService, name}, pids);
  return out;
}

namespace {

// A lease is memory spoken for: what it reserves on its GPU, of which its PID may already hold
// part. Never evicted; a refusal says until when it is reserved.
PlanService lease_entry(const Holder& lease, const std::map<unsigned, uint64_t>* held) {
  PlanService s;
  s.name = lease.owner();
  s.label = lease.label();
  s.running = true;
  s.gpus = {lease.gpu};
  s.need_bytes = lease.reserved_bytes;
  if (held != nullptr) {
    const auto on = held->find(lease.gpu);
    if (on != held->end()) s.held_bytes = on->second;
  }
  s.unevictable = true;
  s.unevictable_why = "reserved";
  return s;
}

}  // namespace

Result<unsigned> Supervisor::fit_reservation(uint64_t bytes, std::optional<unsigned> gpu) {
  if (gpus_ == nullptr || !gpus_->available()) {
    return make_error(ErrorCode::kUnavailable,
                      "no GPU inventory: a lease needs NVML to know what is free");
  }
  auto snapshot = gpus_->snapshot();
  if (!snapshot) return snapshot.error();
  const Plan plan = plan_reserve(plan_input(*snapshot, ownership()), bytes, gpu);
  if (!plan.ok) return make_error(ErrorCode::kConflict, plan.reason);
  return plan.gpus.front();
}

PlanInput Supervisor::plan_input(const GpuSnapshot& snapshot, const Ownership& owners) const {
  static_assert(Unit::kUseHalfLifeSeconds == kUseHalfLifeSeconds,
                "the planner reads recent_uses with the half-life it is counted with");
  PlanInput in;
  in.preempt_busy_lower = preempt_busy_lower_;
  in.now_ms = clock_.unix_ms();  // the clock ensures set last_used_ms from
  for (const auto& d : snapshot.devices)
    in.devices.push_back({d.index, d.total_bytes, d.free_bytes});
  std::map<std::string, std::map<unsigned, uint64_t>> held;  // owner -> gpu -> bytes
  for (const auto& p : snapshot.processes) {
    if (const Holder* owner = owners.find(p.pid); owner != nullptr) {
      held[owner->owner()][p.gpu] += p.used_bytes.value_or(0);
    } else {
      const auto st = read_proc_stat(p.pid);
      in.external.push_back({p.gpu, p.pid, st ? st->comm : "", p.used_bytes.value_or(0)});
    }
  }
  for (const auto& [name, u] : units_) {
    PlanService s;
    s.name = name;
    s.priority = u->spec.priority;
    s.need_bytes =
        std::max(static_cast<uint64_t>(std::max(0LL, u->spec.vram_mb)) * kMiB, u->measured_bytes);
    s.running = u->instance != nullptr && holds_vram(u->life.state) &&
                u->life.state != ServiceState::kSleeping;
    s.busy = u->life.state == ServiceState::kBusy;
    s.last_used_ms = u->last_used_ms;
    s.gpu_count = u->spec.gpu_count;
    s.pinned_gpus = u->spec.pinned_gpus;
    s.keep = u->keep_for_phase > 0;
    s.sleeps = !u->spec.sleep.empty();
    s.unevictable = u->spec.runtime == RuntimeKind::kExternal && !s.sleeps;
    s.starting_for_request = u->life.state == ServiceState::kStarting && !u->waiters.empty();
    s.recent_uses = u->recent_uses(clock_.now());
    s.reload_seconds = u->life.reload_seconds;
    s.wake_seconds = u->life.wake_seconds;
    s.residual_bytes = u->life.residual_bytes;
    s.gpus = u->gpus;
    if (const auto h = held.find(name); h != held.end()) {
      // Where it really holds memory counts too (adopted ones were not put anywhere); per GPU,
      // the most it holds on one (a model split evenly holds about the same on each).
      for (const auto& [gpu, bytes] : h->second) {
        if (std::find(s.gpus.begin(), s.gpus.end(), gpu) == s.gpus.end()) s.gpus.push_back(gpu);
        s.held_bytes = std::max(s.held_bytes, bytes);
      }
      std::sort(s.gpus.begin(), s.gpus.end());
    }
    s.sleeping = u->instance != nullptr && u->life.state == ServiceState::kSleeping;
    if (s.running && s.gpus.empty() && s.need_bytes > 0 && in.devices.size() == 1) {
      s.gpus = {in.devices.front().index};  // not holding memory yet, and there is only one GPU
    }
    in.services.push_back(std::move(s));
  }
  // A worker holding memory is placed like a service that runs: evictable when idle, at its
  // plugin's priority, and named as a worker in a refusal. One an app registered is memory
  // that the plan counts and never frees.
  for (const auto& holder : owners.holders()) {
    if (holder.kind == HolderKind::kService) continue;
    const auto h = held.find(holder.owner());
    if (holder.kind == HolderKind::kLease) {
      in.services.push_back(lease_entry(holder, h == held.end() ? nullptr : &h->second));
      continue;
    }
    if (h == held.end()) continue;
    PlanService s;
    s.name = holder.owner();
    s.label = holder.label();
    s.priority = holder.priority;
    s.running = true;
    s.busy = holder.busy;
    const auto [gpu, bytes] = most_held(h->second);
    s.gpus = {gpu};
    s.held_bytes = bytes;
    s.need_bytes = s.held_bytes;
    if (holder.kind == HolderKind::kOutsideWorker) {
      s.unevictable = true;
      s.unevictable_why = "registered by its app, not gpuvisor's to stop";
    }
    in.services.push_back(std::move(s));
  }
  return in;
}

Millis Supervisor::evict(const std::vector<Eviction>& victims, const Ownership& owners,
                         const std::string& requester, std::vector<pid_t>& gone) {
  Millis longest{0};
  for (const auto& [victim, sleep] : victims) {
    std::optional<Millis> grace;
    if (Unit* v = find(victim)) {
      if (!v->instance) continue;
      grace = v->spec.stop_grace;
      // An external server is freed only by its sleep hook, whatever the plan says: asleep, it
      // stays the service's, its residual counted where a stop would lose track of it.
      const bool external = v->spec.runtime == RuntimeKind::kExternal;
      if ((sleep || external) && !v->spec.sleep.empty() &&
          v->life.state != ServiceState::kSleeping) {
        apply(*v, lifecycle::input::Sleep{requester});
        // Put to sleep, its server keeps running and may keep a residual (vLLM's level-1
        // sleep does): enough free memory decides, not its PIDs leaving NVML's list. A hook
        // that fails is followed by a stop.
        longest = std::max(longest, v->spec.sleep.timeout + *grace);
        continue;
      }
      apply(*v, lifecycle::input::Evict{requester});
    } else if (const Holder* holder = owners.find(victim); holder != nullptr && owners_) {
      // Busy or gone since the plan was made: the memory poll finds out what is free.
      grace = owners_->evict(*holder, requester);
    }
    if (!grace) continue;
    const auto pids = owners.pids_of(victim);
    gone.insert(gone.end(), pids.begin(), pids.end());
    longest = std::max(longest, *grace);
  }
  return longest;
}

Result<Plan> Supervisor::plan(const std::string& name) {
  const Unit* u = find(name);
  if (u == nullptr) return not_found(name);
  if (gpus_ == nullptr) return make_error(ErrorCode::kUnavailable, "no GPU inventory");
  if (u->spec.vram_mb <= 0) {
    Plan direct;
    direct.ok = true;
    direct.gpus = pinned_set(u->spec);
    direct.reason = name + " declares no vram_mb: ensure starts it without placement";
    return direct;
  }
  auto snapshot = gpus_->snapshot();
  if (!snapshot) return snapshot.error();
  return plan_ensure(plan_input(*snapshot, ownership()), name);
}

void Supervisor::place_next() {
  while (!placement_queue_.empty() && !placement_) {
    const auto [name, why] = placement_queue_.front();
    placement_queue_.pop_front();
    Unit* u = find(name);
    // Stopped, or already started by someone else, since it queued: nothing to place.
    const bool asleep = u != nullptr && u->life.state == ServiceState::kSleeping;
    if (u == nullptr || !u->life.want_running || (u->instance && !asleep) || shutting_down_) {
      leave_queue(name, false);
      continue;
    }
    auto snapshot = gpus_->snapshot();
    if (!snapshot) {
      // VRAM unknown right now: start it as if there were no inventory, and say so.
      spdlog::warn("{}: starting without placement: {}", name, snapshot.error().message);
      start_placed(*u, why + " (GPU inventory failed: " + snapshot.error().message + ")",
                   pinned_set(u->spec));
      continue;
    }
    const Ownership owners = ownership();
    observe(*snapshot, owners);
    const Plan plan = plan_ensure(plan_input(*snapshot, owners), name);
    if (!plan.ok && !plan.waiting_for.empty()) {
      park(*u, why, plan);  // only busy services are in the way: it waits its turn
      continue;
    }
    leave_queue(name, plan.ok);
    // Every decision is an event: who goes, for whom, where, or why nothing can.
    std::vector<std::string> victims, sleepers;
    for (const auto& e : plan.evict) {
      victims.push_back(e.name);
      if (e.sleep) sleepers.push_back(e.name);
    }
    events_.publish(plan.ok ? "plan.decided" : "plan.refused",
                    {{"service", name},
                     {"gpu", plan.ok ? nlohmann::json(plan.gpus.front()) : nlohmann::json(nullptr)},
                     {"gpus", plan.gpus},
                     {"evict", victims},
                     {"sleep", sleepers},
                     {"wake", plan.wake},
                     {"reason", plan.reason}});
    if (!plan.ok) {
      apply(*u, lifecycle::input::PlacementFailed{make_error(ErrorCode::kConflict, plan.reason)});
      continue;
    }
    if (plan.evict.empty()) {
      start_placed(*u, why + "; " + plan.reason, plan.gpus);
      continue;
    }
    // Evict, then wait until NVML shows the victims gone and the memory back.
    std::vector<pid_t> gone;
    const Millis longest_grace = evict(plan.evict, owners, name, gone);
    apply(*u, lifecycle::input::AwaitingMemory{plan.reason});
    placement_ = Placement{name,
                           plan.gpus,
                           std::move(gone),
                           clock_.now() + longest_grace + config_.daemon.vram_release_timeout,
                           kFirstMemoryPoll,
                           why + "; " + plan.reason};
    await_memory();
  }
}

void Supervisor::await_memory() {
  Placement& p = *placement_;
  Unit* u = find(p.name);
  if (u == nullptr || !u->life.want_running || shutting_down_) {
    placement_.reset();
    place_next();
    return;
  }
  auto snapshot = gpus_->snapshot();
  if (snapshot) {
    const bool victims_gone = std::none_of(
        snapshot->processes.begin(), snapshot->processes.end(), [&](const GpuProcess& g) {
          return std::find(p.gone.begin(), p.gone.end(), g.pid) != p.gone.end();
        });
    // Fits once a plan on those GPUs needs no more eviction.
    const Ownership owners = ownership();
    PlanInput in = plan_input(*snapshot, owners);
    for (auto& s : in.services) {
      if (s.name == p.name) s.pinned_gpus = p.gpus;
    }
    const Plan again = plan_ensure(in, p.name);
    if (victims_gone && again.ok && again.evict.empty()) {
      const Placement done = std::move(p);
      placement_.reset();
      start_placed(*u, done.why, done.gpus);
      place_next();
      return;
    }
    // Everything evicted is down, yet it does not fit: a victim asleep kept more than its last
    // residual said (or nothing was known of it). The plan, now seeing it, goes one step further.
    if (victims_gone && again.ok && !evictions_settling(p.name) && p.rounds < kMaxEvictionRounds) {
      ++p.rounds;
      const Millis grace = evict(again.evict, owners, p.name, p.gone);
      p.deadline = std::max(p.deadline, clock_.now() + grace + config_.daemon.vram_release_timeout);
      apply(*u, lifecycle::input::AwaitingMemory{again.reason});
    }
  }
  if (clock_.now() >= p.deadline) {
    std::string where;
    for (const unsigned g : p.gpus) where += (where.empty() ? "" : ", ") + std::to_string(g);
    const std::string what = "GPU " + where + " memory was not freed in time after evicting for " +
                             p.name + (snapshot ? "" : " (" + snapshot.error().message + ")");
    placement_.reset();
    apply(*u, lifecycle::input::PlacementFailed{make_error(ErrorCode::kTimeout, what)});
    place_next();
    return;
  }
  placement_timer_->arm_after(p.interval, [this] {
    if (placement_) await_memory();
  });
  p.interval = std::min(p.interval * 2, kMaxMemoryPoll);
}

// A victim still on its way down, or asleep with its memory still falling.
bool Supervisor::evictions_settling(const std::string& requester) const {
  return std::any_of(units_.begin(), units_.end(), [&](const auto& entry) {
    const Unit& v = *entry.second;
    return (v.life.state == ServiceState::kStopping && v.life.evicted_for == requester) ||
           (v.life.state == ServiceState::kSleeping && v.life.last_reading.has_value());
  });
}

void Supervisor::victim_stopped() {
  // The moment a victim is gone is the moment to look again, not the next poll.
  if (!placement_) return;
  placement_->interval = kFirstMemoryPoll;
  placement_timer_->cancel();
  await_memory();
}

void Supervisor::ensure_phase(int phase, Millis timeout,
                              std::function<void(Result<std::vector<ServiceView>>)> done) {
  std::vector<std::string> members;
  for (const auto& spec : config_.services) {
    if (std::find(spec.phases.begin(), spec.phases.end(), phase) != spec.phases.end()) {
      members.push_back(spec.name);
    }
  }
  if (members.empty()) {
    boost::asio::post(executor_, [done = std::move(done), phase] {
      done(
          make_error(ErrorCode::kNotFound, "no service belongs to phase " + std::to_string(phase)));
    });
    return;
  }
  struct Progress {
    size_t left = 0;
    std::optional<Error> error;
    std::vector<std::string> members;
    std::function<void(Result<std::vector<ServiceView>>)> done;
  };
  auto progress =
      std::make_shared<Progress>(Progress{members.size(), {}, members, std::move(done)});
  for (const auto& name : members) ++find(name)->keep_for_phase;
  for (const auto& name : members) {
    ensure(name, timeout, guarded([this, progress](Result<ServiceView> result) {
             if (!result && !progress->error) progress->error = result.error();
             if (--progress->left > 0) return;
             std::vector<ServiceView> views;
             for (const auto& m : progress->members) {
               Unit* u = find(m);
               --u->keep_for_phase;
               views.push_back(view(*u));
             }
             if (progress->error) {
               progress->done(*progress->error);
             } else {
               progress->done(views);
             }
           }));
  }
}

}  // namespace gpuvisor
