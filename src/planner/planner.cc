#include "planner/planner.h"

#include <algorithm>
#include <climits>
#include <optional>
#include <tuple>

#include "core/bytes.h"

namespace gpuvisor {

namespace {

bool on_gpu(const PlanService& s, unsigned gpu) {
  return std::find(s.gpus.begin(), s.gpus.end(), gpu) != s.gpus.end();
}

bool allowed_on(const PlanService& s, unsigned gpu) {
  return s.pinned_gpus.empty() ||
         std::find(s.pinned_gpus.begin(), s.pinned_gpus.end(), gpu) != s.pinned_gpus.end();
}

// "0,1"
std::string gpu_list(const std::vector<unsigned>& gpus) {
  std::string out;
  for (const unsigned g : gpus) out += (out.empty() ? "" : ",") + std::to_string(g);
  return out;
}

// "GPU 0" or "GPUs 0,1"
std::string gpus_said(const std::vector<unsigned>& gpus) {
  return (gpus.size() == 1 ? "GPU " : "GPUs ") + gpu_list(gpus);
}

struct Option {
  unsigned gpu = 0;
  std::vector<const PlanService*> victims;
  int64_t free_after = 0;
  // Lower is better: the most important victim, then how many, then how much is thrown away.
  std::tuple<int, size_t, uint64_t, unsigned> cost() const {
    int top = INT_MIN;
    uint64_t bytes = 0;
    for (const auto* v : victims) {
      top = std::max(top, v->priority);
      bytes += std::max(v->need_bytes, v->held_bytes);
    }
    return {top, victims.size(), bytes, gpu};
  }
};

// What evicting s gives back: what it holds now and what it was still going to take.
uint64_t freed_by(const PlanService& s) {
  return std::max(s.need_bytes, s.held_bytes);
}

// Reload time that keeping s saves, per GiB it holds: the greedy-dual-size-frequency idea, so
// a rarely used, quick-to-load service goes before a popular one that takes minutes to load.
double keep_value(const PlanService& s) {
  const double gib = static_cast<double>(std::max<uint64_t>(freed_by(s), 1)) / (1ULL << 30);
  return s.recent_uses * s.reload_seconds / gib;
}

bool may_evict(const PlanService& victim, const PlanService& requester, bool preempt_busy) {
  if (victim.keep || victim.unevictable || victim.priority > requester.priority) return false;
  if (victim.starting_for_request && victim.priority >= requester.priority) return false;
  if (victim.busy) return preempt_busy && victim.priority < requester.priority;
  return true;
}

const std::string& said(const PlanService& s) {
  return s.label.empty() ? s.name : s.label;
}

// Why the memory on one GPU cannot be had: services that may not go, external holders.
std::string blockers(const PlanInput& in, const PlanService& target, unsigned gpu) {
  std::vector<std::string> parts;
  for (const auto& s : in.services) {
    if (!s.running || !on_gpu(s, gpu) || s.name == target.name) continue;
    if (s.priority > target.priority) {
      parts.push_back(said(s) + " (priority " + std::to_string(s.priority) + " > " +
                      std::to_string(target.priority) + ", " + format_bytes(freed_by(s)) + ")");
    } else if (s.keep) {
      parts.push_back(said(s) + " (same phase, " + format_bytes(freed_by(s)) + ")");
    } else if (s.unevictable) {
      const std::string why =
          s.unevictable_why.empty() ? "external, no sleep hook" : s.unevictable_why;
      parts.push_back(said(s) + " (" + why + ", " + format_bytes(freed_by(s)) + ")");
    } else if (s.starting_for_request && s.priority >= target.priority) {
      parts.push_back(said(s) + " (starting for a waiting ensure, " + format_bytes(freed_by(s)) +
                      ")");
    } else if (!may_evict(s, target, in.preempt_busy_lower)) {
      parts.push_back(said(s) + " (busy, " + format_bytes(freed_by(s)) + ")");
    }
  }
  for (const auto& e : in.external) {
    if (e.gpu != gpu) continue;
    parts.push_back("external pid " + std::to_string(e.pid) + (e.name.empty() ? "" : " " + e.name) +
                    " (" + format_bytes(e.bytes) + ")");
  }
  if (parts.empty()) return "";
  std::string out = "; in the way: ";
  for (size_t i = 0; i < parts.size(); ++i) out += (i == 0 ? "" : ", ") + parts[i];
  return out;
}

// "putting a to sleep, stopping b, c"
std::string evictions(const std::vector<const PlanService*>& victims) {
  std::string sleeping, stopping;
  for (const auto* v : victims) {
    std::string& list = v->sleeps ? sleeping : stopping;
    list += (list.empty() ? "" : ", ") + said(*v);
  }
  std::string out = sleeping.empty() ? "" : "putting " + sleeping + " to sleep";
  if (!stopping.empty()) out += (out.empty() ? "" : ", ") + std::string("stopping ") + stopping;
  return out;
}

// Why no GPU could hold the service even after evicting everything: none at all, the pinned one
// missing, or all too small. Empty when some GPU is large enough.
std::string why_no_gpu_fits(const PlanInput& in, const PlanService& target) {
  const std::string& service = target.name;
  if (in.devices.empty()) return "no GPU to place " + service + " on";
  uint64_t largest = 0;
  for (const auto& d : in.devices) {
    if (allowed_on(target, d.index)) largest = std::max(largest, d.total_bytes);
  }
  const bool pinned = !target.pinned_gpus.empty();
  const std::string where = pinned ? gpus_said(target.pinned_gpus) : "";
  if (pinned && largest == 0) return service + " is pinned to " + where + ", which does not exist";
  const std::string need = service + " needs " + format_bytes(target.need_bytes);
  if (target.need_bytes > largest) {
    return need + " but " + (where.empty() ? "the largest GPU" : where) + " has " +
           format_bytes(largest);
  }
  return "";
}

// The cheapest way to make room for `target` on `d`, or nothing, with why added to `refusals`.
std::optional<Option> option_on(const PlanInput& in, const PlanService& target, const PlanDevice& d,
                                std::string& refusals) {
  // Services still loading will take what they do not hold yet: that memory is spoken for.
  int64_t free = static_cast<int64_t>(d.free_bytes);
  std::vector<const PlanService*> candidates;
  for (const auto& s : in.services) {
    if (!s.running || !on_gpu(s, d.index) || s.name == target.name) continue;
    free -= static_cast<int64_t>(s.need_bytes > s.held_bytes ? s.need_bytes - s.held_bytes : 0);
    if (may_evict(s, target, in.preempt_busy_lower)) candidates.push_back(&s);
  }
  std::stable_sort(candidates.begin(), candidates.end(), [](const auto* a, const auto* b) {
    const double va = keep_value(*a), vb = keep_value(*b);
    const bool stop_a = !a->sleeps, stop_b = !b->sleeps;
    return std::tie(a->priority, stop_a, va, a->last_used_ms) <
           std::tie(b->priority, stop_b, vb, b->last_used_ms);
  });
  const auto need_bytes = static_cast<int64_t>(target.need_bytes);
  Option option{d.index, {}, free};
  for (const auto* c : candidates) {
    if (option.free_after >= need_bytes) break;
    option.victims.push_back(c);
    option.free_after += static_cast<int64_t>(freed_by(*c));
  }
  if (option.free_after < need_bytes) {
    int64_t could = free;
    for (const auto* c : candidates) could += static_cast<int64_t>(freed_by(*c));
    refusals += std::string(refusals.empty() ? "" : "; ") + "GPU " + std::to_string(d.index) +
                ": " + format_bytes(static_cast<uint64_t>(std::max<int64_t>(free, 0))) +
                " free, at most " +
                format_bytes(static_cast<uint64_t>(std::max<int64_t>(could, 0))) +
                " after evicting what may go" + blockers(in, target, d.index);
    return std::nullopt;
  }
  // Keep what turned out not to be needed, the most valuable first.
  for (size_t i = option.victims.size(); i-- > 0;) {
    const auto back = static_cast<int64_t>(freed_by(*option.victims[i]));
    if (option.free_after - back >= need_bytes) {
      option.free_after -= back;
      option.victims.erase(option.victims.begin() + static_cast<std::ptrdiff_t>(i));
    }
  }
  return option;
}

// What is free on d for a newcomer: NVML's free memory less what loading services will take.
int64_t spoken_for_free(const PlanInput& in, const PlanDevice& d) {
  int64_t free = static_cast<int64_t>(d.free_bytes);
  for (const auto& s : in.services) {
    if (s.running && on_gpu(s, d.index) && s.need_bytes > s.held_bytes)
      free -= static_cast<int64_t>(s.need_bytes - s.held_bytes);
  }
  return std::max<int64_t>(free, 0);
}

// Everything that holds (or will hold) memory on gpu, biggest first: "llm (15.6 GiB), ...".
std::string holders_on(const PlanInput& in, unsigned gpu) {
  std::vector<std::pair<uint64_t, std::string>> all;
  for (const auto& s : in.services) {
    if (s.running && on_gpu(s, gpu)) all.emplace_back(freed_by(s), said(s));
  }
  for (const auto& e : in.external) {
    if (e.gpu == gpu) {
      all.emplace_back(
          e.bytes, "external pid " + std::to_string(e.pid) + (e.name.empty() ? "" : " " + e.name));
    }
  }
  std::stable_sort(all.begin(), all.end(),
                   [](const auto& a, const auto& b) { return a.first > b.first; });
  std::string out;
  for (const auto& [bytes, who] : all)
    out += (out.empty() ? "" : ", ") + who + " (" + format_bytes(bytes) + ")";
  return out.empty() ? "" : "; in the way: " + out;
}

}  // namespace

Plan plan_reserve(const PlanInput& in, uint64_t bytes, std::optional<unsigned> pinned_gpu) {
  Plan plan;
  const std::string want = "cannot reserve " + format_bytes(bytes);
  std::optional<std::pair<int64_t, unsigned>> best;  // spare after the lease, gpu
  std::string refusals;
  for (const auto& d : in.devices) {
    if (pinned_gpu && *pinned_gpu != d.index) continue;
    const int64_t free = spoken_for_free(in, d);
    const int64_t spare = free - static_cast<int64_t>(bytes);
    if (spare >= 0) {
      if (!best || spare < best->first) best = {spare, d.index};
      continue;
    }
    refusals += std::string(refusals.empty() ? "" : "; ") + "GPU " + std::to_string(d.index) +
                ": " + format_bytes(static_cast<uint64_t>(free)) + " free" +
                holders_on(in, d.index);
  }
  if (best) {
    plan.ok = true;
    plan.gpus = {best->second};
    plan.reason = "reserve " + format_bytes(bytes) + " on GPU " + std::to_string(best->second);
  } else if (refusals.empty()) {
    plan.reason =
        want + ": " + (pinned_gpu ? "there is no GPU " + std::to_string(*pinned_gpu) : "no GPU");
  } else {
    plan.reason = want + ": " + refusals;
  }
  return plan;
}

Plan plan_ensure(const PlanInput& in, const std::string& service) {
  Plan plan;
  const auto target_it = std::find_if(in.services.begin(), in.services.end(),
                                      [&](const PlanService& s) { return s.name == service; });
  if (target_it == in.services.end()) {
    plan.reason = "no service named '" + service + "'";
    return plan;
  }
  const PlanService& target = *target_it;
  if (target.running && !target.gpus.empty()) {
    plan.ok = true;
    plan.already_running = true;
    plan.gpus = target.gpus;
    plan.reason = service + " already runs on " + gpus_said(target.gpus);
    return plan;
  }
  if (auto refusal = why_no_gpu_fits(in, target); !refusal.empty()) {
    plan.reason = std::move(refusal);
    return plan;
  }

  std::optional<Option> best;
  std::string refusals;
  for (const auto& d : in.devices) {
    if (!allowed_on(target, d.index)) continue;
    if (target.need_bytes > d.total_bytes) continue;
    auto option = option_on(in, target, d, refusals);
    if (option && (!best || option->cost() < best->cost())) best = std::move(option);
  }
  if (!best) {
    plan.reason =
        "cannot place " + service + " (needs " + format_bytes(target.need_bytes) + "): " + refusals;
    return plan;
  }
  plan.ok = true;
  plan.gpus = {best->gpu};
  for (const auto* v : best->victims) plan.evict.push_back({v->name, v->sleeps});
  plan.reason = "start " + service + " on GPU " + std::to_string(best->gpu) +
                (best->victims.empty() ? "" : " after " + evictions(best->victims));
  return plan;
}

}  // namespace gpuvisor
