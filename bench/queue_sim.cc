// SPDX-License-Identifier: Apache-2.0
// Trace-driven simulation of admission orders for models that do not fit on the GPU together:
// which waiting request goes next, and when the loaded model is swapped for another. One GPU
// holds one model at a time; a swap costs the old model's stop and the new one's load. Each
// model serves up to `slots` requests at once; a request waits from its arrival until it is
// sent to its model.
//
// Orders:
//   naive      strictly first come, first served: a request for another model waits at the head
//              until the loaded one is idle, then swaps, and everything behind it waits too
//              (llama-swap before its PR #790: ABCABC costs five swaps);
//   llama-swap FIFO with collation, from its documented rules (PR #790): a request for the loaded
//              model goes straight to it; once that model is idle, the model of the oldest waiting
//              request is loaded. No priority, no bound on how long a queued model waits;
//   gpuvisor   the daemon's rules (docs/configuration.md, "The admission queue"): collation as
//              above; between queued models, higher priority first, then first come; a model
//              queued for daemon.queue_max_wait drains the loaded one (it takes no new requests,
//              finishes those it has, and is swapped out).
// This models the rules, not the daemon's code (which is not pure); the integration tests
// (tests/integration/queue_test.cc) check the daemon itself: ABAB costs at most two swaps, and a
// queued model gets its turn past queue_max_wait while the loaded one is kept busy.
//
// Mixes:
//   abab       A and B alternate, a request every 1.5 s for 10 minutes, 3 s each;
//   clients    10 closed-loop clients per model for A and B: each sends, waits for the answer,
//              thinks 5 s on average, and sends again, for 15 minutes;
//   job+chat   a batch of five 2-minute image jobs every 10 minutes on model I (priority 10)
//              beside chat requests for A (priority 50) every 20 s on average, for an hour.
//
// The floor (issue 18): fewer swaps than naive on every mix; no request waits past the bound
// (queue_max_wait + twice the longest request and a swap: a request that comes while its model
// drains waits for the drain, the swap away, the other model's turn, and the swap back); p99
// wait no worse than llama-swap's rules on the same trace.
//
//   bench_queue_sim [--seeds N] [--max-wait SECONDS]   (default: the daemon's default)
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <map>
#include <optional>
#include <queue>
#include <random>
#include <string>
#include <vector>

#include "core/service_spec.h"

namespace {

struct Model {
  std::string name;
  double load_s = 0;  // cold start
  double stop_s = 0;  // graceful stop
  int priority = 0;
  int slots = 1;
};

struct Request {
  size_t model = 0;
  double arrival = 0;
  double duration = 0;
  int client = -1;  // closed loop: the client that sends again after it
  double sent = -1;
};

enum class Order { kNaive, kLlamaSwap, kGpuvisor };
const char* name_of(Order o) {
  return o == Order::kNaive ? "naive" : o == Order::kLlamaSwap ? "llama-swap" : "gpuvisor";
}

struct Mix {
  std::string name;
  std::vector<Model> models;
  std::vector<Request> open;  // open-loop arrivals
  int clients_per_model = 0;  // closed loop
  double think_s = 0;
  double closed_duration_s = 0;  // a closed-loop request's mean length
  double horizon_s = 0;          // closed-loop clients stop sending after this
};

struct Result {
  int swaps = 0;
  std::vector<double> waits;
  double last_end = 0;
  double first_arrival = 0;
  double longest = 0;  // the longest request
};

class Sim {
 public:
  Sim(const Mix& mix, Order order, double max_wait, uint32_t seed)
      : mix_(mix), order_(order), max_wait_(max_wait), rng_(seed) {}

  Result run() {
    for (const auto& r : mix_.open) arrive(r);
    for (size_t m = 0; m < mix_.models.size(); ++m) {
      for (int c = 0; c < mix_.clients_per_model; ++c) {
        Request r{m, think(), duration(m), c};
        arrive(r);
      }
    }
    result_.first_arrival = events_.empty() ? 0 : events_.top().at;
    while (!events_.empty()) {
      const Event e = events_.top();
      events_.pop();
      now_ = e.at;
      if (e.kind == Event::kArrive) {
        waiting_.push_back(requests_[e.request]);
        waiting_.back().sent = -1;
        index_.push_back(e.request);
      } else if (e.kind == Event::kDone) {
        --in_flight_;
        result_.last_end = now_;
        const Request& r = requests_[e.request];
        if (r.client >= 0 && now_ < mix_.horizon_s)
          arrive({r.model, now_ + think(), duration(r.model), r.client});
      } else {  // kLoaded
        swapping_ = false;
      }
      schedule();
    }
    return result_;
  }

