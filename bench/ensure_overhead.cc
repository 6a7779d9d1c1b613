// Orchestration overhead of `ensure`: the time an ensure takes, minus the time the service
// itself needed between its first instruction and listening (the test service reports both on
// CLOCK_MONOTONIC, which is system-wide). What is left is gpuvisor's: fork/exec, the readiness
// checks' lag, the API round trip.
//
//   bench_ensure_overhead [--cycles N] [--ready-after MS]...

#include <cstring>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>
#include <string>

#include "stats.h"
#include "testkit/daemon.h"

using gpuvisor::itest::Daemon;
using gpuvisor::itest::free_port;

namespace {

nlohmann::json last_report(const std::string& path) {
  std::ifstream in(path);
  std::string line, last;
  while (std::getline(in, line)) last = line;
  return nlohmann::json::parse(last, nullptr, false);
}

int run(int cycles, int ready_after_ms) {
  const int port = free_port();
  const std::string p = std::to_string(port);
  Daemon d("services:\n  svc:\n    command: [$TESTSVC, --port, \"" + p + "\", --ready-after, \"" +
           std::to_string(ready_after_ms) + "\", --report, $DIR/report]\n" +
           "    health:\n      http: http://127.0.0.1:" + p + "/health\n");
  if (!d.start({"--log-level", "warn"})) {
    std::cerr << "daemon did not start:\n" << d.stderr_text();
    return 1;
  }
  std::vector<double> overhead, total, own;
  for (int i = 0; i < cycles; ++i) {
    const double t0 = gpuvisor::bench::monotonic_ms();
    auto reply = d.call("POST", "/api/v1/services/svc/ensure");
    const double t1 = gpuvisor::bench::monotonic_ms();
    if (!reply || reply->status != 200) {
      std::cerr << "ensure failed: " << (reply ? reply->body : reply.error().message) << "\n";
      return 1;
    }
    const auto report = last_report(d.dir() + "/report");
    const double service_ms =
        (report["listen_ns"].get<double>() - report["start_ns"].get<double>()) / 1e6;
    total.push_back(t1 - t0);
    own.push_back(service_ms);
    overhead.push_back(t1 - t0 - service_ms);
    auto stopped = d.call("POST", "/api/v1/services/svc/stop");
    if (!stopped || stopped->status != 200) {
      std::cerr << "stop failed\n";
      return 1;
    }
  }
  const std::string tag = "ready_after=" + std::to_string(ready_after_ms) + "ms";
  std::cout << gpuvisor::bench::format("ensure_total " + tag, gpuvisor::bench::summarize(total),
                                       "ms")
            << "\n"
            << gpuvisor::bench::format("service_own " + tag, gpuvisor::bench::summarize(own), "ms")
            << "\n"
            << gpuvisor::bench::format("overhead " + tag, gpuvisor::bench::summarize(overhead),
                                       "ms")
            << std::endl;
  d.terminate();
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  int cycles = 200;
  std::vector<int> ready_after;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--cycles") == 0 && i + 1 < argc) {
      cycles = std::stoi(argv[++i]);
    } else if (std::strcmp(argv[i], "--ready-after") == 0 && i + 1 < argc) {
      ready_after.push_back(std::stoi(argv[++i]));
    } else {
      std::cerr << "usage: bench_ensure_overhead [--cycles N] [--ready-after MS]...\n";
      return 2;
    }
  }
  if (ready_after.empty()) ready_after = {0, 50, 500};
  for (const int r : ready_after) {
    if (const int rc = run(cycles, r); rc != 0) return rc;
  }
  return 0;
}
