// Trace-driven simulation of eviction policies over the real planner (pure, so thousands of
// requests take milliseconds). Three machines: one GPU of 48 GiB, one of 80 GiB, each with 16
// services with the sizes and load times of common models (190 GiB together); and a workstation
// with two 24 GiB GPUs (2x RTX 3090/4090) and 16 services (189 GiB), three of which span both
// GPUs (a 70B model at 2 x 20 GiB and a 32B at 2 x 10 GiB, vLLM tensor-parallel, and a video
// model at 2 x 15 GiB). 5000 requests per trace, 5 seeds each. Traces: independent requests
// (Zipf 1.1, or uniform), and a diurnal one (a hot service each hour over Zipf traffic). A request
// for a service that is not loaded costs its load time; the policy picks what to evict to make
// room and, on two GPUs, where a single-GPU service goes. Each trace runs twice: with every
// eviction a stop, then with the LLM servers able to sleep (a wake-up costs 0.3 s, a sleeper
// keeps 1-2 GiB on each of its GPUs).
//
// Policies: gpuvisor (plan_ensure, fed what the daemon would know), stop-everything-else, evict
// by keep-alive expiry (each service has its own keep-alive, as Ollama-style servers do), plain
// LRU, and an offline bound that knows when each service is next requested (a heuristic, not a
// proven optimum). For each policy it prints the share of the gap between plain LRU and the
// bound that the policy closes.
//
// On two GPUs a spanning service holds its share on each of its GPUs, and evicting it frees that
// share on each. A spanning newcomer goes on both. A single-GPU newcomer goes where the policy
// puts it: gpuvisor where plan_ensure says; the baselines (LRU, keep-alive, stop-everything-else)
// on the GPU whose own order of victims, taken only while a GPU they are on is still short, is
// shortest, then whose most recently used victim was used longest ago, then the lower GPU; the
// bound on the GPU whose victims cost least reload time per second until each is next needed,
// then fewest victims, then the lower GPU. A sleeper wakes where it sleeps.
//
//   bench_policy_sim [--requests N] [--seeds N]
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <limits>
#include <numeric>
#include <optional>
#include <random>
#include <string>
#include <tuple>
#include <vector>

#include "planner/planner.h"

