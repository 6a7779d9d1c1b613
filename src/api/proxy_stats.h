// What the proxy counts, per service, for /metrics. Proxied connections run on several threads
// (io_threads.h): each thread counts into a shard of its own, written by that thread alone (a
// relaxed load and store, no locked instruction), and a scrape adds the shards up.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <iterator>
#include <map>

namespace gpuvisor {

struct ProxyCounts {
  uint64_t requests = 0;
  std::map<unsigned, uint64_t> responses;  // by status code
  uint64_t errors = 0;                     // answered by gpuvisor itself (404, 502, 503)
  uint64_t client_gone = 0;                // the client left before the response ended
  uint64_t upgrades = 0;                   // WebSockets (or other upgrades) the service took
  uint64_t open_tunnels = 0;               // of those, open now
  // Time to the response head, in seconds: cumulative counts per upper bound, then the total.
  static constexpr double kBuckets[] = {0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                                        1,     2.5,  5,     10,   30,  60,   300};
  uint64_t latency_counts[std::size(kBuckets)] = {};
  uint64_t latency_count = 0;
  double latency_sum = 0;
};

// One thread's shard.
class ProxyStats {
 public:
  using Counter = std::atomic<uint64_t>;
  // Only the shard's own thread calls these.
  static void add(Counter& c, int64_t n = 1) {
    c.store(c.load(std::memory_order_relaxed) + static_cast<uint64_t>(n),
            std::memory_order_relaxed);
  }
  void respond(unsigned status) {
    if (status >= 100 && status < 600) add(responses_[status - 100]);
  }
  void head_after(double seconds) {
    for (size_t i = 0; i < std::size(ProxyCounts::kBuckets); ++i) {
      if (seconds <= ProxyCounts::kBuckets[i]) add(latency_counts_[i]);
    }
    add(latency_count_);
    latency_sum_.store(latency_sum_.load(std::memory_order_relaxed) + seconds,
                       std::memory_order_relaxed);
  }
  // Adds this shard into counts (any thread).
  void add_to(ProxyCounts& counts) const;

  Counter requests{0};
  Counter errors{0};
  Counter client_gone{0};
  Counter upgrades{0};
  Counter tunnels_opened{0};
  Counter tunnels_closed{0};

 private:
  std::array<Counter, 500> responses_{};  // 100..599
  std::array<Counter, std::size(ProxyCounts::kBuckets)> latency_counts_{};
  Counter latency_count_{0};
  std::atomic<double> latency_sum_{0};
};

inline void ProxyStats::add_to(ProxyCounts& counts) const {
  constexpr auto r = std::memory_order_relaxed;
  counts.requests += requests.load(r);
  counts.errors += errors.load(r);
  counts.client_gone += client_gone.load(r);
  counts.upgrades += upgrades.load(r);
  // Opened and closed on the same shard; the closes read first, so never more than the opens.
  const uint64_t closed = tunnels_closed.load(std::memory_order_acquire);
  counts.open_tunnels += tunnels_opened.load(std::memory_order_acquire) - closed;
  for (size_t i = 0; i < responses_.size(); ++i) {
    if (const uint64_t n = responses_[i].load(r))
      counts.responses[static_cast<unsigned>(i + 100)] += n;
  }
  for (size_t i = 0; i < latency_counts_.size(); ++i) {
    counts.latency_counts[i] += latency_counts_[i].load(r);
  }
  counts.latency_count += latency_count_.load(r);
  counts.latency_sum += latency_sum_.load(r);
}

}  // namespace gpuvisor
