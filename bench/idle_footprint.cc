// The daemon's footprint at rest: 50 services declared, some of them running with liveness
// checks, nothing asked of it. Reports RSS and the CPU it used over the window; a busy-polling
// loop would show up as CPU time.
//
//   bench_idle_footprint [--seconds S] [--running N]
#include <unistd.h>

#include <cstring>
#include <fstream>
#include <iostream>
#include <sstream>
#include <thread>

#include "testkit/daemon.h"

using gpuvisor::itest::Daemon;
using gpuvisor::itest::free_port;

namespace {

long rss_kib(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  std::string key;
  long value = 0;
  while (in >> key) {
    if (key == "VmRSS:") {
      in >> value;
      return value;
    }
    in.ignore(1 << 20, '\n');
  }
  return -1;
}

double cpu_seconds(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string line;
  std::getline(in, line);
  std::istringstream rest(line.substr(line.rfind(')') + 2));
  std::string field;
  double ticks = 0;
  for (int index = 3; rest >> field; ++index) {
    if (index == 14 || index == 15) ticks += std::stod(field);  // utime, stime
    if (index == 15) break;
  }
  return ticks / static_cast<double>(sysconf(_SC_CLK_TCK));
}

}  // namespace

int main(int argc, char** argv) {
  int seconds = 60;
  int running = 10;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--seconds") == 0 && i + 1 < argc) {
      seconds = std::stoi(argv[++i]);
    } else if (std::strcmp(argv[i], "--running") == 0 && i + 1 < argc) {
      running = std::stoi(argv[++i]);
    } else {
      std::cerr << "usage: bench_idle_footprint [--seconds S] [--running N]\n";
      return 2;
    }
  }
  std::string config = "services:\n";
  for (int i = 0; i < 50; ++i) {
    const std::string port = std::to_string(free_port());
    config += "  svc" + std::to_string(i) + ":\n    command: [$TESTSVC, --port, \"" + port +
              "\"]\n    health:\n      http: http://127.0.0.1:" + port +
              "/health\n      interval: 5s\n";
  }
  Daemon d(config);
  if (!d.start({"--log-level", "warn"})) {
    std::cerr << "daemon did not start:\n" << d.stderr_text();
    return 1;
  }
  for (int i = 0; i < running; ++i) {
    auto r = d.call("POST", "/api/v1/services/svc" + std::to_string(i) + "/ensure");
    if (!r || r->status != 200) {
      std::cerr << "ensure svc" << i << " failed\n";
      return 1;
    }
  }
  const pid_t pid = d.pid();
  const double cpu0 = cpu_seconds(pid);
  // The measurement window itself: the one place a benchmark waits by the clock.
  std::this_thread::sleep_for(std::chrono::seconds(seconds));
  const double cpu1 = cpu_seconds(pid);
  std::cout << "idle_footprint: services=50 running=" << running << " window=" << seconds
            << "s rss=" << rss_kib(pid) / 1024.0 << "MiB cpu=" << (cpu1 - cpu0) << "s ("
            << 100.0 * (cpu1 - cpu0) / seconds << "% of one core)" << std::endl;
  d.terminate();
  return 0;
}
