// A simulated GPU for one integration test: the fake NVML library, loaded by the daemon through
// its real dlopen path, with its state in the test's directory.
#pragma once

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>

namespace gpuvisor::itest {

// Points the daemon (and everything it starts) at a simulated GPU for one test.
class FakeGpu {
 public:
  static constexpr const char* kTwoGpus = R"({"devices": [{"name": "Sim 24G", "total_mb": 24576},
                           {"name": "Sim 80G", "total_mb": 81920}]})";

  // devices: the fake's devices.json.
  explicit FakeGpu(const std::string& dir, const std::string& devices = kTwoGpus)
      : dir_(dir + "/gpu") {
    std::filesystem::create_directories(dir_ + "/holds");
    std::ofstream(dir_ + "/devices.json") << devices;
    setenv("FAKE_NVML_DIR", dir_.c_str(), 1);
    setenv("GPUVISOR_NVML_LIBRARY", GPUVISOR_FAKE_NVML, 1);
  }
  ~FakeGpu() {
    unsetenv("FAKE_NVML_DIR");
    unsetenv("GPUVISOR_NVML_LIBRARY");
  }

 private:
  std::string dir_;
};

}  // namespace gpuvisor::itest