namespace {

using gpuvisor::PlanInput;
using gpuvisor::PlanService;

constexpr uint64_t kGiB = 1ULL << 30;
constexpr double kHalfLifeSeconds = gpuvisor::kUseHalfLifeSeconds;  // as the daemon counts uses
constexpr double kMeanGapSeconds = 30;                              // between requests
constexpr double kNever = std::numeric_limits<double>::infinity();

constexpr int kMaxEvictionRounds = 3;  // as the daemon (supervisor_placement.cc)
constexpr double kWakeSeconds = 0.3;   // a sleeping server's wake-up (vLLM's level-1 sleep)

struct Model {
  const char* name;
  double gib;  // on each of its GPUs
  double load_seconds;
  double keep_alive_seconds;
  double residual_gib = 0;  // on each of its GPUs asleep, in the traces with sleep; 0: cannot
  unsigned gpus = 1;        // how many GPUs it spans
};

// Sizes and cold-start times of the kind a 48 GB workstation serves. The LLM servers can sleep.
const std::vector<Model> kOneGpuModels = {
    {"llama-8b-q4", 5, 12, 300, 1},
    {"llama-70b-q4", 40, 95, 600, 2},
    {"qwen-14b", 10, 25, 300, 1.5},
    {"mistral-7b", 6, 14, 300, 1},
    {"vllm-8b", 20, 90, 1800, 2},
    {"sdxl", 8, 20, 600},
    {"flux", 24, 45, 600},
    {"video", 30, 60, 900},
    {"whisper", 4, 8, 300},
    {"tts", 2, 5, 300},
    {"embed", 1.5, 4, 1800},
    {"rerank", 1, 3, 1800},
    {"llava", 9, 22, 300, 1.5},
    {"code-34b", 20, 50, 600, 2},
    {"sd15", 4, 9, 300},
    {"musicgen", 6, 15, 300},
};

// The same kind of mix on a workstation with two 24 GiB GPUs: what does not fit one GPU spans
// both (the 70B and a 32B model tensor-parallel under vLLM, the video model split in two), flux
// is its 22 GiB fp8 build, and the 32B model takes the 34B code model's place.
const std::vector<Model> kTwoGpuModels = {
    {"llama-8b-q4", 5, 12, 300, 1},
    {"llama-70b-q4 (TP 2)", 20, 95, 600, 2, 2},
    {"qwen-14b", 10, 25, 300, 1.5},
    {"mistral-7b", 6, 14, 300, 1},
    {"vllm-8b", 20, 90, 1800, 2},
    {"sdxl", 8, 20, 600},
    {"flux-fp8", 22, 45, 600},
    {"video (2 GPUs)", 15, 60, 900, 0, 2},
    {"whisper", 4, 8, 300},
    {"tts", 2, 5, 300},
    {"embed", 1.5, 4, 1800},
    {"rerank", 1, 3, 1800},
    {"llava", 9, 22, 300, 1.5},
    {"qwen-32b (TP 2)", 10, 50, 600, 1.5, 2},
    {"sd15", 4, 9, 300},
    {"musicgen", 6, 15, 300},
};

struct Machine {
  std::string name;  // as the rows say it
  std::vector<double> gpu_gib;
  const std::vector<Model>* models;
};

enum class Policy { kBound, kGpuvisor, kStopOthers, kKeepAlive, kLru };
constexpr Policy kPolicies[] = {Policy::kBound, Policy::kGpuvisor, Policy::kStopOthers,
                                Policy::kKeepAlive, Policy::kLru};
constexpr size_t kPolicyCount = std::size(kPolicies);

const char* name_of(Policy p) {
  switch (p) {
    case Policy::kBound:
      return "offline bound";
    case Policy::kGpuvisor:
      return "gpuvisor";
    case Policy::kStopOthers:
      return "stop-everything-else";
    case Policy::kKeepAlive:
      return "keep-alive order";
    case Policy::kLru:
      return "plain LRU";
  }
  return "?";
}

struct Request {
  double at = 0;
  size_t model = 0;
};

enum class Shape { kSkewed, kUniform, kDiurnal };
const char* name_of(Shape s) {
  switch (s) {
    case Shape::kSkewed:
      return "skewed (Zipf 1.1)";
    case Shape::kUniform:
      return "uniform";
    case Shape::kDiurnal:
      return "hot hour (rotating) + Zipf";
  }
  return "?";
}

constexpr double kHotShare = 0.5;  // of the requests in its hour, for the hour's hot service

// Requests 30 s apart on average (Poisson) for n services. Skewed: independent, Zipf 1.1 over a
// shuffled ranking. Uniform: independent, every service equally likely. Diurnal: each hour one
// service, drawn afresh (never the last hour's), is hot and takes half the requests; the rest
// follow the skewed trace's Zipf ranking.
std::vector<Request> make_trace(Shape shape, size_t n, size_t count, unsigned seed) {
  std::mt19937_64 rng(seed);
  std::vector<double> weight(n, 1.0);
  if (shape != Shape::kUniform) {
    std::vector<size_t> rank(n);
    std::iota(rank.begin(), rank.end(), 0);
    std::shuffle(rank.begin(), rank.end(), rng);  // popularity unrelated to size
    for (size_t i = 0; i < n; ++i) weight[rank[i]] = 1.0 / std::pow(i + 1.0, 1.1);
  }
  std::discrete_distribution<size_t> pick(weight.begin(), weight.end());
  std::exponential_distribution<double> gap(1.0 / kMeanGapSeconds);
  std::uniform_int_distribution<size_t> other(1, n - 1);
  std::bernoulli_distribution hot_request(kHotShare);
  size_t hot = n - 1;
  double hour = -1;
  std::vector<Request> out;
  double t = 0;
  for (size_t i = 0; i < count; ++i) {
    t += gap(rng);
    if (shape == Shape::kDiurnal) {
      if (std::floor(t / 3600) != hour) {
        hour = std::floor(t / 3600);
        hot = (hot + other(rng)) % n;
      }
      if (hot_request(rng)) {
        out.push_back({t, hot});
        continue;
      }
    }
    out.push_back({t, pick(rng)});
  }
  return out;
}

// For each request, when the same service is requested next (kNever if it is not).
std::vector<double> next_requests(const std::vector<Request>& trace, size_t n) {
  std::vector<double> out(trace.size(), kNever);
  std::vector<double> seen(n, kNever);
  for (size_t k = trace.size(); k-- > 0;) {
    out[k] = seen[trace[k].model];
    seen[trace[k].model] = trace[k].at;
  }
  return out;
}

struct Outcome {
  double wait_seconds = 0;
  size_t loads = 0;
  size_t wakes = 0;
  size_t replans = 0;  // gpuvisor: plans made again because a sleeper kept more than was known
};

enum class State { kOff, kAwake, kAsleep };

// One step of making room: put an awake service to sleep, or stop it (awake or asleep).
struct Eviction {
  size_t model = 0;
  bool sleep = false;
};

using Gpus = std::vector<unsigned>;

struct Sim {
  Sim(const Machine& machine, bool with_sleep)
      : models(machine.models),
        gpu_gib(machine.gpu_gib),
        sleep(with_sleep),
        state(models->size(), State::kOff),
        on(models->size()),
        next_use(models->size(), kNever),
        used_gib(gpu_gib.size(), 0) {}