 private:
  struct Event {
    enum Kind { kArrive, kDone, kLoaded } kind;
    double at;
    size_t request;
    bool operator>(const Event& o) const { return at > o.at; }
  };

  double think() { return std::exponential_distribution<double>(1.0 / mix_.think_s)(rng_); }
  double duration(size_t m) {
    (void)m;
    return std::exponential_distribution<double>(1.0 / mix_.closed_duration_s)(rng_);
  }

  void arrive(const Request& r) {
    requests_.push_back(r);
    result_.longest = std::max(result_.longest, r.duration);
    events_.push({Event::kArrive, r.arrival, requests_.size() - 1});
  }

  void send(size_t i) {
    const Request r = waiting_[i];
    const size_t id = index_[i];
    waiting_.erase(waiting_.begin() + static_cast<long>(i));
    index_.erase(index_.begin() + static_cast<long>(i));
    result_.waits.push_back(now_ - r.arrival);
    ++in_flight_;
    events_.push({Event::kDone, now_ + r.duration, id});
  }

  void swap_to(size_t m) {
    double cost = mix_.models[m].load_s;
    if (loaded_) {
      cost += mix_.models[*loaded_].stop_s;
      ++result_.swaps;
    }
    loaded_ = m;
    queued_since_.erase(m);
    swapping_ = true;
    events_.push({Event::kLoaded, now_ + cost, 0});
  }

  // Whether the loaded model drains: another has been queued for max_wait (gpuvisor only).
  bool draining() const {
    if (order_ != Order::kGpuvisor || max_wait_ <= 0) return false;
    return std::any_of(queued_since_.begin(), queued_since_.end(),
                       [&](const auto& q) { return now_ - q.second >= max_wait_; });
  }

  void note_queued() {
    for (const auto& r : waiting_) {
      if (loaded_ != r.model && !queued_since_.contains(r.model)) queued_since_[r.model] = now_;
    }
  }

  void schedule() {
    if (swapping_) return;
    note_queued();
    const int slots = loaded_ ? mix_.models[*loaded_].slots : 0;
    if (order_ == Order::kNaive) {
      while (!waiting_.empty() && loaded_ == waiting_.front().model && in_flight_ < slots) send(0);
      if (!waiting_.empty() && loaded_ != waiting_.front().model && in_flight_ == 0) {
        swap_to(waiting_.front().model);
      }
      return;
    }
    if (!draining()) {
      for (size_t i = 0; i < waiting_.size() && in_flight_ < slots;) {
        if (waiting_[i].model == loaded_) {
          send(i);
        } else {
          ++i;
        }
      }
    }
    if (in_flight_ > 0) return;
    std::optional<size_t> next;  // the model to load: its oldest request, or gpuvisor's order
    for (const auto& r : waiting_) {
      if (r.model == loaded_) continue;
      if (!next || (order_ == Order::kGpuvisor &&
                    mix_.models[r.model].priority > mix_.models[*next].priority)) {
        next = r.model;
      }
    }
    if (next) {
      swap_to(*next);
    } else if (loaded_ && !waiting_.empty()) {
      schedule();  // drained for a model no longer waiting: take the loaded one's requests
    }
  }

  const Mix& mix_;
  Order order_;
  double max_wait_;
  std::mt19937 rng_;
  double now_ = 0;
  std::priority_queue<Event, std::vector<Event>, std::greater<>> events_;
  std::vector<Request> requests_;
  std::deque<Request> waiting_;  // arrival order
  std::deque<size_t> index_;     // waiting_[i] is requests_[index_[i]]
  std::optional<size_t> loaded_;
  std::map<size_t, double> queued_since_;
  bool swapping_ = false;
  int in_flight_ = 0;
  Result result_;
};

Mix abab(std::mt19937& rng) {
  Mix m{"abab", {{"A", 8, 1, 10, 4}, {"B", 8, 1, 10, 4}}, {}, 0, 0, 0, 0};
  std::exponential_distribution<double> d(1.0 / 3.0);
  for (int i = 0; i < 400; ++i) m.open.push_back({static_cast<size_t>(i % 2), 1.5 * i, d(rng)});
  return m;
}

Mix clients() {
  return {"clients", {{"A", 8, 1, 10, 4}, {"B", 8, 1, 10, 4}}, {}, 10, 5, 4, 900};
}

Mix job_and_chat(std::mt19937& rng) {
  Mix m{"job+chat", {{"A", 10, 1, 50, 4}, {"I", 20, 2, 10, 1}}, {}, 0, 0, 0, 0};
  std::exponential_distribution<double> gap(1.0 / 20.0), chat(1.0 / 3.0), job(1.0 / 120.0);
  for (double t = 0; t < 3600; t += gap(rng)) m.open.push_back({0, t, chat(rng)});
  for (double batch = 30; batch < 3600; batch += 900) {
    for (int j = 0; j < 3; ++j) m.open.push_back({1, batch + 10 * j, std::min(240.0, job(rng))});
  }
  std::sort(m.open.begin(), m.open.end(),
            [](const Request& a, const Request& b) { return a.arrival < b.arrival; });
  return m;
}

double percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[std::min(v.size() - 1, static_cast<size_t>(p * static_cast<double>(v.size())))];
}

