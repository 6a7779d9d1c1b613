#include "stats.h"

#include <time.h>

#include <algorithm>
#include <cstdio>
#include <numeric>

namespace gpuvisor::bench {

Summary summarize(std::vector<double> samples) {
  Summary s;
  s.count = samples.size();
  if (samples.empty()) return s;
  std::sort(samples.begin(), samples.end());
  auto at = [&](double q) {
    const auto index = static_cast<size_t>(q * static_cast<double>(samples.size() - 1) + 0.5);
    return samples[std::min(index, samples.size() - 1)];
  };
  s.p50 = at(0.50);
  s.p90 = at(0.90);
  s.p99 = at(0.99);
  s.max = samples.back();
  s.mean =
      std::accumulate(samples.begin(), samples.end(), 0.0) / static_cast<double>(samples.size());
  return s;
}

std::string format(const std::string& name, const Summary& s, const std::string& unit) {
  char line[256];
  std::snprintf(line, sizeof line, "%s: n=%zu p50=%.2f p90=%.2f p99=%.2f max=%.2f mean=%.2f %s",
                name.c_str(), s.count, s.p50, s.p90, s.p99, s.max, s.mean, unit.c_str());
  return line;
}

double monotonic_ms() {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<double>(ts.tv_sec) * 1e3 + static_cast<double>(ts.tv_nsec) / 1e6;
}

}  // namespace gpuvisor::bench
