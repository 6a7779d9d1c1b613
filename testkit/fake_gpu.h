// A simulated GPU for one integration test: the fake NVML library, loaded by the daemon through
// its real dlopen path, with its state in the test's directory.
#pragma once

#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

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

// A test service gpuvisor did not start (an "external" process), run with args. Returns once
// it has said `until` on its stdout ("holding", "listening on"): a blocking read of its output,
// not a wait by the clock. -1 if it could not start.
inline pid_t start_testsvc(const std::vector<std::string>& args, const std::string& until) {
  int out[2];
  if (pipe(out) != 0) return -1;
  const pid_t pid = fork();
  if (pid == 0) {
    dup2(out[1], STDOUT_FILENO);
    close(out[0]);
    std::vector<char*> argv{const_cast<char*>(GPUVISOR_TESTSVC)};
    for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    execv(GPUVISOR_TESTSVC, argv.data());
    _exit(127);
  }
  close(out[1]);
  std::string said;
  char buf[256];
  ssize_t n = 0;
  while (said.find(until) == std::string::npos && (n = read(out[0], buf, sizeof buf)) > 0) {
    said.append(buf, static_cast<size_t>(n));
  }
  close(out[0]);
  return pid;
}

// A process gpuvisor did not start, holding VRAM on a GPU.
inline pid_t start_external(unsigned gpu, unsigned mb) {
  return start_testsvc(
      {"--port", "0", "--gpu", std::to_string(gpu), "--vram-mb", std::to_string(mb)}, "holding");
}

}  // namespace gpuvisor::itest