struct Row {
  double swaps = 0, p50 = 0, p99 = 0, max = 0, per_min = 0;
};

}  // namespace

int main(int argc, char** argv) {
  int seeds = 5;
  double max_wait = static_cast<double>(gpuvisor::DaemonSpec{}.queue_max_wait.count()) / 1000.0;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (std::strcmp(argv[i], "--seeds") == 0) seeds = std::atoi(argv[i + 1]);
    if (std::strcmp(argv[i], "--max-wait") == 0) max_wait = std::atof(argv[i + 1]);
  }
  std::printf("queue_sim: %d seeds per mix, gpuvisor's queue_max_wait %.0f s\n", seeds, max_wait);
  std::printf("%-9s %-10s %7s %8s %8s %8s %8s\n", "mix", "order", "swaps", "p50 s", "p99 s",
              "max s", "req/min");
  bool floor_met = true;
  const char* names[] = {"abab", "clients", "job+chat"};
  for (int mix_index = 0; mix_index < 3; ++mix_index) {
    std::map<Order, Row> rows;
    bool bounded = true;
    double worst_over = -1e9;  // the most a gpuvisor wait came over (or under) its bound
    for (int seed = 1; seed <= seeds; ++seed) {
      std::mt19937 rng(static_cast<uint32_t>(seed * 7919 + mix_index));
      const Mix mix = mix_index == 0 ? abab(rng) : mix_index == 1 ? clients() : job_and_chat(rng);
      double swap_s = 0;
      for (const auto& m : mix.models) swap_s = std::max(swap_s, m.load_s + m.stop_s);
      for (Order o : {Order::kNaive, Order::kLlamaSwap, Order::kGpuvisor}) {
        const Result r = Sim(mix, o, max_wait, static_cast<uint32_t>(seed)).run();
        Row& row = rows[o];
        row.swaps += r.swaps / static_cast<double>(seeds);
        row.p50 += percentile(r.waits, 0.5) / seeds;
        row.p99 += percentile(r.waits, 0.99) / seeds;
        row.max = std::max(row.max, percentile(r.waits, 1.0));
        row.per_min +=
            static_cast<double>(r.waits.size()) / ((r.last_end - r.first_arrival) / 60.0) / seeds;
        if (o != Order::kGpuvisor || max_wait <= 0) continue;
        // Queued behind a drain, then behind the other model's turn: two drains and two swaps.
        const double bound = max_wait + 2 * (r.longest + swap_s);
        worst_over = std::max(worst_over, percentile(r.waits, 1.0) - bound);
        bounded = bounded && percentile(r.waits, 1.0) <= bound;
      }
    }
    for (Order o : {Order::kNaive, Order::kLlamaSwap, Order::kGpuvisor}) {
      const Row& r = rows[o];
      std::printf("%-9s %-10s %7.1f %8.1f %8.1f %8.1f %8.1f\n", names[mix_index], name_of(o),
                  r.swaps, r.p50, r.p99, r.max, r.per_min);
    }
    const Row& g = rows[Order::kGpuvisor];
    const bool fewer = g.swaps < rows[Order::kNaive].swaps;
    const bool p99 = g.p99 <= rows[Order::kLlamaSwap].p99 * 1.0001;
    std::printf(
        "%-9s floor: fewer swaps than naive %s; longest wait within its bound %s "
        "(%.0f s under at worst); p99 no worse than llama-swap %s\n",
        names[mix_index], fewer ? "yes" : "NO", bounded ? "yes" : "NO", -worst_over,
        p99 ? "yes" : "NO");
    floor_met = floor_met && fewer && bounded && p99;
  }
  std::printf("floor %s\n", floor_met ? "met" : "NOT met");
  return floor_met ? 0 : 1;
}