  const std::vector<Model>* models;
  std::vector<double> gpu_gib;
  bool sleep = false;  // services with a residual sleep instead of stopping
  std::vector<State> state;
  std::vector<Gpus> on;  // where each runs or sleeps
  std::vector<double> next_use;
  std::vector<double> used_gib;  // on each GPU

  const Model& model(size_t i) const { return (*models)[i]; }
  bool can_sleep(size_t i) const { return sleep && model(i).residual_gib > 0; }
  // What i holds on each of its GPUs.
  double held(size_t i) const {
    if (state[i] == State::kAwake) return model(i).gib;
    return state[i] == State::kAsleep ? model(i).residual_gib : 0;
  }
  // What serving i takes on each of its GPUs on top of what it holds.
  double needs(size_t i) const { return model(i).gib - held(i); }
  double free_gib(unsigned gpu) const { return gpu_gib[gpu] - used_gib[gpu]; }
  bool on_gpu(size_t i, unsigned gpu) const {
    return std::find(on[i].begin(), on[i].end(), gpu) != on[i].end();
  }
  // Whether want, placed on gpus, has the room it needs there.
  bool fits(size_t want, const Gpus& gpus) const {
    return std::all_of(gpus.begin(), gpus.end(),
                       [&](unsigned g) { return free_gib(g) >= needs(want) - 1e-9; });
  }
  // Whether i holds memory on a GPU of gpus that is still short for want.
  bool in_the_way(size_t i, size_t want, const Gpus& gpus) const {
    return std::any_of(gpus.begin(), gpus.end(), [&](unsigned g) {
      return on_gpu(i, g) && free_gib(g) < needs(want) - 1e-9;
    });
  }
  // What e frees on each GPU its service is on.
  double frees(const Eviction& e) const {
    return e.sleep ? model(e.model).gib - model(e.model).residual_gib : held(e.model);
  }
  void apply(const Eviction& e) {
    for (const unsigned g : on[e.model]) used_gib[g] -= frees(e);
    state[e.model] = e.sleep ? State::kAsleep : State::kOff;
    if (!e.sleep) on[e.model].clear();
  }
  // Serves want on gpus (where it sleeps, if it does).
  void serve(size_t want, const Gpus& gpus) {
    for (const unsigned g : gpus) used_gib[g] += needs(want);
    on[want] = gpus;
    state[want] = State::kAwake;
  }
  // Where want may go: where it sleeps, or every set of as many GPUs as it spans that are large
  // enough, lowest first.
  std::vector<Gpus> places(size_t want) const {
    if (state[want] != State::kOff) return {on[want]};
    std::vector<Gpus> out;
    const unsigned n = static_cast<unsigned>(gpu_gib.size());
    for (unsigned mask = 1; mask < (1u << n); ++mask) {
      Gpus set;
      bool large = true;
      for (unsigned g = 0; g < n; ++g) {
        if ((mask & (1u << g)) == 0) continue;
        set.push_back(g);
        large = large && gpu_gib[g] >= model(want).gib;
      }
      if (large && set.size() == model(want).gpus) out.push_back(set);
    }
    std::sort(out.begin(), out.end());
    return out;
  }
};

// Where a service goes and what is evicted first.
struct Placement {
  Gpus gpus;
  std::vector<Eviction> evictions;
};

// In the given order: put to sleep (or stop, if it cannot sleep) each awake service in the way
// of want on gpus until want fits; then, if that was not enough, stop sleeping ones in the same
// order.
std::vector<Eviction> in_order(const Sim& sim, size_t want, const Gpus& gpus,
                               const std::vector<size_t>& order) {
  Sim after = sim;
  std::vector<Eviction> out;
  for (const bool asleep_pass : {false, true}) {
    for (const size_t i : order) {
      if (after.fits(want, gpus)) return out;
      if (i == want || after.state[i] != (asleep_pass ? State::kAsleep : State::kAwake)) continue;
      if (!after.in_the_way(i, want, gpus)) continue;
      out.push_back({i, !asleep_pass && after.can_sleep(i)});
      after.apply(out.back());
    }
  }
  return out;
}

// The baselines' placement: of the places want may go, the one whose victims in the given order
// are fewest, then whose most recently used victim was used longest ago, then the lowest GPUs.
Placement by_order(const Sim& sim, size_t want, const std::vector<size_t>& order,
                   const std::vector<double>& last_used) {
  std::optional<std::tuple<size_t, double, Placement>> best;
  for (const auto& gpus : sim.places(want)) {
    auto evictions = in_order(sim, want, gpus, order);
    double newest = -std::numeric_limits<double>::infinity();
    for (const auto& e : evictions) newest = std::max(newest, last_used[e.model]);
    if (!best || std::make_pair(evictions.size(), newest) <
                     std::make_pair(std::get<0>(*best), std::get<1>(*best))) {
      best = {evictions.size(), newest, Placement{gpus, std::move(evictions)}};
    }
  }
  return std::get<2>(*best);
}

// Offline: knows when each loaded service is next requested. To make room it evicts first the
// service whose reload costs least for the memory it frees and the time until it is needed again
// (load_seconds / GiB^size_exponent / seconds to its next request; never requested again:
// free), then keeps any victim that turned out not to be needed. A heuristic, so an estimate of
// what foresight buys, not a proven optimum. Weightings tried (total load wait over the four
// independent-request traces of 48 and 80 GiB, 5 x 5000 requests): farthest next use alone
// (Belady) 387.7 h, load / GiB / distance 385.6 h, a knapsack for the victim set of least sum
// load / distance 384.2 h, load / GiB^a / distance^b for a in 0..0.75 and b in 0.75..2
// 382.0-390.7 h; load / sqrt(GiB) / distance 382.1 h. Without the final trim: 396-398 h. With
// sleep, load / GiB / distance does 1-5% better, so the bound runs both exponents, 0.5 and 1,
// and keeps the better of the two for each seed.
// With sleep the steps are priced the same way: a sleep costs the wake-up and frees all but
// the residual; stopping a sleeping service costs the load less the wake-up and frees the
// residual (it becomes a candidate once its sleep is chosen).
// On two GPUs only what is on a GPU still short is a candidate, and the GiB it frees are those
// on the GPUs want goes on. The evictions come with their cost: the reload seconds they add per
// second until each victim is next needed, which picks among the places want may go.
std::pair<double, std::vector<Eviction>> bound_evictions(const Sim& sim, size_t want,
                                                         const Gpus& gpus, double now,
                                                         double size_exponent) {
  Sim after = sim;
  const auto cost = [&](const Eviction& e) {
    const Model& m = after.model(e.model);
    return e.sleep                                  ? kWakeSeconds
           : after.state[e.model] == State::kAsleep ? m.load_seconds - kWakeSeconds
                                                    : m.load_seconds;
  };
  const auto distance = [&](size_t i) { return std::max(after.next_use[i] - now, 1e-3); };
  const auto frees_here = [&](const Eviction& e) {
    double gib = 0;
    for (const unsigned g : gpus) gib += after.on_gpu(e.model, g) ? after.frees(e) : 0;
    return gib;
  };
  std::vector<Eviction> chosen;
  std::vector<double> costs, freed;
  std::vector<Gpus> where;
  while (!after.fits(want, gpus)) {
    std::optional<std::pair<double, Eviction>> best;
    for (size_t i = 0; i < after.models->size(); ++i) {
      if (i == want || after.state[i] == State::kOff || !after.in_the_way(i, want, gpus)) continue;
      const Eviction e{i, after.state[i] == State::kAwake && after.can_sleep(i)};
      const double p = cost(e) / std::pow(frees_here(e), size_exponent) / distance(i);
      if (!best || p < best->first) best = {{p, e}};
    }
    const Eviction& e = best->second;
    chosen.push_back(e);
    costs.push_back(cost(e) / distance(e.model));
    freed.push_back(after.frees(e));
    where.push_back(after.on[e.model]);
    after.apply(e);
  }
  // Undo, the last chosen first, what turned out not to be needed on any GPU it was on; a sleep
  // stays when the stop that followed it stays.
  std::vector<double> spare(after.gpu_gib.size(), kNever);
  for (const unsigned g : gpus) spare[g] = after.free_gib(g) - after.needs(want);
  std::vector<bool> kept(chosen.size(), true);
  for (size_t c = chosen.size(); c-- > 0;) {
    bool followed = false;
    for (size_t later = c + 1; later < chosen.size(); ++later)
      followed = followed || (kept[later] && chosen[later].model == chosen[c].model);
    const bool needed = std::any_of(where[c].begin(), where[c].end(),
                                    [&](unsigned g) { return spare[g] - freed[c] < 0; });
    if (followed || needed) continue;
    for (const unsigned g : where[c]) spare[g] -= freed[c];
    kept[c] = false;
  }
  std::pair<double, std::vector<Eviction>> out;
  for (size_t c = 0; c < chosen.size(); ++c) {
    if (!kept[c]) continue;
    out.first += costs[c];
    out.second.push_back(chosen[c]);
  }
  return out;
}

Outcome simulate(const std::vector<Request>& trace, const std::vector<double>& next_request,
                 Policy policy, const Machine& machine, bool sleep, double size_exponent = 0.5) {
  const size_t n = machine.models->size();
  Sim sim(machine, sleep);
  std::vector<bool> measured(n, false), slept(n, false), woken(n, false);
  std::vector<double> last_used(n, -1e18), uses(n, 0), uses_at(n, 0);
  for (size_t k = trace.size(); k-- > 0;) sim.next_use[trace[k].model] = trace[k].at;
  Outcome out;
  const auto decayed = [&](size_t i, double now) {
    return uses[i] * std::exp2(-(now - uses_at[i]) / kHalfLifeSeconds);
  };
  double now = 0;
  // The planner's view of the GPUs, as the daemon builds it: times and residuals are known once
  // they have been seen.
  const auto plan_input = [&](const Sim& at) {
    PlanInput in;
    in.now_ms = static_cast<int64_t>(now * 1000);
    for (unsigned g = 0; g < at.gpu_gib.size(); ++g) {
      in.devices.push_back({g, static_cast<uint64_t>(at.gpu_gib[g] * kGiB),
                            static_cast<uint64_t>(at.free_gib(g) * kGiB)});
    }
    for (size_t i = 0; i < n; ++i) {
      const Model& m = at.model(i);
      PlanService s;
      s.name = std::to_string(i);
      s.gpu_count = m.gpus;
      s.need_bytes = static_cast<uint64_t>(m.gib * kGiB);
      s.running = at.state[i] == State::kAwake;
      s.sleeping = at.state[i] == State::kAsleep;
      s.gpus = at.on[i];
      s.held_bytes = static_cast<uint64_t>(at.held(i) * kGiB);
      s.last_used_ms = static_cast<int64_t>(last_used[i] * 1000);
      s.recent_uses = decayed(i, now);
      s.reload_seconds = measured[i] ? m.load_seconds : 0;
      s.sleeps = at.can_sleep(i);
      s.wake_seconds = woken[i] ? kWakeSeconds : 0;
      s.residual_bytes = slept[i] ? static_cast<uint64_t>(m.residual_gib * kGiB) : 0;
      in.services.push_back(s);
    }
    return in;
  };
  for (size_t k = 0; k < trace.size(); ++k) {
    const auto& r = trace[k];
    const size_t want = r.model;
    now = r.at;
    if (sim.state[want] != State::kAwake) {
      Placement placed;
      std::vector<size_t> order;
      for (size_t i = 0; i < n; ++i) {
        if (sim.state[i] != State::kOff && i != want) order.push_back(i);
      }
      if (policy == Policy::kStopOthers) {
        // Everything else that is awake goes on every miss, whether or not it is in the way;
        // then, if need be, what sleeps.
        Sim after = sim;
        for (const size_t i : order) {
          if (sim.state[i] != State::kAwake) continue;
          placed.evictions.push_back({i, sim.can_sleep(i)});
          after.apply(placed.evictions.back());
        }
        auto rest = by_order(after, want, order, last_used);
        placed.gpus = rest.gpus;
        for (const auto& e : rest.evictions) placed.evictions.push_back(e);
      } else if (policy == Policy::kBound) {
        std::optional<std::tuple<double, size_t, Placement>> best;
        for (const auto& gpus : sim.places(want)) {
          auto [cost, evictions] = bound_evictions(sim, want, gpus, r.at, size_exponent);
          if (!best || std::make_pair(cost, evictions.size()) <
                           std::make_pair(std::get<0>(*best), std::get<1>(*best))) {
            best = {cost, evictions.size(), Placement{gpus, std::move(evictions)}};
          }
        }
        placed = std::get<2>(*best);
      } else if (policy == Policy::kGpuvisor) {
        // As the daemon does: when what was evicted is gone and the service still does not fit
        // (a sleeper kept more than its last residual said, or none was known), plan again.
        Sim after = sim;
        for (int round = 0; round <= kMaxEvictionRounds; ++round) {
          if (round > 0 && after.fits(want, placed.gpus)) break;
          if (round > 0) ++out.replans;
          const auto plan = gpuvisor::plan_ensure(plan_input(after), std::to_string(want));
          if (!plan.ok) {
            std::cerr << "gpuvisor: " << plan.reason << "\n";
            std::exit(1);
          }
          placed.gpus = plan.gpus;
          for (const auto& v : plan.evict) {
            placed.evictions.push_back({std::stoul(v.name), v.sleep});
            after.apply(placed.evictions.back());
          }
        }
      } else {
        std::sort(order.begin(), order.end(), [&](size_t a, size_t b) {
          if (policy == Policy::kKeepAlive) {
            return last_used[a] + sim.model(a).keep_alive_seconds <
                   last_used[b] + sim.model(b).keep_alive_seconds;
          }
          return last_used[a] < last_used[b];
        });
        placed = by_order(sim, want, order, last_used);
      }
      for (const auto& e : placed.evictions) {
        if (e.sleep && !sim.can_sleep(e.model)) {
          std::cerr << name_of(policy) << " put " << sim.model(e.model).name << " to sleep\n";
          std::exit(1);
        }
        if (e.sleep) slept[e.model] = true;
        sim.apply(e);
      }
      if (placed.gpus.size() != sim.model(want).gpus || !sim.fits(want, placed.gpus) ||
          (sim.state[want] == State::kAsleep && placed.gpus != sim.on[want])) {
        std::cerr << name_of(policy) << " left too little room\n";
        std::exit(1);
      }
      if (sim.state[want] == State::kAsleep) {
        woken[want] = true;
        out.wait_seconds += kWakeSeconds;
        ++out.wakes;
      } else {
        out.wait_seconds += sim.model(want).load_seconds;
        ++out.loads;
      }
      sim.serve(want, placed.gpus);
      measured[want] = true;
    }
    sim.next_use[want] = next_request[k];
    last_used[want] = r.at;
    uses[want] = decayed(want, r.at) + 1;
    uses_at[want] = r.at;
  }
  return out;
}

// The share of plain LRU's excess over the bound that a policy removes, in percent; "n/a" when
// LRU is already within a second of the bound.
std::string gap_closed(double lru, double policy, double bound) {
  if (lru - bound < 1) return "n/a";
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.0f%%", 100.0 * (lru - policy) / (lru - bound));
  return buf;
}

}  // namespace

