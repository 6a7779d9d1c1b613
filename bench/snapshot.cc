// Cost of one full GPU inventory (every device and process) read in-process through NVML,
// against running `nvidia-smi --query-compute-apps` once, where nvidia-smi exists.
//
//   bench_snapshot [--library PATH] [--count N]
// With no --library, GPUVISOR_NVML_LIBRARY or libnvidia-ml.so.1 is used; to measure on a
// machine without a GPU, point it at libgpuvisor-fake-nvml.so with FAKE_NVML_DIR set.

#include <cstdio>
#include <cstring>
#include <iostream>

#include "gpu/inventory.h"
#include "stats.h"

namespace {}  // namespace

int main(int argc, char** argv) {
  std::string library = gpuvisor::default_nvml_library();
  int count = 1000;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--library") == 0 && i + 1 < argc) {
      library = argv[++i];
    } else if (std::strcmp(argv[i], "--count") == 0 && i + 1 < argc) {
      count = std::stoi(argv[++i]);
    } else {
      std::cerr << "usage: bench_snapshot [--library PATH] [--count N]\n";
      return 2;
    }
  }
  auto inventory = gpuvisor::open_nvml_inventory(library);
  std::cout << "inventory: " << inventory->describe() << "\n";
  std::vector<double> samples;
  size_t devices = 0, processes = 0;
  for (int i = 0; i < count; ++i) {
    const double t0 = (gpuvisor::bench::monotonic_ms() * 1e3);
    auto snap = inventory->snapshot();
    samples.push_back((gpuvisor::bench::monotonic_ms() * 1e3) - t0);
    if (!snap) {
      std::cerr << snap.error().message << "\n";
      return 1;
    }
    devices = snap->devices.size();
    processes = snap->processes.size();
  }
  std::cout << gpuvisor::bench::format("snapshot (" + std::to_string(devices) + " GPUs, " +
                                           std::to_string(processes) + " processes)",
                                       gpuvisor::bench::summarize(samples), "us")
            << "\n";
  if (std::system("command -v nvidia-smi >/dev/null 2>&1") != 0) {
    std::cout << "nvidia-smi: not on this machine\n";
    return 0;
  }
  std::vector<double> smi;
  for (int i = 0; i < 20; ++i) {
    const double t0 = (gpuvisor::bench::monotonic_ms() * 1e3);
    if (std::system("nvidia-smi --query-compute-apps=pid,used_memory --format=csv >/dev/null") !=
        0) {
      break;
    }
    smi.push_back((gpuvisor::bench::monotonic_ms() * 1e3) - t0);
  }
  std::cout << gpuvisor::bench::format("nvidia-smi --query-compute-apps",
                                       gpuvisor::bench::summarize(smi), "us")
            << "\n";
  return 0;
}
