// What apps plug in over the API: their own workers (VRAM counted as the app's, planned around,
// unregistered when they exit), VRAM leases, and their own events on the daemon's stream.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>

#include "testkit/daemon.h"
#include "testkit/fake_gpu.h"

namespace gpuvisor::itest {
namespace {

// One service, llm, that needs (and holds) 16000 of the simulated card's 24576 MiB.
std::string llm_16g_yaml() {
  const std::string port = std::to_string(free_port());
  return "services:\n  llm:\n    command: [$TESTSVC, --port, \"" + port +
         "\", --vram-mb, \"16000\"]\n    vram_mb: 16000\n    health:\n      tcp: 127.0.0.1:" +
         port + "\n";
}

TEST(OutsideWorkers, AnAppsWorkerIsOursToCountAndNotToStop) {
  const std::string dir = make_temp_dir("outside");
  FakeGpu gpu(dir, R"({"devices": [{"total_mb": 24576}]})");
  Daemon d(llm_16g_yaml(), dir);
  ASSERT_TRUE(d.start()) << d.stderr_text();
  const pid_t app = start_external(0, 12000);  // the app's worker, holding half the card
  const std::string pid = std::to_string(app);
  EXPECT_EQ("external_busy", body(d.call("GET", "/api/v1/resources"))["gpus"][0]["state"]);

  const auto registered = d.call(
      "POST", "/api/v1/workers",
      R"({"pid": )" + pid + R"(, "worker_type": "transcription", "plugin_id": "asr_whisper"})");
  ASSERT_EQ(201, registered->status) << registered->body;
  EXPECT_EQ("outside-" + pid, body(registered)["id"]);
  const auto procs = body(d.call("GET", "/api/v1/processes"))["processes"];
  ASSERT_EQ(1u, procs.size());
  EXPECT_EQ("worker:outside-" + pid, procs[0]["owner"]);
  EXPECT_FALSE(procs[0]["external"].get<bool>());
  EXPECT_EQ("app_busy", body(d.call("GET", "/api/v1/resources"))["gpus"][0]["state"]);

  // seed 001's update_worker_state: given fields change, null clears, the rest stay.
  auto patched = d.call("PATCH", "/api/v1/workers/" + pid,
                        R"({"status": "running", "job_id": "abc123",
                            "loaded_plugin_resource": "whisper-large-v3"})");
  ASSERT_EQ(200, patched->status) << patched->body;
  patched = d.call("PATCH", "/api/v1/workers/" + pid, R"({"job_id": null})");
  EXPECT_TRUE(body(patched)["job"].is_null());
  EXPECT_EQ("whisper-large-v3", body(patched)["loaded_resource"]);
  EXPECT_EQ("running", body(patched)["status"]);
  EXPECT_EQ("asr_whisper", body(patched)["plugin"]);

  // 12 of 24 GB are the app's: a 16 GB service cannot have them, and the refusal says whose.
  const auto refused = d.cli({"ensure", "llm"});
  EXPECT_EQ(1, refused.exit_code);
  EXPECT_NE(std::string::npos,
            refused.err.find("outside worker " + pid +
                             " (transcription) (registered by its app, not gpuvisor's to stop"))
      << refused.err;
  EXPECT_EQ(0, kill(app, 0));  // never signalled

