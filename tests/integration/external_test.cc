// External services: a test service gpuvisor did not start plays the server (an Ollama, a
// vLLM); its /sleep and /wake_up give back and take again its simulated VRAM, as vLLM's do.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>

#include <filesystem>

#include "testkit/daemon.h"
#include "testkit/fake_gpu.h"

namespace gpuvisor::itest {
namespace {

const char* kOneGpu = R"({"devices": [{"name": "Sim 24G", "total_mb": 24576}]})";

std::string url(int port, const std::string& path) {
  return "http://127.0.0.1:" + std::to_string(port) + path;
}

std::string external_yaml(int port, const std::string& sleep_path = "/sleep") {
  return "  vllm:\n    runtime: external\n    vram_mb: 8000\n    priority: 1\n    external:\n"
         "      port: " +
         std::to_string(port) + "\n      sleep: {http: \"" + url(port, sleep_path) +
         "\"}\n      wake: {http: \"" + url(port, "/wake_up") + "\"}\n    health: {http: \"" +
         url(port, "/health") + "\"}\n";
}

std::string big_yaml(int port) {
  return "  big:\n    command: [$TESTSVC, --port, \"" + std::to_string(port) +
         "\", --vram-mb, \"20000\"]\n    vram_mb: 20000\n    priority: 5\n    health: {http: \"" +
         url(port, "/health") + "\"}\n";
}

struct Server {
  pid_t pid = -1;
  ~Server() {
    if (pid > 0) {
      kill(pid, SIGTERM);
      waitpid(pid, nullptr, 0);
    }
  }
};

size_t holds(const std::string& dir) {
  size_t n = 0;
  for (const auto& e : std::filesystem::directory_iterator(dir + "/gpu/holds")) {
    n += e.path().extension() == ".json";
  }
  return n;
}

TEST(External, WokenAttributedPutToSleepForRoomAndNeverStopped) {
  const std::string dir = make_temp_dir("external");
  FakeGpu gpu(dir, kOneGpu);
  const int port = free_port();
  Server server{start_testsvc({"--port", std::to_string(port), "--vram-mb", "8000"}, "listening")};
  ASSERT_GT(server.pid, 0);
  Daemon d("services:\n" + external_yaml(port) + big_yaml(free_port()), dir);
  ASSERT_TRUE(d.start()) << d.stderr_text();

  const auto woken = d.cli({"ensure", "vllm"});
  ASSERT_EQ(0, woken.exit_code) << woken.err;
  auto svc = d.service("vllm");
  EXPECT_EQ("external", svc["mode"]);
  EXPECT_EQ(server.pid, svc["pid"]);  // found by its listening port
  const auto procs = nlohmann::json::parse(d.call("GET", "/api/v1/processes")->body);
  ASSERT_EQ(1u, procs["processes"].size()) << procs.dump();
  EXPECT_EQ("vllm", procs["processes"][0].value("owner", "")) << procs.dump();

  // big does not fit beside it: vllm is put to sleep, not stopped.
  const auto ensured = d.cli({"ensure", "big"});
  ASSERT_EQ(0, ensured.exit_code) << ensured.err;
  svc = d.service("vllm");
  EXPECT_EQ("sleeping", svc["state"]);
  EXPECT_NE(std::string::npos,
            svc["reason"].get<std::string>().find("put to sleep to make room for big"))
      << svc.dump();
  EXPECT_EQ(server.pid, svc["pid"]);  // still its own
  EXPECT_TRUE(pid_alive(server.pid));
  ASSERT_EQ(0, d.cli({"stop", "big"}).exit_code);
  EXPECT_EQ(0u, holds(dir));

  // Woken again: the server takes its VRAM back, still the same process.
  ASSERT_EQ(0, d.cli({"ensure", "vllm"}).exit_code);
  EXPECT_EQ(1u, holds(dir));
  EXPECT_EQ(server.pid, d.service("vllm")["pid"]);

  // A daemon shutdown leaves someone else's server alone.
  EXPECT_EQ(0, d.terminate());
  EXPECT_TRUE(pid_alive(server.pid));
  EXPECT_EQ(1u, holds(dir));
}

// vLLM's level-1 sleep leaves a residual in VRAM. The eviction waits for enough free memory,
// not for the server to vanish from NVML's list, which it never does.
TEST(External, ASleepThatLeavesAResidualStillMakesRoom) {
  const std::string dir = make_temp_dir("residual");
  FakeGpu gpu(dir, kOneGpu);
  const int port = free_port();
  Server server{start_testsvc(
      {"--port", std::to_string(port), "--vram-mb", "16000", "--sleep-residual-mb", "1200"},
      "listening")};
  ASSERT_GT(server.pid, 0);
  Daemon d("services:\n" + external_yaml(port) + big_yaml(free_port()), dir);
  ASSERT_TRUE(d.start()) << d.stderr_text();
  ASSERT_EQ(0, d.cli({"ensure", "vllm"}).exit_code);
  // 16000 of 24576 MiB are vllm's; big needs 20000: vllm sleeps down to 1200, and big fits.
  const auto ensured = d.cli({"ensure", "big"});
  ASSERT_EQ(0, ensured.exit_code) << ensured.err;
  EXPECT_EQ("ready", d.service("big")["state"]);
  EXPECT_TRUE(pid_alive(server.pid));
  const auto procs = body(d.call("GET", "/api/v1/processes"))["processes"];
  bool residual = false;
  for (const auto& p : procs) residual = residual || p["used_bytes"] == 1200ULL << 20;
  EXPECT_TRUE(residual) << procs.dump();
  // Once NVML's readings settle, the residual is what the service says it holds.
  EXPECT_TRUE(eventually([&] {
    return d.service("vllm")["reason"].get<std::string>().find("still holds 1.2 GiB") !=
           std::string::npos;
  })) << d.service("vllm").dump();
}

// Ollama started by systemd with its model loaded: ensure claims it where it is, with no plan
// that would count its memory as someone else's.
TEST(External, AServerAlreadyLoadedIsClaimedNotRefused) {
  const std::string dir = make_temp_dir("claimed");
  FakeGpu gpu(dir, kOneGpu);
  const int port = free_port();
  Server server{start_testsvc({"--port", std::to_string(port), "--vram-mb", "16000"}, "listening")};
  ASSERT_GT(server.pid, 0);
  Daemon d("services:\n" + external_yaml(port) + big_yaml(free_port()), dir);
  ASSERT_TRUE(d.start()) << d.stderr_text();
  // Claimed at start-up: its memory is its own, and the GPU has no outsider on it.
  EXPECT_TRUE(eventually([&] { return d.service("vllm")["state"] == "ready"; }))
      << d.service("vllm").dump();
  const auto procs = body(d.call("GET", "/api/v1/processes"))["processes"];
  ASSERT_EQ(1u, procs.size()) << procs.dump();
  EXPECT_EQ("vllm", procs[0].value("owner", "")) << procs.dump();
  const auto ensured = d.cli({"ensure", "vllm"});
  ASSERT_EQ(0, ensured.exit_code) << ensured.err;
  EXPECT_EQ(server.pid, d.service("vllm")["pid"]);
  EXPECT_EQ(1u, holds(dir));
}

TEST(External, TheServerExitingIsNoticedAtOnce) {
  const int port = free_port();
  Server server{start_testsvc({"--port", std::to_string(port)}, "listening")};
  Daemon d("services:\n" + external_yaml(port));
  ASSERT_TRUE(d.start()) << d.stderr_text();
  ASSERT_EQ(0, d.cli({"ensure", "vllm"}).exit_code);
  kill(server.pid, SIGKILL);
  waitpid(server.pid, nullptr, 0);
  const pid_t gone = server.pid;
  server.pid = -1;
  EXPECT_TRUE(d.wait_event([&](const nlohmann::json& e) {
    return e["type"] == "service.state_changed" && e["data"]["to"] == "error" &&
           e["data"]["reason"].get<std::string>().find(
               "external server pid " + std::to_string(gone) + " exited") != std::string::npos;
  })) << d.stderr_text();
}

TEST(External, NotRunningOrAFailingHookIsAClearError) {
  const int port = free_port();
  Daemon d("services:\n" + external_yaml(port, "/no-such-endpoint"));
  ASSERT_TRUE(d.start()) << d.stderr_text();
  // Nothing listens: gpuvisor says so and starts nothing.
  auto r = d.cli({"ensure", "vllm"});
  EXPECT_NE(0, r.exit_code);
  EXPECT_NE(std::string::npos,
            r.err.find("wake hook failed: POST " + url(port, "/wake_up") + ": Connection refused"))
      << r.err;

  Server server{start_testsvc({"--port", std::to_string(port)}, "listening")};
  ASSERT_EQ(0, d.cli({"ensure", "vllm"}).exit_code);
  ASSERT_EQ(0, d.cli({"stop", "vllm"}).exit_code);
  const auto svc = d.service("vllm");
  EXPECT_NE(std::string::npos,
            svc["reason"].get<std::string>().find("sleep hook failed: POST " +
                                                  url(port, "/no-such-endpoint") + ": HTTP 404"))
      << svc.dump();
  EXPECT_TRUE(pid_alive(server.pid));
}

}  // namespace
}  // namespace gpuvisor::itest
