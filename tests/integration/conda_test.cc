// A process service with conda_env runs through `conda run` (a stand-in for conda here, which
// Debian does not package) and is tracked and stopped like any process service.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "testkit/daemon.h"

namespace gpuvisor::itest {
namespace {

std::string environ_of(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/environ");
  std::string text(std::istreambuf_iterator<char>(in), {});
  for (auto& c : text) c = c == '\0' ? '\n' : c;
  return text;
}

TEST(Conda, ServiceRunsInItsEnvironmentAndStopsLikeAnyProcess) {
  const std::string envs = make_temp_dir("conda-envs");
  std::filesystem::create_directories(envs + "/vision");
  setenv("FAKE_CONDA_ENVS", envs.c_str(), 1);
  const int port = free_port();
  const int port2 = free_port();
  Daemon d(std::string("daemon: {conda: ") + GPUVISOR_FAKE_CONDA +
           "}\nservices:\n  vision:\n    conda_env: vision\n    command: [$TESTSVC, --port, \"" +
           std::to_string(port) +
           "\"]\n    health: {http: \"http://127.0.0.1:" + std::to_string(port) +
           "/health\"}\n  missing:\n    conda_env: nope\n"
           "    command: [$TESTSVC, --port, \"" +
           std::to_string(port2) + "\"]\n    health: {tcp: \"127.0.0.1:" + std::to_string(port2) +
           "\"}\n");
  ASSERT_TRUE(d.start()) << d.stderr_text();
  const auto ensured = d.cli({"ensure", "vision"});
  ASSERT_EQ(0, ensured.exit_code) << ensured.err;
  const auto svc = d.service("vision");
  EXPECT_EQ("conda_env", svc["mode"]);
  const pid_t pid = svc["pid"];
  EXPECT_NE(std::string::npos, environ_of(pid).find("\nCONDA_DEFAULT_ENV=vision\n"));
  ASSERT_EQ(0, d.cli({"stop", "vision"}).exit_code);
  EXPECT_FALSE(pid_alive(pid));

  // conda's own complaint reaches the user, not just an exit status.
  const auto missing = d.cli({"ensure", "missing"});
  EXPECT_NE(0, missing.exit_code);
  EXPECT_NE(std::string::npos, missing.err.find("Not a conda environment: nope")) << missing.err;
  unsetenv("FAKE_CONDA_ENVS");
}

}  // namespace
}  // namespace gpuvisor::itest
