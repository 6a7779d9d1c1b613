// An app's own worker, registered over the API: its VRAM counts as the app's (no conflict), the
// planner plans around it and names it, it leaves the registry when it exits, and app events
// reach the daemon's stream as the app gave them.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>

#include "testkit/daemon.h"
#include "testkit/fake_gpu.h"

namespace gpuvisor::itest {
namespace {

TEST(OutsideWorkers, AnAppsWorkerIsOursToCountAndNotToStop) {
  const std::string dir = make_temp_dir("outside");
  FakeGpu gpu(dir, R"({"devices": [{"total_mb": 24576}]})");
  const std::string port = std::to_string(free_port());
  Daemon d("services:\n  llm:\n    command: [$TESTSVC, --port, \"" + port +
               "\", --vram-mb, \"16000\"]\n    vram_mb: 16000\n    health:\n      tcp: "
               "127.0.0.1:" +
               port + "\n",
           dir);
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
