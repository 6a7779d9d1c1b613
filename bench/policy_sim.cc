// Trace-driven simulation of eviction policies over the real planner (pure, so thousands of
// requests take milliseconds). One GPU (48 GiB, then 80 GiB), 16 services with the sizes and
// load times of common models (190 GiB together), 5000 requests per trace, 5 seeds each. A request
// for a service that is not loaded costs its load time; the policy picks what to evict to make
// room.
//
// Policies: gpuvisor (plan_ensure: reload time saved per byte, then LRU, no more than
// needed), stop-everything-else, evict by keep-alive expiry (each service has its own
// keep-alive, as Ollama-style servers do), and plain LRU.
//
//   bench_policy_sim [--requests N] [--seeds N]
#include <algorithm>
#include <cmath>
#include <cstring>
#include <iostream>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "planner/planner.h"

namespace {

using gpuvisor::PlanInput;
using gpuvisor::PlanService;

constexpr uint64_t kGiB = 1ULL << 30;
double kGpuGiB = 48;
constexpr double kHalfLifeSeconds = 1800;  // as the daemon counts uses (supervisor/unit.h)
constexpr double kMeanGapSeconds = 30;     // between requests

struct Model {
  const char* name;
  double gib;
  double load_seconds;
  double keep_alive_seconds;
};

// Sizes and cold-start times of the kind a 48 GB workstation serves.
const std::vector<Model> kModels = {
    {"llama-8b-q4", 5, 12, 300}, {"llama-70b-q4", 40, 95, 600}, {"qwen-14b", 10, 25, 300},
    {"mistral-7b", 6, 14, 300},  {"vllm-8b", 20, 90, 1800},     {"sdxl", 8, 20, 600},
    {"flux", 24, 45, 600},       {"video", 30, 60, 900},        {"whisper", 4, 8, 300},
    {"tts", 2, 5, 300},          {"embed", 1.5, 4, 1800},       {"rerank", 1, 3, 1800},
    {"llava", 9, 22, 300},       {"code-34b", 20, 50, 600},     {"sd15", 4, 9, 300},
    {"musicgen", 6, 15, 300},
};

enum class Policy { kGpuvisor, kStopOthers, kKeepAlive, kLru };
const char* name_of(Policy p) {
  switch (p) {
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

std::vector<Request> make_trace(bool skewed, size_t count, unsigned seed) {
  std::mt19937_64 rng(seed);
  std::vector<double> weight(kModels.size(), 1.0);
  if (skewed) {
    std::vector<size_t> rank(kModels.size());
    std::iota(rank.begin(), rank.end(), 0);
    std::shuffle(rank.begin(), rank.end(), rng);  // popularity unrelated to size
    for (size_t i = 0; i < kModels.size(); ++i) weight[rank[i]] = 1.0 / std::pow(i + 1.0, 1.1);
  }
  std::discrete_distribution<size_t> pick(weight.begin(), weight.end());
  std::exponential_distribution<double> gap(1.0 / kMeanGapSeconds);
  std::vector<Request> out;
  double t = 0;
  for (size_t i = 0; i < count; ++i) {
    t += gap(rng);
    out.push_back({t, pick(rng)});
  }
  return out;
}

struct Outcome {
  double wait_seconds = 0;
  size_t loads = 0;
};

Outcome simulate(const std::vector<Request>& trace, Policy policy) {
  const size_t n = kModels.size();
  std::vector<bool> loaded(n, false), measured(n, false);
  std::vector<double> last_used(n, -1e18), uses(n, 0), uses_at(n, 0);
  double used_gib = 0;
  Outcome out;
  const auto decayed = [&](size_t i, double now) {
    return uses[i] * std::exp2(-(now - uses_at[i]) / kHalfLifeSeconds);
  };
  for (const auto& r : trace) {
    const size_t want = r.model;
    if (!loaded[want]) {
      std::vector<size_t> victims;
      std::vector<size_t> order;
      for (size_t i = 0; i < n; ++i) {
        if (loaded[i]) order.push_back(i);
      }
      if (policy == Policy::kGpuvisor) {
        PlanInput in;
        in.devices = {{0, static_cast<uint64_t>(kGpuGiB * kGiB),
                       static_cast<uint64_t>((kGpuGiB - used_gib) * kGiB)}};
        for (size_t i = 0; i < n; ++i) {
          PlanService s;
          s.name = std::to_string(i);
          s.need_bytes = static_cast<uint64_t>(kModels[i].gib * kGiB);
          s.running = loaded[i];
          if (loaded[i]) s.gpus = {0};
          s.held_bytes = loaded[i] ? s.need_bytes : 0;
          s.last_used_ms = static_cast<int64_t>(last_used[i] * 1000);
          s.recent_uses = decayed(i, r.at);
          s.reload_seconds = measured[i] ? kModels[i].load_seconds : 0;  // known once loaded
          in.services.push_back(s);
        }
        const auto plan = gpuvisor::plan_ensure(in, std::to_string(want));
        for (const auto& v : plan.evict) victims.push_back(std::stoul(v.name));
      } else if (policy == Policy::kStopOthers) {
        victims = order;
      } else {
        std::sort(order.begin(), order.end(), [&](size_t a, size_t b) {
          if (policy == Policy::kKeepAlive) {
            return last_used[a] + kModels[a].keep_alive_seconds <
                   last_used[b] + kModels[b].keep_alive_seconds;
          }
          return last_used[a] < last_used[b];
        });
        double free_gib = kGpuGiB - used_gib;
        for (const size_t i : order) {
          if (free_gib >= kModels[want].gib) break;
          victims.push_back(i);
          free_gib += kModels[i].gib;
        }
      }
      for (const size_t v : victims) {
        loaded[v] = false;
        used_gib -= kModels[v].gib;
      }
      loaded[want] = true;
      measured[want] = true;
      used_gib += kModels[want].gib;
      out.wait_seconds += kModels[want].load_seconds;
      ++out.loads;
    }
    last_used[want] = r.at;
    uses[want] = decayed(want, r.at) + 1;
    uses_at[want] = r.at;
  }
  return out;
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
  const Policy policies[] = {Policy::kGpuvisor, Policy::kStopOthers, Policy::kKeepAlive,
                             Policy::kLru};
  for (const double gpu : {48.0, 80.0}) {
    kGpuGiB = gpu;
    std::cout << "== one " << gpu << " GiB GPU\n";
    for (const bool skewed : {true, false}) {
      std::vector<Outcome> total(4);
      for (unsigned seed = 1; seed <= seeds; ++seed) {
        const auto trace = make_trace(skewed, requests, seed);
        for (size_t p = 0; p < 4; ++p) {
          const auto o = simulate(trace, policies[p]);
          total[p].wait_seconds += o.wait_seconds;
          total[p].loads += o.loads;
        }
      }
      std::cout << (skewed ? "skewed (Zipf 1.1)" : "uniform") << " popularity, " << seeds << " x "
                << requests << " requests:\n";
      double best_other = 1e300;
      for (size_t p = 0; p < 4; ++p) {
        std::cout << "  " << name_of(policies[p]) << ": load wait " << total[p].wait_seconds / 3600
                  << " h, " << total[p].loads << " loads\n";
        if (p > 0) best_other = std::min(best_other, total[p].wait_seconds);
      }
      std::cout << "  gpuvisor vs best other: "
                << 100.0 * (1.0 - total[0].wait_seconds / best_other) << "% less load wait\n";
    }
  }
  return 0;
}
