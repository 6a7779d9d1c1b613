// SPDX-License-Identifier: Apache-2.0
// Sleep and wake for a service gpuvisor starts itself: the test service plays vLLM with
// --enable-sleep-mode (POST /sleep keeps a residual, POST /wake_up loads again), on a simulated
// 24 GiB GPU through the fake NVML library.
#include <gtest/gtest.h>

#include "testkit/daemon.h"
#include "testkit/fake_gpu.h"

namespace gpuvisor::itest {
namespace {

const char* kOneGpu = R"({"devices": [{"name": "Sim 24G", "total_mb": 24576}]})";

std::string url(int port, const std::string& path) {
  return "http://127.0.0.1:" + std::to_string(port) + path;
}

// llm holds 16000 MiB awake and 1200 asleep; img needs 20000 and outranks it.
std::string sleepy_yaml(int llm, int img, const std::string& sleep_path = "/sleep") {
  return "services:\n  llm:\n    command: [$TESTSVC, --port, \"" + std::to_string(llm) +
         "\", --vram-mb, \"16000\", --sleep-residual-mb, \"1200\"]\n    vram_mb: 16000\n"
         "    priority: 1\n    sleep: {http: \"" +
         url(llm, sleep_path) + "\"}\n    wake: {http: \"" + url(llm, "/wake_up") +
         "\"}\n    health: {http: \"" + url(llm, "/health") + "\"}\n    proxy: {url: \"" +
         url(llm, "") + "\"}\n  img:\n    command: [$TESTSVC, --port, \"" + std::to_string(img) +
         "\", --vram-mb, \"20000\"]\n    vram_mb: 20000\n    priority: 5\n    health: {http: \"" +
         url(img, "/health") + "\"}\n";
}

uint64_t held_by(Daemon& d, const std::string& owner) {
  uint64_t bytes = 0;
  const nlohmann::json processes = body(d.call("GET", "/api/v1/processes"))["processes"];
  for (const auto& p : processes) {
    if (p.value("owner", "") == owner) bytes += p.value("used_bytes", uint64_t{0});
  }
  return bytes;
}

bool reason_has(Daemon& d, const std::string& service, const std::string& text) {
  return d.service(service)["reason"].get<std::string>().find(text) != std::string::npos;
}

TEST(Sleep, AHigherPriorityEnsurePutsItToSleepAndTheNextEnsureWakesItWithoutARestart) {
  const std::string dir = make_temp_dir("sleep");
  FakeGpu gpu(dir, kOneGpu);
  Daemon d(sleepy_yaml(free_port(), free_port()), dir);
  ASSERT_TRUE(d.start()) << d.stderr_text();
  ASSERT_EQ(0, d.cli({"ensure", "llm"}).exit_code);
  const pid_t llm = d.service("llm")["pid"];

  const auto img = d.cli({"ensure", "img"});
  ASSERT_EQ(0, img.exit_code) << img.err;
  auto svc = d.service("llm");
  EXPECT_EQ("sleeping", svc["state"]) << svc.dump();
  EXPECT_EQ(llm, svc["pid"]);  // the same process, its RAM kept
  EXPECT_TRUE(pid_alive(llm));
  EXPECT_TRUE(reason_has(d, "llm", "put to sleep to make room for img"));
  // Its residual is its own, measured once NVML settles, and counted where it sleeps.
  EXPECT_TRUE(eventually([&] { return reason_has(d, "llm", "still holds 1.2 GiB"); }))
      << d.service("llm").dump();
  EXPECT_EQ(1200ULL << 20, held_by(d, "llm"));
  EXPECT_TRUE(d.wait_event(
      [](const nlohmann::json& e) {
        return e["data"]["service"] == "img" && e["data"]["evict"] == nlohmann::json{"llm"};
      },
      20s, "&types=plan.decided"));

  // The state shows everywhere: the CLI, and /metrics.
  EXPECT_NE(std::string::npos, d.cli({"status", "llm"}).out.find("sleeping"));
  EXPECT_NE(std::string::npos,
            d.call("GET", "/metrics")
                ->body.find("gpuvisor_service_state{service=\"llm\",state=\"sleeping\"} 1"));

  // img outranks it: waking it would need img gone, and a plan says so.
  const auto refused = d.cli({"ensure", "llm", "--timeout", "5s"});
  EXPECT_EQ(1, refused.exit_code);
  EXPECT_NE(std::string::npos, refused.err.find("img (priority 5 > 1")) << refused.err;
  EXPECT_EQ("sleeping", d.service("llm")["state"]);

  // A request through the proxy wakes it, as it would start a stopped one.
  ASSERT_EQ(0, d.cli({"stop", "img"}).exit_code);
  const auto woken = d.call("GET", "/upstream/llm/health");
  ASSERT_TRUE(woken.ok());
  EXPECT_EQ(200u, woken->status) << woken->body;
  EXPECT_TRUE(eventually([&] { return d.service("llm")["state"] == "ready"; }));  // linger over
  svc = d.service("llm");
  EXPECT_EQ(llm, svc["pid"]);  // woken, not restarted
  EXPECT_EQ(16000ULL << 20, held_by(d, "llm"));
  EXPECT_EQ(0, svc["restarts"]);
}

TEST(Sleep, ASleepHookThatFailsStopsTheServiceInsteadAndTheRoomIsMade) {
  const std::string dir = make_temp_dir("sleepfail");
  FakeGpu gpu(dir, kOneGpu);
  Daemon d(sleepy_yaml(free_port(), free_port(), "/no-such-path"), dir);
  ASSERT_TRUE(d.start()) << d.stderr_text();
  ASSERT_EQ(0, d.cli({"ensure", "llm"}).exit_code);
  const pid_t llm = d.service("llm")["pid"];
  const auto img = d.cli({"ensure", "img"});
  ASSERT_EQ(0, img.exit_code) << img.err;
  EXPECT_EQ("stopped", d.service("llm")["state"]);
  EXPECT_FALSE(pid_alive(llm));
  const auto logs = d.cli({"logs", "llm"});
  EXPECT_NE(std::string::npos, logs.out.find("sleep hook failed")) << logs.out;
}

TEST(Sleep, ADaemonRestartedMeanwhileAdoptsItAsleep) {
  const std::string dir = make_temp_dir("sleepadopt");
  FakeGpu gpu(dir, kOneGpu);
  const std::string yaml =
      "daemon: {stop_services_on_exit: false}\n" + sleepy_yaml(free_port(), free_port());
  auto d = std::make_unique<Daemon>(yaml, dir);
  ASSERT_TRUE(d->start()) << d->stderr_text();
  ASSERT_EQ(0, d->cli({"ensure", "llm"}).exit_code);
  const pid_t llm = d->service("llm")["pid"];
  ASSERT_EQ(0, d->cli({"ensure", "img"}).exit_code);
  ASSERT_EQ("sleeping", d->service("llm")["state"]);
  d->kill9();

  Daemon again(yaml, dir);
  ASSERT_TRUE(again.start()) << again.stderr_text();
  auto svc = again.service("llm");
  EXPECT_EQ("sleeping", svc["state"]) << svc.dump();  // not probed into ready
  EXPECT_EQ(llm, svc["pid"]);
  ASSERT_EQ(0, again.cli({"stop", "img"}).exit_code);
  ASSERT_EQ(0, again.cli({"ensure", "llm"}).exit_code);
  EXPECT_EQ(llm, again.service("llm")["pid"]);
  ASSERT_EQ(0, again.cli({"stop", "llm"}).exit_code);
  EXPECT_FALSE(pid_alive(llm));
}

}  // namespace
}  // namespace gpuvisor::itest
