// Percentiles and the one output format every benchmark prints.
#pragma once

#include <string>
#include <vector>

namespace gpuvisor::bench {

struct Summary {
  size_t count = 0;
  double p50 = 0, p90 = 0, p99 = 0, max = 0, mean = 0;
};

Summary summarize(std::vector<double> samples);
// CLOCK_MONOTONIC in milliseconds: the clock gpuvisor-testsvc reports on too.
double monotonic_ms();
// "name: n=200 p50=1.23 p90=... p99=... max=... mean=... unit"
std::string format(const std::string& name, const Summary& s, const std::string& unit);

}  // namespace gpuvisor::bench