int main(int argc, char** argv) {
  size_t requests = 5000;
  unsigned seeds = 5;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--requests") == 0 && i + 1 < argc) {
      requests = std::stoul(argv[++i]);
    } else if (std::strcmp(argv[i], "--seeds") == 0 && i + 1 < argc) {
      seeds = static_cast<unsigned>(std::stoul(argv[++i]));
    } else {
      std::cerr << "usage: bench_policy_sim [--requests N] [--seeds N]\n";
      return 2;
    }
  }
  std::cout << "The offline bound knows when each service is next requested and evicts the least "
               "load seconds / GiB^a / seconds to next request first (the better of a = 0.5 and "
               "a = 1 on each seed): a heuristic, not a proven optimum.\n"
               "With sleep, the LLM servers (7 of 16) sleep instead of stopping: a wake-up takes "
            << kWakeSeconds
            << " s and they keep 1-2 GiB on each of their GPUs while asleep.\n"
               "On 2 x 24 GiB, three services span both GPUs (20, 15 and 10 GiB on each).\n";
  struct Result {
    std::string trace;
    bool sleep = false;
    std::vector<Outcome> total = std::vector<Outcome>(kPolicyCount);
  };
  std::vector<Result> results;
  const auto seconds_per_miss = [](const Outcome& o) {
    const size_t misses = o.loads + o.wakes;
    return misses == 0 ? 0.0 : o.wait_seconds / static_cast<double>(misses);
  };
  const std::vector<Machine> machines = {
      {"48 GiB", {48}, &kOneGpuModels},
      {"80 GiB", {80}, &kOneGpuModels},
      {"2 x 24 GiB", {24, 24}, &kTwoGpuModels},
  };
  for (const Machine& machine : machines) {
    const size_t n = machine.models->size();
    for (const Shape shape : {Shape::kSkewed, Shape::kUniform, Shape::kDiurnal}) {
      const std::string name = machine.name + ", " + name_of(shape);
      Result plain{name, false}, slept{name, true};
      for (unsigned seed = 1; seed <= seeds; ++seed) {
        const auto trace = make_trace(shape, n, requests, seed);
        const auto next = next_requests(trace, n);
        for (Result* r : {&plain, &slept}) {
          for (size_t p = 0; p < kPolicyCount; ++p) {
            auto o = simulate(trace, next, kPolicies[p], machine, r->sleep);
            if (kPolicies[p] == Policy::kBound) {
              const auto other = simulate(trace, next, kPolicies[p], machine, r->sleep, 1.0);
              if (other.wait_seconds < o.wait_seconds) o = other;
            }
            r->total[p].wait_seconds += o.wait_seconds;
            r->total[p].loads += o.loads;
            r->total[p].wakes += o.wakes;
            r->total[p].replans += o.replans;
          }
        }
      }
      for (const Result* r : {&plain, &slept}) {
        std::cout << "== " << name << (r->sleep ? ", with sleep" : "") << ", " << seeds << " x "
                  << requests << " requests\n";
        const auto& t = r->total;
        const double bound = t[0].wait_seconds, lru = t[kPolicyCount - 1].wait_seconds;
        for (size_t p = 0; p < kPolicyCount; ++p) {
          char line[200];
          std::snprintf(line, sizeof line,
                        "  %-22s load wait %6.1f h, %6zu loads, %6zu wakes, %5.1f s per miss, "
                        "%5s of the gap\n",
                        name_of(kPolicies[p]), t[p].wait_seconds / 3600, t[p].loads, t[p].wakes,
                        seconds_per_miss(t[p]), gap_closed(lru, t[p].wait_seconds, bound).c_str());
          std::cout << line;
        }
        std::cout << "  gpuvisor closes " << gap_closed(lru, t[1].wait_seconds, bound)
                  << " of the LRU->bound gap\n";
        if (t[1].replans > 0) {
          std::cout << "  gpuvisor planned again " << t[1].replans
                    << " times: a sleeper kept more than the planner knew of\n";
        }
      }
      results.push_back(std::move(plain));
      results.push_back(std::move(slept));
    }
  }
  std::cout << "== summary (floor: gpuvisor closes >= 80% of the LRU->bound gap and is never "
               "worse than LRU)\n";
  for (const auto& r : results) {
    const double bound = r.total[0].wait_seconds, gv = r.total[1].wait_seconds,
                 lru = r.total[kPolicyCount - 1].wait_seconds;
    const bool met = gv <= lru && (lru - bound < 1 || lru - gv >= 0.8 * (lru - bound));
    char line[200];
    std::snprintf(line, sizeof line,
                  "  %-51s bound %6.1f h, gpuvisor %6.1f h, LRU %6.1f h: closes %5s, floor %s\n",
                  (r.trace + (r.sleep ? ", with sleep" : "")).c_str(), bound / 3600, gv / 3600,
                  lru / 3600, gap_closed(lru, gv, bound).c_str(), met ? "met" : "NOT met");
    std::cout << line;
  }
  std::cout << "== what sleep saves: the same traces without and with sleep (wait per miss: a "
               "load or a wake-up)\n";
  for (size_t i = 0; i + 1 < results.size(); i += 2) {
    for (const size_t p : {size_t{1}, kPolicyCount - 1, size_t{0}}) {
      const Outcome &off = results[i].total[p], &on = results[i + 1].total[p];
      char line[240];
      std::snprintf(line, sizeof line,
                    "  %-40s %-14s no sleep %6.1f h, %5.1f s per miss; sleep %6.1f h, %5.1f s "
                    "per miss (%zu of %zu misses woke)\n",
                    results[i].trace.c_str(), name_of(kPolicies[p]), off.wait_seconds / 3600,
                    seconds_per_miss(off), on.wait_seconds / 3600, seconds_per_miss(on), on.wakes,
                    on.loads + on.wakes);
      std::cout << line;
    }
  }
  return 0;
}
