// /metrics in the Prometheus text format (version 0.0.4). What only the event stream knows
// (evictions, start-up times, conflicts) is counted as events arrive; the rest is read at
// scrape time from its owner.
#pragma once

#include <deque>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "api/proxy.h"
#include "core/gpu.h"
#include "core/ownership.h"
#include "events/event_bus.h"
#include "resources/worker_registry.h"
#include "supervisor/supervisor.h"

namespace gpuvisor {

class Metrics {
 public:
  explicit Metrics(EventBus& events);
  ~Metrics();
  Metrics(const Metrics&) = delete;
  Metrics& operator=(const Metrics&) = delete;

  struct Scrape {
    std::vector<ServiceView> services;
    std::optional<GpuSnapshot> gpus;      // none without NVML
    Ownership owners;                     // our PIDs, to split GPU memory
    std::map<std::string, int64_t> jobs;  // by state
    std::map<std::string, ProxyCounts> proxy;
    std::vector<const WorkerInfo*> workers;
    size_t queued = 0;    // placements waiting in the admission queue now
    int64_t unix_ms = 0;  // when it was taken, for what counts over the last minute
  };
  std::string render(const Scrape& now) const;

  // Start-up time buckets (seconds), from "starting" to "ready".
  static constexpr double kStartBuckets[] = {0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600};
  // Admission queue waits (seconds), from enqueued to placed.
  static constexpr double kWaitBuckets[] = {0.1, 0.5, 1, 5, 10, 30, 60, 300, 1200};

 private:
  // One histogram's counts over the bounds of its family.
  template <size_t N>
  struct Observed {
    uint64_t counts[N] = {};
    uint64_t count = 0;
    double sum = 0;
    void add(const double (&bounds)[N], double value) {
      for (size_t i = 0; i < N; ++i) {
        if (value <= bounds[i]) ++counts[i];
      }
      ++count;
      sum += value;
    }
  };
  void on_event(const Event& e);

  EventBus& events_;
  uint64_t subscription_ = 0;
  std::map<std::pair<std::string, std::string>, uint64_t> evictions_;  // (victim, for)
  std::map<std::string, int64_t> starting_since_ms_;
  std::map<std::string, Observed<std::size(kStartBuckets)>> starts_;
  std::map<std::string, uint64_t> restarts_;  // automatic restarts after a failure
  std::map<unsigned, bool> conflicts_;
  Observed<std::size(kWaitBuckets)> waits_;
  uint64_t queue_timeouts_ = 0;
  // Placements that evicted something to make room; those of the last minute by when.
  uint64_t swaps_ = 0;
  std::deque<int64_t> swap_times_ms_;
};

}  // namespace gpuvisor
