// Two services that do not fit together on a simulated 24 GB GPU (the fake NVML library, loaded
// through the daemon's real dlopen path), ensured in turn. Each ensure must stop the other,
// wait until NVML shows the memory back, and start the one asked for.
//
//   overhead = ensure time - (victim's exit - ensure sent) - (new service: listen - start)
//   confirm  = new service's start - victim's exit: how long gpuvisor took to see the memory
//              free and start the next one (includes fork/exec up to the service's main)
//
//   bench_swap [--cycles N]

#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <nlohmann/json.hpp>

#include "stats.h"
#include "testkit/daemon.h"

using gpuvisor::itest::Daemon;
using gpuvisor::itest::free_port;

namespace {

// pid -> the fields of its lines in a report file.
std::map<long, nlohmann::json> read_reports(const std::string& path) {
  std::map<long, nlohmann::json> out;
  std::ifstream in(path);
  std::string line;
  while (std::getline(in, line)) {
    const auto j = nlohmann::json::parse(line, nullptr, false);
    if (j.is_object()) out[j.value("pid", 0L)].update(j);
  }
  return out;
}

std::string service(const std::string& name, int port, const std::string& dir) {
  const std::string p = std::to_string(port);
  return "  " + name + ":\n    command: [$TESTSVC, --port, \"" + p +
         "\", --vram-mb, \"16000\", --report, " + dir + "/report, --exit-report, " + dir +
         "/report]\n    vram_mb: 16000\n    stop_grace: 5s\n    health:\n      tcp: 127.0.0.1:" +
         p + "\n";
}

}  // namespace

int main(int argc, char** argv) {
  int cycles = 200;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--cycles") == 0 && i + 1 < argc) {
      cycles = std::stoi(argv[++i]);
    } else {
      std::cerr << "usage: bench_swap [--cycles N]\n";
      return 2;
    }
  }
  const std::string dir = gpuvisor::itest::make_temp_dir("swap");
  std::filesystem::create_directories(dir + "/gpu/holds");
  std::ofstream(dir + "/gpu/devices.json") << R"({"devices": [{"total_mb": 24576}]})";
  setenv("FAKE_NVML_DIR", (dir + "/gpu").c_str(), 1);
  setenv("GPUVISOR_NVML_LIBRARY", GPUVISOR_FAKE_NVML, 1);
  Daemon d("services:\n" + service("a", free_port(), dir) + service("b", free_port(), dir), dir);
  if (!d.start({"--log-level", "warn"})) {
    std::cerr << "daemon did not start:\n" << d.stderr_text();
    return 1;
  }
  std::vector<double> total, overhead, confirm;
  pid_t previous = 0;
  for (int i = 0; i <= cycles; ++i) {
    const std::string name = i % 2 == 0 ? "a" : "b";
    const double t0 = gpuvisor::bench::monotonic_ms();
    const auto reply = d.call("POST", "/api/v1/services/" + name + "/ensure");
    const double t1 = gpuvisor::bench::monotonic_ms();
    if (!reply || reply->status != 200) {
      std::cerr << "ensure " << name << " failed: " << (reply ? reply->body : "") << "\n";
      return 1;
    }
    const pid_t pid = nlohmann::json::parse(reply->body)["pid"].get<pid_t>();
    if (i > 0) {  // the first ensure evicts nothing
      const auto reports = read_reports(dir + "/report");
      const auto& victim = reports.at(previous);
      const auto& fresh = reports.at(pid);
      const double exit_ms = victim.at("exit_ns").get<double>() / 1e6;
      const double start_ms = fresh.at("start_ns").get<double>() / 1e6;
      const double own_ms = fresh.at("listen_ns").get<double>() / 1e6 - start_ms;
      total.push_back(t1 - t0);
      overhead.push_back((t1 - t0) - (exit_ms - t0) - own_ms);
      confirm.push_back(start_ms - exit_ms);
    }
    previous = pid;
  }
  using gpuvisor::bench::format;
  using gpuvisor::bench::summarize;
  std::cout << format("swap_ensure_total", summarize(total), "ms") << "\n"
            << format("swap_overhead", summarize(overhead), "ms") << "\n"
            << format("swap_exit_to_next_start", summarize(confirm), "ms") << std::endl;
  d.terminate();
  return 0;
}