  kill(app, SIGTERM);
  waitpid(app, nullptr, 0);
  EXPECT_TRUE(d.wait_event(
      [&](const nlohmann::json& e) {
        return e["type"] == "worker.unregistered" && e["data"]["pid"] == app &&
               e["data"]["reason"] == "exited";
      },
      20s, "&types=worker."));
  EXPECT_TRUE(body(d.call("GET", "/api/v1/workers"))["workers"].empty());
  EXPECT_EQ(404, d.call("DELETE", "/api/v1/workers/" + pid)->status);
  EXPECT_EQ(0, d.cli({"ensure", "llm"}).exit_code);
}

TEST(OutsideWorkers, BadRegistrationsChangeNothing) {
  Daemon d("services: {}\n");
  ASSERT_TRUE(d.start()) << d.stderr_text();
  const auto bad_pid = d.call("POST", "/api/v1/workers", R"({"pid": 0, "worker_type": "llm"})");
  EXPECT_EQ(400, bad_pid->status);
  EXPECT_NE(std::string::npos, bad_pid->body.find("'pid' must be a positive integer, got 0"));
  const auto dead = d.call("POST", "/api/v1/workers", R"({"pid": 4194304, "worker_type": "llm"})");
  EXPECT_EQ(404, dead->status) << dead->body;
  EXPECT_NE(std::string::npos, dead->body.find("pid 4194304 is not running"));
  EXPECT_EQ(400, d.call("PATCH", "/api/v1/workers/abc", "{}")->status);
  EXPECT_EQ(404, d.call("PATCH", "/api/v1/workers/1", R"({"status": "idle"})")->status);
  EXPECT_TRUE(body(d.call("GET", "/api/v1/workers"))["workers"].empty());
}

TEST(Leases, ALeaseIsMemoryNoPlacementTakesUntilItEnds) {
  const std::string dir = make_temp_dir("lease");
  FakeGpu gpu(dir, R"({"devices": [{"total_mb": 24576}]})");
  Daemon d(llm_16g_yaml(), dir);
  ASSERT_TRUE(d.start()) << d.stderr_text();
  const auto granted =
      d.call("POST", "/api/v1/leases", R"({"vram_mb": 10000, "holder": "notebook", "ttl": "1h"})");
  ASSERT_EQ(201, granted->status) << granted->body;
  EXPECT_EQ(0, body(granted)["gpu"]);
  const auto listed = d.cli({"leases"});
  EXPECT_EQ(0, listed.exit_code) << listed.err;
  EXPECT_NE(std::string::npos, listed.out.find("notebook")) << listed.out;

  // 10000 of 24576 MiB are reserved: a 16000 MiB service no longer fits, and is told why.
  const auto refused = d.cli({"ensure", "llm"});
  EXPECT_EQ(1, refused.exit_code);
  EXPECT_NE(std::string::npos, refused.err.find("lease 1 (notebook) (reserved, 9.8 GiB)"))
      << refused.err;
  const auto too_big = d.call("POST", "/api/v1/leases", R"({"vram_mb": 20000})");
  EXPECT_EQ(409, too_big->status);
  EXPECT_NE(std::string::npos, too_big->body.find("in the way: lease 1 (notebook) (9.8 GiB)"))
      << too_big->body;

  ASSERT_EQ(200, d.call("DELETE", "/api/v1/leases/1")->status);
  EXPECT_EQ(0, d.cli({"ensure", "llm"}).exit_code);
  EXPECT_EQ(404, d.call("DELETE", "/api/v1/leases/1")->status);
  EXPECT_EQ(400, d.call("POST", "/api/v1/leases", R"({"vram_mb": "lots"})")->status);

  // A lease for a process ends with it.
  ASSERT_EQ(0, d.cli({"stop", "llm"}).exit_code);
  const pid_t notebook = start_testsvc({"--port", "0"}, "listening on");
  ASSERT_EQ(201, d.call("POST", "/api/v1/leases",
                        R"({"vram_mb": 1000, "pid": )" + std::to_string(notebook) + "}")
                     ->status);
  kill(notebook, SIGTERM);
  waitpid(notebook, nullptr, 0);
  EXPECT_TRUE(d.wait_event(
      [](const nlohmann::json& e) {
        return e["type"] == "lease.ended" && e["data"]["reason"] == "pid_exited";
      },
      20s, "&types=lease."));
  EXPECT_TRUE(body(d.call("GET", "/api/v1/leases"))["leases"].empty());
}

// What an app registered is the daemon's to remember: a daemon SIGKILLed and started again
// still counts the app's worker as the app's and its lease as reserved.
TEST(OutsideWorkers, AWorkerAndALeaseOutliveADaemonCrash) {
  const std::string dir = make_temp_dir("apps-crash");
  FakeGpu gpu(dir, R"({"devices": [{"total_mb": 24576}]})");
  Daemon d("services: {}\n", dir);
  ASSERT_TRUE(d.start()) << d.stderr_text();
  const pid_t app = start_external(0, 4000);
  const std::string pid = std::to_string(app);
  ASSERT_EQ(201, d.call("POST", "/api/v1/workers",
                        R"({"pid": )" + pid + R"(, "worker_type": "transcription"})")
                     ->status);
  ASSERT_EQ(201, d.call("POST", "/api/v1/leases",
                        R"({"vram_mb": 8000, "holder": "notebook", "pid": )" + pid + "}")
                     ->status);
  d.kill9();
  ASSERT_TRUE(d.start()) << d.stderr_text();
  const auto workers = body(d.call("GET", "/api/v1/workers"))["workers"];
  ASSERT_EQ(1u, workers.size()) << workers.dump();
  EXPECT_EQ("outside-" + pid, workers[0]["id"]);
  EXPECT_EQ("worker:outside-" + pid,
            body(d.call("GET", "/api/v1/processes"))["processes"][0]["owner"]);
  const auto leases = body(d.call("GET", "/api/v1/leases"))["leases"];
  ASSERT_EQ(1u, leases.size()) << leases.dump();
  EXPECT_EQ("notebook", leases[0]["holder"]);
  // And the new daemon watches them: the app's process ends, both go.
  kill(app, SIGTERM);
  waitpid(app, nullptr, 0);
  EXPECT_TRUE(eventually([&] {
    return body(d.call("GET", "/api/v1/workers"))["workers"].empty() &&
           body(d.call("GET", "/api/v1/leases"))["leases"].empty();
  }));
}

TEST(AppEvents, AnAppsEventJoinsTheStreamWithItsOwnType) {
  Daemon d("services: {}\n");
  ASSERT_TRUE(d.start()) << d.stderr_text();
  const auto posted = d.call("POST", "/api/v1/events",
                             R"({"type": "transcription.progress", "data": {"pct": 40}})");
  ASSERT_EQ(202, posted->status) << posted->body;
  EXPECT_TRUE(d.wait_event(
      [](const nlohmann::json& e) {
        return e["type"] == "transcription.progress" && e["data"]["pct"] == 40;
      },
      20s, "&types=transcription."));
  const auto bad = d.call("POST", "/api/v1/events", R"({"type": "has space"})");
  EXPECT_EQ(400, bad->status);
}

}  // namespace
}  // namespace gpuvisor::itest
