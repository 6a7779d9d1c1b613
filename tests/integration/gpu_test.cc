// The daemon's GPU views over the fake NVML library, loaded through the real dlopen path: a
// service of ours and a process it did not start both hold simulated VRAM.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "testkit/daemon.h"
#include "testkit/fake_gpu.h"

namespace gpuvisor::itest {
namespace {

std::string read_text(const std::string& path) {
  std::ifstream in(path);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

TEST(Gpu, ProcessesAreOursOrExternalAndEachGpuHasAState) {
  const int port = free_port();
  const std::string dir = make_temp_dir("gpu");
  FakeGpu gpu(dir);
  Daemon d("services:\n  llm:\n    command: [$TESTSVC, --port, \"" + std::to_string(port) +
               "\", --vram-mb, \"10000\", --gpu, \"1\"]\n    health:\n      tcp: 127.0.0.1:" +
               std::to_string(port) + "\n",
           dir);
  ASSERT_TRUE(d.start()) << d.stderr_text();
  const pid_t external = start_external(0, 12000);  // half of the 24 GB card
  ASSERT_EQ(0, d.cli({"ensure", "llm"}).exit_code);
  const pid_t ours = d.service("llm")["pid"];

  const auto procs = nlohmann::json::parse(d.call("GET", "/api/v1/processes")->body);
  ASSERT_EQ(2u, procs["processes"].size()) << procs.dump();
  for (const auto& p : procs["processes"]) {
    if (p["pid"] == ours) {
      EXPECT_EQ("llm", p["owner"]);
      EXPECT_EQ(1, p["gpu"]);
      EXPECT_EQ(10000ULL << 20, p["used_bytes"].get<uint64_t>());
    } else {
      EXPECT_EQ(external, p["pid"].get<pid_t>());
      EXPECT_TRUE(p["external"].get<bool>());
      EXPECT_EQ(0, p["gpu"]);
    }
  }
  const auto res = nlohmann::json::parse(d.call("GET", "/api/v1/resources")->body);
  EXPECT_EQ("external_busy", res["gpus"][0]["state"]);  // 12 of 24 GB is over 45%
  EXPECT_EQ("app_busy", res["gpus"][1]["state"]);
  EXPECT_TRUE(res["memory"]["total_bytes"].is_number());

  const auto ps = d.cli({"ps"});
  EXPECT_EQ(0, ps.exit_code) << ps.err;
  EXPECT_NE(std::string::npos, ps.out.find("(external)")) << ps.out;
  const auto gpus = d.cli({"gpus"});
  EXPECT_EQ(0, gpus.exit_code) << gpus.err;
  EXPECT_NE(std::string::npos, gpus.out.find("Sim 80G")) << gpus.out;
  EXPECT_NE(std::string::npos, gpus.out.find("9.8 GiB / 80.0 GiB")) << gpus.out;

  kill(external, SIGTERM);
  waitpid(external, nullptr, 0);
}

// Three services of 16 GB on one simulated 24 GB GPU: only one fits at a time.
std::string three_big(const std::vector<int>& ports) {
  std::string yaml = "services:\n";
  const char* names[] = {"a", "b", "vip"};
  const int priority[] = {5, 5, 50};
  for (int i = 0; i < 3; ++i) {
    const std::string p = std::to_string(ports[static_cast<size_t>(i)]);
    yaml += std::string("  ") + names[i] + ":\n    command: [$TESTSVC, --port, \"" + p +
            "\", --vram-mb, \"16000\"]\n    vram_mb: 16000\n    priority: " +
            std::to_string(priority[i]) + "\n    health:\n      tcp: 127.0.0.1:" + p + "\n";
  }
  return yaml;
}

TEST(Gpu, EnsureEvictsWhatMayGoAndWaitsForTheMemory) {
  const std::string dir = make_temp_dir("evict");
  FakeGpu gpu(dir);
  std::ofstream(dir + "/gpu/devices.json") << R"({"devices": [{"total_mb": 24576}]})";
  Daemon d(three_big({free_port(), free_port(), free_port()}), dir);
  ASSERT_TRUE(d.start()) << d.stderr_text();
  ASSERT_EQ(0, d.cli({"ensure", "a"}).exit_code);
  const pid_t a = d.service("a")["pid"];
  const auto dry = d.cli({"plan", "b"});
  EXPECT_EQ(0, dry.exit_code);
  EXPECT_EQ("start b on GPU 0 after stopping a\n", dry.out);
  EXPECT_EQ("ready", d.service("a")["state"]);  // a dry run changes nothing

  const auto b = d.cli({"ensure", "b"});
  ASSERT_EQ(0, b.exit_code) << b.err;
  EXPECT_FALSE(pid_alive(a));
  EXPECT_EQ("stopped", d.service("a")["state"]);
  EXPECT_EQ("evicted to make room for b", d.service("a")["reason"]);
  EXPECT_EQ(0, d.service("b")["gpu"]);
  // The decision itself is an event: who went, for whom, where.
  EXPECT_TRUE(d.wait_event(
      [](const nlohmann::json& e) {
        return e["data"]["service"] == "b" && e["data"]["evict"] == nlohmann::json{"a"} &&
               e["data"]["gpu"] == 0;
      },
      20s, "&types=plan.decided"));
  // The GPU watch measures what our services hold, and the state dir keeps it. A GET only
  // looks: it writes nothing.
  ASSERT_EQ(200u, d.call("GET", "/api/v1/resources")->status);
  EXPECT_TRUE(eventually(
      [&] { return d.service("b")["measured_vram_bytes"].get<uint64_t>() == 16000ULL << 20; },
      20s));
  EXPECT_NE(std::string::npos, read_text(dir + "/state/vram.json").find("\"b\":16777216000"));

  // vip outranks both: it evicts b. Then a cannot evict vip, and says so.
  ASSERT_EQ(0, d.cli({"ensure", "vip"}).exit_code);
  EXPECT_EQ("stopped", d.service("b")["state"]);
  const auto refused = d.cli({"ensure", "a"});
  EXPECT_EQ(1, refused.exit_code);
  EXPECT_NE(std::string::npos, refused.err.find("vip (priority 50 > 5")) << refused.err;
  EXPECT_TRUE(d.wait_event(
      [](const nlohmann::json& e) {
        return e["data"]["service"] == "a" && e["data"]["gpu"].is_null() &&
               e["data"]["reason"].get<std::string>().find("vip (priority 50 > 5") !=
                   std::string::npos;
      },
      20s, "&types=plan.refused"));
  EXPECT_EQ("ready", d.service("vip")["state"]);
  EXPECT_EQ(1, d.cli({"plan", "a"}).exit_code);
}

// A plugin's worker holding VRAM is ours, like a service: idle, a placement stops it to make
// room; busy, the refusal names it as a worker.
TEST(Gpu, AnIdleWorkerIsEvictedForAServiceAndABusyOneIsNamed) {
  const std::string dir = make_temp_dir("wevict");
  FakeGpu gpu(dir, R"({"devices": [{"total_mb": 24576}]})");
  const std::string port = std::to_string(free_port());
  Daemon d("services:\n  llm:\n    command: [$TESTSVC, --port, \"" + port +
               "\", --vram-mb, \"16000\"]\n    vram_mb: 16000\n    health:\n      tcp: "
               "127.0.0.1:" +
               port +
               "\nplugins:\n  manifests:\n    - name: w\n      category: work\n"
               "      mode: worker\n      worker: {command: [" GPUVISOR_BIN_DIR
               "/gpuvisor-testworker]}\n",
           dir);
  ASSERT_TRUE(d.start()) << d.stderr_text();
  // The worker's first job loads 16 GB, which it keeps while idle.
  const auto loaded = body(d.call("POST", "/api/v1/plugins/work_w/jobs", R"({"hold_mb": 16000})"));
  const std::string job = "/api/v1/jobs/" + std::to_string(loaded.value("id", 0));
  ASSERT_TRUE(eventually([&] { return body(d.call("GET", job))["state"] == "completed"; }));
  const auto worker = body(d.call("GET", "/api/v1/workers"))["workers"][0];
  const std::string owner = "worker:" + worker["id"].get<std::string>();
  const auto procs = body(d.call("GET", "/api/v1/processes"))["processes"];
  ASSERT_EQ(1u, procs.size()) << procs.dump();
  EXPECT_EQ(owner, procs[0]["owner"]);

  const auto llm = d.cli({"ensure", "llm"});
  ASSERT_EQ(0, llm.exit_code) << llm.err;
  EXPECT_TRUE(wait_gone(worker["pid"].get<pid_t>()));
  EXPECT_TRUE(d.wait_event(
      [&](const nlohmann::json& e) {
        return e["type"] == "plan.decided" && e["data"]["evict"] == nlohmann::json{owner};
      },
      20s, "&types=plan."));
  EXPECT_TRUE(d.wait_event(
      [](const nlohmann::json& e) {
        return e["type"] == "worker.exited" && e["data"]["reason"] == "evicted" &&
               e["data"]["evicted_for"] == "llm";
      },
      20s, "&types=worker."));

  // Busy, the worker stays: the ensure waits for it in the queue, and its timeout says for whom.
  ASSERT_EQ(0, d.cli({"stop", "llm"}).exit_code);
  ASSERT_EQ(
      200,
      d.call("POST", "/api/v1/plugins/work_w/jobs", R"({"hold_mb": 16000, "hang": true})")->status);
  ASSERT_TRUE(eventually(
      [&] { return body(d.call("GET", "/api/v1/processes"))["processes"].size() == 1; }));
  const auto refused = d.cli({"ensure", "llm", "--timeout", "2s"});
  EXPECT_EQ(1, refused.exit_code);
  EXPECT_NE(std::string::npos, refused.err.find("waiting for busy worker")) << refused.err;
  EXPECT_NE(std::string::npos, refused.err.find("(plugin work_w) (busy, 15.6 GiB)")) << refused.err;
}

TEST(Gpu, AnExternalProcessInTheWayIsNamedWithItsPid) {
  const std::string dir = make_temp_dir("extern");
  FakeGpu gpu(dir);
  std::ofstream(dir + "/gpu/devices.json") << R"({"devices": [{"total_mb": 24576}]})";
  Daemon d(three_big({free_port(), free_port(), free_port()}), dir);
  ASSERT_TRUE(d.start()) << d.stderr_text();
  const pid_t external = start_external(0, 12000);
  const auto refused = d.cli({"ensure", "a"});
  EXPECT_EQ(1, refused.exit_code);
  EXPECT_NE(std::string::npos,
            refused.err.find("external pid " + std::to_string(external) + " gpuvisor-testsv"))
      << refused.err;
  EXPECT_EQ("error", d.service("a")["state"]);
  kill(external, SIGTERM);
  waitpid(external, nullptr, 0);
  EXPECT_EQ(0, d.cli({"ensure", "a"}).exit_code);  // the memory is back: it fits now
}

TEST(Gpu, TheServiceStartsOnTheGpuThePlanChoseThroughCudaVisibleDevices) {
  const std::string dir = make_temp_dir("place");
  FakeGpu gpu(dir);
  std::ofstream(dir + "/gpu/devices.json")
      << R"({"devices": [{"total_mb": 24576}, {"total_mb": 24576}]})";
  Daemon d(three_big({free_port(), free_port(), free_port()}), dir);
  ASSERT_TRUE(d.start()) << d.stderr_text();
  const pid_t external = start_external(0, 20000);  // GPU 0 is taken
  ASSERT_EQ(0, d.cli({"ensure", "a"}).exit_code);
  EXPECT_EQ(1, d.service("a")["gpu"]);
  const auto procs = nlohmann::json::parse(d.call("GET", "/api/v1/processes")->body);
  bool seen = false;
  for (const auto& p : procs["processes"]) {
    if (p["owner"] == "a") {
      EXPECT_EQ(1, p["gpu"]);  // the process itself was told GPU 1
      seen = true;
    }
  }
  EXPECT_TRUE(seen) << procs.dump();
  kill(external, SIGTERM);
  waitpid(external, nullptr, 0);
}

TEST(Gpu, APhaseStartsAllItsMembersAndTheyNeverEvictEachOther) {
  const std::string dir = make_temp_dir("phase");
  FakeGpu gpu(dir);
  std::ofstream(dir + "/gpu/devices.json") << R"({"devices": [{"total_mb": 24576}]})";
  std::string yaml = "services:\n";
  const auto add = [&](const std::string& name, int mb, const std::string& phases) {
    const std::string p = std::to_string(free_port());
    yaml += "  " + name + ":\n    command: [$TESTSVC, --port, \"" + p + "\", --vram-mb, \"" +
            std::to_string(mb) + "\"]\n    vram_mb: " + std::to_string(mb) +
            "\n    phases: " + phases + "\n    health:\n      tcp: 127.0.0.1:" + p + "\n";
  };
  add("other", 16000, "[]");
  add("p", 8000, "[3, 4]");
  add("q", 8000, "[3]");
  add("big", 16000, "[4]");
  Daemon d(yaml, dir);
  ASSERT_TRUE(d.start()) << d.stderr_text();
  ASSERT_EQ(0, d.cli({"ensure", "other"}).exit_code);
  const auto three = d.cli({"phase", "3"});
  ASSERT_EQ(0, three.exit_code) << three.err;
  EXPECT_NE(std::string::npos, three.out.find("p is ready")) << three.out;
  EXPECT_NE(std::string::npos, three.out.find("q is ready")) << three.out;
  EXPECT_EQ("stopped", d.service("other")["state"]);
  // Phase 4 is p and big: 24 GB together, so q goes, and neither member evicts the other.
  const auto four = d.cli({"phase", "4"});
  ASSERT_EQ(0, four.exit_code) << four.err;
  EXPECT_EQ("stopped", d.service("q")["state"]);
  EXPECT_EQ("ready", d.service("p")["state"]);
  EXPECT_EQ("ready", d.service("big")["state"]);
  const auto none = d.call("POST", "/api/v1/phases/9/ensure");
  EXPECT_EQ(404u, none->status);
  EXPECT_EQ(400u, d.call("POST", "/api/v1/phases/x/ensure")->status);
}

TEST(Gpu, WithoutNvmlServicesStillRunAndGpuViewsSayWhy) {
  setenv("GPUVISOR_NVML_LIBRARY", "/nonexistent/libnvidia-ml.so.1", 1);
  const int port = free_port();
  Daemon d("services:\n  web:\n    command: [$TESTSVC, --port, \"" + std::to_string(port) +
           "\"]\n    health:\n      tcp: 127.0.0.1:" + std::to_string(port) + "\n");
  const bool started = d.start();
  unsetenv("GPUVISOR_NVML_LIBRARY");
  ASSERT_TRUE(started) << d.stderr_text();
  EXPECT_NE(std::string::npos, d.stderr_text().find("GPU inventory: unavailable: cannot load"));
  EXPECT_EQ(0, d.cli({"ensure", "web"}).exit_code);
  const auto reply = d.call("GET", "/api/v1/gpus");
  EXPECT_EQ(503u, reply->status);
  const auto gpus = d.cli({"gpus"});
  EXPECT_EQ(1, gpus.exit_code);
  EXPECT_NE(std::string::npos, gpus.err.find("no GPU inventory: cannot load")) << gpus.err;
}

TEST(Gpu, AConflictIsAnEventWhenItAppearsAndWhenItClears) {
  const std::string dir = make_temp_dir("conflict");
  FakeGpu gpu(dir);
  Daemon d("daemon: {gpu_watch_interval: 50ms}\nservices: {}\n", dir);
  ASSERT_TRUE(d.start()) << d.stderr_text();
  const pid_t external = start_external(0, 12000);  // half of the 24 GB card
  nlohmann::json conflict;
  ASSERT_TRUE(d.wait_event([&](const nlohmann::json& e) {
    if (e["type"] != "gpu.conflict") return false;
    conflict = e["data"];
    return true;
  })) << d.stderr_text();
  EXPECT_EQ(0, conflict["gpu"]);
  EXPECT_EQ(12000ULL << 20, conflict["external_bytes"].get<uint64_t>());
  ASSERT_EQ(1u, conflict["external"].size()) << conflict.dump();
  EXPECT_EQ(external, conflict["external"][0]["pid"].get<pid_t>());
  kill(external, SIGTERM);
  waitpid(external, nullptr, 0);
  EXPECT_TRUE(d.wait_event([](const nlohmann::json& e) {
    return e["type"] == "gpu.conflict_cleared" && e["data"]["gpu"] == 0;
  })) << d.stderr_text();
}

}  // namespace
}  // namespace gpuvisor::itest
