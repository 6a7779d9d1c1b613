// Worker pools through the real daemon and the project's test worker: several workers per
// plugin, restart policies with backoff and a limit, what the registry knows of each worker,
// config reloads and idle stops.
#include <gtest/gtest.h>

#include <fstream>
#include <set>

#include "testkit/daemon.h"

namespace gpuvisor::itest {
namespace {

// One worker plugin, work_w; worker_extra goes inside its worker: map.
std::string pool_yaml(const std::string& worker_extra, int concurrency = 1,
                      const std::string& args = "") {
  return "services: {}\nplugins:\n  manifests:\n"
         "    - name: w\n      category: work\n      mode: worker\n      concurrency: " +
         std::to_string(concurrency) +
         "\n"
         "      worker: {command: [" GPUVISOR_BIN_DIR "/gpuvisor-testworker" +
         args + "]" + worker_extra +
         "}\n"
         "      config_schema:\n        type: object\n        properties:\n"
         "          model: {type: string, default: small}\n";
}

int64_t submit(const Daemon& d, const std::string& input = "{}") {
  return body(d.call("POST", "/api/v1/plugins/work_w/jobs", input)).value("id", int64_t{0});
}

bool is(const nlohmann::json& e, const std::string& type, int64_t job) {
  return e["type"] == type && e["data"]["id"] == job;
}

TEST(WorkerPools, APluginRunsUpToItsConcurrencyOfWorkersAtOnce) {
  Daemon d(pool_yaml("", 2));
  ASSERT_TRUE(d.start()) << d.stderr_text();
  const int64_t a = submit(d, R"({"hang": true})");
  const int64_t b = submit(d, R"({"hang": true})");
  const int64_t c = submit(d);
  ASSERT_TRUE(d.wait_event([&](const nlohmann::json& e) { return is(e, "job.started", b); }));
  // Both hanging jobs hold a worker each; the third waits its turn.
  std::set<nlohmann::json> pids;
  std::set<std::string> jobs;
  for (int tries = 0; tries < 200 && jobs.size() < 2; ++tries) {
    pids.clear();
    jobs.clear();
    const auto list = body(d.call("GET", "/api/v1/workers"));
    for (const auto& w : list["workers"]) {
      EXPECT_EQ("work_w", w["plugin"]);
      EXPECT_EQ("work", w["type"]);
      pids.insert(w["pid"]);
      if (w["status"] == "running") jobs.insert(w["job"].get<std::string>());
    }
  }
  EXPECT_EQ(2u, pids.size());
  EXPECT_EQ((std::set<std::string>{std::to_string(a), std::to_string(b)}), jobs);
  EXPECT_EQ("pending", body(d.call("GET", "/api/v1/jobs/" + std::to_string(c)))["state"]);
  ASSERT_EQ(0, d.cli({"jobs", "cancel", std::to_string(a)}).exit_code);
  EXPECT_TRUE(d.wait_event([&](const nlohmann::json& e) { return is(e, "job.completed", c); }))
      << d.stderr_text();
}

// A worker's messages are its own: one whose progress is not a number, or whose error message is
// not a string, must not end the daemon (a JSON type error, thrown out of the event loop).
TEST(WorkerPools, MalformedWorkerMessagesNeverEndTheDaemon) {
  Daemon d(pool_yaml(""));
  ASSERT_TRUE(d.start()) << d.stderr_text();
  const int64_t id = submit(d, R"({"say": [{"type": "progress", "progress": "half"},
                                            {"type": "error", "message": {"code": 5}}]})");
  ASSERT_TRUE(d.wait_event([&](const nlohmann::json& e) { return is(e, "job.failed", id); }))
      << d.stderr_text();
  const auto job = body(d.call("GET", "/api/v1/jobs/" + std::to_string(id)));
  EXPECT_EQ("failed", job["state"]);
  EXPECT_EQ("worker: {\"code\":5}", job["error"]) << job.dump();
  // Still serving, and the next job runs.
  const int64_t next = submit(d);
  EXPECT_TRUE(d.wait_event([&](const nlohmann::json& e) { return is(e, "job.completed", next); }))
      << d.stderr_text();
}

TEST(WorkerPools, TheRegistryKnowsEachWorkersPluginJobAndLoadedResource) {
  Daemon d(pool_yaml(""));
  ASSERT_TRUE(d.start()) << d.stderr_text();
  const int64_t id = submit(d);
  ASSERT_TRUE(d.wait_event([&](const nlohmann::json& e) { return is(e, "job.completed", id); }));
  nlohmann::json worker = nlohmann::json::object();
  for (int tries = 0; tries < 200 && worker.value("loaded_resource", nlohmann::json()).is_null();
       ++tries) {
    worker = body(d.call("GET", "/api/v1/workers"))["workers"][0];
  }
  EXPECT_EQ("small", worker["loaded_resource"]) << worker.dump();  // from its get_state answer
  EXPECT_EQ("idle", worker["status"]);
  EXPECT_TRUE(worker["job"].is_null());
  EXPECT_EQ(worker["pid"], worker["pids"][0]);
  // Its processes are ours in the process view.
  EXPECT_TRUE(d.wait_event([](const nlohmann::json& e) { return e["type"] == "worker.started"; }));
}

TEST(WorkerPools, SavingTheConfigReloadsTheLiveWorkerWithoutARestart) {
  Daemon d(pool_yaml(""));
  ASSERT_TRUE(d.start()) << d.stderr_text();
  const int64_t first = submit(d);
  ASSERT_TRUE(d.wait_event([&](const nlohmann::json& e) { return is(e, "job.completed", first); }));
  const auto pid = body(d.call("GET", "/api/v1/jobs/" + std::to_string(first)))["result"]["pid"];
  ASSERT_EQ(200, d.call("PUT", "/api/v1/plugins/work_w/config", R"({"model": "large"})")->status);
  const int64_t second = submit(d);
  ASSERT_TRUE(
      d.wait_event([&](const nlohmann::json& e) { return is(e, "job.completed", second); }));
  const auto result = body(d.call("GET", "/api/v1/jobs/" + std::to_string(second)))["result"];
  EXPECT_EQ("large", result["config"]["model"]);
  EXPECT_EQ(pid, result["pid"]);  // the same process, reloaded
  EXPECT_EQ(pid, body(d.call("GET", "/api/v1/jobs/" + std::to_string(second)))["worker_pid"]);
}

TEST(WorkerPools, OnCancellationAWarmReplacementStartsAtOnce) {
  Daemon d(pool_yaml(", restart: on_cancellation"));
  ASSERT_TRUE(d.start()) << d.stderr_text();
  const int64_t hang = submit(d, R"({"hang": true})");
  ASSERT_TRUE(d.wait_event([&](const nlohmann::json& e) { return is(e, "job.started", hang); }));
  ASSERT_EQ(0, d.cli({"jobs", "cancel", std::to_string(hang)}).exit_code);
  std::string old;
  EXPECT_TRUE(d.wait_event([&](const nlohmann::json& e) {
    if (e["type"] == "worker.exited") {
      EXPECT_EQ("cancelled", e["data"]["reason"]);
      old = e["data"]["worker"];
    }
    return e["type"] == "worker.restarted" && e["data"]["replaces"] == old;
  })) << d.stderr_text();
}

TEST(WorkerPools, AlwaysRestartsACrashAndASuccessResetsTheBackoff) {
  Daemon d(pool_yaml(", restart: always, backoff: 20ms"));
  ASSERT_TRUE(d.start()) << d.stderr_text();
  const auto crash_then_restart = [&](int expected_in_a_row) {
    const int64_t id = submit(d, R"({"crash": true})");
    EXPECT_TRUE(d.wait_event([&](const nlohmann::json& e) { return is(e, "job.failed", id); }));
    // The restart that follows this crash says how many ends in a row it follows.
    size_t restarts = 0;
    int last = 0;
    d.wait_event(
        [&](const nlohmann::json& e) {
          if (e["type"] == "worker.restarted") {
            ++restarts;
            last = e["data"]["ends_in_a_row"];
          }
          return false;
        },
        std::chrono::milliseconds(1000));
    EXPECT_EQ(expected_in_a_row, last) << restarts;
    return restarts;
  };
  EXPECT_EQ(1u, crash_then_restart(1));
  EXPECT_EQ(2u, crash_then_restart(2));
  const int64_t ok = submit(d);
  ASSERT_TRUE(d.wait_event([&](const nlohmann::json& e) { return is(e, "job.completed", ok); }));
  EXPECT_EQ(3u, crash_then_restart(1));  // the success started the count over
}

TEST(WorkerPools, AWorkerThatKeepsCrashingIsGivenUpUntilItsConfigIsSaved) {
  Daemon d(pool_yaml(", restart: always, backoff: 10ms, restart_limit: 2", 1,
                     ", --exit-on-init, \"4\""));
  ASSERT_TRUE(d.start()) << d.stderr_text();
  const int64_t first = submit(d);
  ASSERT_TRUE(d.wait_event([&](const nlohmann::json& e) { return is(e, "job.failed", first); }));
  EXPECT_EQ("the worker exited with status 4",
            body(d.call("GET", "/api/v1/jobs/" + std::to_string(first)))["error"]);
  std::string why;
  ASSERT_TRUE(d.wait_event([&](const nlohmann::json& e) {
    if (e["type"] != "worker.gave_up") return false;
    why = e["data"]["why"];
    return true;
  })) << d.stderr_text();
  EXPECT_EQ(
      "the worker for work_w ended 3 times in a row (last: exited with status 4); its jobs fail "
      "until its config is saved again or the daemon restarts",
      why);
  // Given up: a new job fails at once, saying why, and no worker starts for it.
  const int64_t second = submit(d);
  ASSERT_TRUE(d.wait_event([&](const nlohmann::json& e) { return is(e, "job.failed", second); }));
  EXPECT_EQ(why, body(d.call("GET", "/api/v1/jobs/" + std::to_string(second)))["error"]);
  EXPECT_TRUE(body(d.call("GET", "/api/v1/workers"))["workers"].empty());
  // Saving the config is the way to say "try again".
  ASSERT_EQ(200, d.call("PUT", "/api/v1/plugins/work_w/config", "{}")->status);
  const int64_t third = submit(d);
  ASSERT_TRUE(d.wait_event([&](const nlohmann::json& e) { return is(e, "job.failed", third); }));
  EXPECT_EQ("the worker exited with status 4",
            body(d.call("GET", "/api/v1/jobs/" + std::to_string(third)))["error"]);
}

TEST(WorkerPools, AnIdleWorkerIsStoppedAfterItsIdleTimeout) {
  Daemon d(pool_yaml(", idle_timeout: 100ms"));
  ASSERT_TRUE(d.start()) << d.stderr_text();
  const int64_t id = submit(d);
  ASSERT_TRUE(d.wait_event([&](const nlohmann::json& e) { return is(e, "job.completed", id); }));
  EXPECT_TRUE(d.wait_event([](const nlohmann::json& e) {
    return e["type"] == "worker.exited" && e["data"]["reason"] == "stopped";
  })) << d.stderr_text();
  EXPECT_TRUE(body(d.call("GET", "/api/v1/workers"))["workers"].empty());
  // The next job starts a new one.
  const int64_t next = submit(d);
  EXPECT_TRUE(d.wait_event([&](const nlohmann::json& e) { return is(e, "job.completed", next); }));
}

TEST(WorkerPools, BadWorkerSettingsAreRefusedWithWhereAndWhat) {
  Daemon d(pool_yaml(", restart: sometimes, backoff: fast, restart_limit: -1, colour: red"));
  EXPECT_FALSE(d.start());
  const std::string err = d.stderr_text();
  EXPECT_NE(err.find("'worker.restart' must be never, on_cancellation or always, got "
                     "\"sometimes\""),
            std::string::npos)
      << err;
  EXPECT_NE(err.find("'worker.backoff' must be a duration such as 500ms, 5s or 10m, got \"fast\""),
            std::string::npos)
      << err;
  EXPECT_NE(err.find("'worker.restart_limit' must be an integer from 0 to 1000, got -1"),
            std::string::npos)
      << err;
  EXPECT_NE(err.find("unknown key 'worker.colour'"), std::string::npos) << err;
}

TEST(JobStream, AJobsStreamCarriesItsChunksThenEndsWithItsResult) {
  Daemon d(pool_yaml(""));
  ASSERT_TRUE(d.start()) << d.stderr_text();
  const int64_t id = submit(d);
  // The CLI follows the job's own stream: every event about it, then its final state.
  const auto watched = d.cli({"jobs", "watch", std::to_string(id)});
  EXPECT_EQ(0, watched.exit_code) << watched.err;
  EXPECT_NE(std::string::npos, watched.out.find("job.chunk chunk 1\njob.progress 0.5\n"))
      << watched.out;
  EXPECT_NE(std::string::npos, watched.out.find("completed")) << watched.out;
  // A finished job's stream is what the history holds of it, then its final state; it closes.
  const auto again = d.call("GET", "/api/v1/jobs/" + std::to_string(id) + "/stream");
  ASSERT_TRUE(again);
  const auto last = again->body.rfind("event: job\ndata: {");
  ASSERT_NE(std::string::npos, last) << again->body;
  EXPECT_NE(std::string::npos, again->body.find("\"state\":\"completed\"", last)) << again->body;
  EXPECT_LT(again->body.find("event: job.chunk"), last) << again->body;
  const auto failed = submit(d, R"({"fail": true})");
  EXPECT_EQ(1, d.cli({"jobs", "watch", std::to_string(failed)}).exit_code);
  const auto missing = d.cli({"jobs", "watch", "9999"});
  EXPECT_EQ(1, missing.exit_code);
  EXPECT_NE(std::string::npos, missing.err.find("no job 9999")) << missing.err;
}

TEST(WorkerPools, AJobWaitingOutABackoffCanBeCancelled) {
  Daemon d(pool_yaml(", restart: never, backoff: 1m"));
  ASSERT_TRUE(d.start()) << d.stderr_text();
  const int64_t crash = submit(d, R"({"crash": true})");
  ASSERT_TRUE(d.wait_event([&](const nlohmann::json& e) { return is(e, "job.failed", crash); }));
  // The next start waits a minute: this job sits in the pool, started but with no worker.
  const int64_t waiting = submit(d);
  ASSERT_TRUE(d.wait_event([&](const nlohmann::json& e) { return is(e, "job.started", waiting); }));
  ASSERT_EQ(0, d.cli({"jobs", "cancel", std::to_string(waiting)}).exit_code);
  EXPECT_TRUE(
      d.wait_event([&](const nlohmann::json& e) { return is(e, "job.cancelled", waiting); }));
  EXPECT_EQ("cancelled", body(d.call("GET", "/api/v1/jobs/" + std::to_string(waiting)))["state"]);
}

TEST(WorkerPools, AReloadMidJobDoesNotRunTheJobTwice) {
  Daemon d(pool_yaml(""));
  ASSERT_TRUE(d.start()) << d.stderr_text();
  const int64_t parked = submit(d, R"({"wait_for_reload": true})");
  // Its progress says the worker holds the job: only then is the config saved.
  ASSERT_TRUE(d.wait_event([&](const nlohmann::json& e) {
    return e["type"] == "job.progress" && e["data"]["id"] == parked;
  }));
  // The worker answers "ready" to the reload while the job is still its own.
  ASSERT_EQ(200, d.call("PUT", "/api/v1/plugins/work_w/config", R"({"model": "big"})")->status);
  ASSERT_TRUE(
      d.wait_event([&](const nlohmann::json& e) { return is(e, "job.completed", parked); }));
  const int64_t next = submit(d);
  ASSERT_TRUE(d.wait_event([&](const nlohmann::json& e) { return is(e, "job.completed", next); }));
  const auto result = body(d.call("GET", "/api/v1/jobs/" + std::to_string(next)))["result"];
  EXPECT_EQ(2, result["executes"]) << result.dump();  // one per job: none sent again
  EXPECT_EQ("big", result["config"]["model"]);
}

TEST(WorkerPools, ADaemonStopAsksItsWorkersToStopAndTheirJobsRunAgainAfter) {
  const std::string yaml = pool_yaml("");
  std::string dir;
  int64_t id = 0;
  {
    Daemon d(yaml);
    ASSERT_TRUE(d.start()) << d.stderr_text();
    dir = d.dir();
    id = submit(d, R"({"hang": true})");
    ASSERT_TRUE(d.wait_event([&](const nlohmann::json& e) { return is(e, "job.started", id); }));
    ASSERT_TRUE(
        d.wait_event([](const nlohmann::json& e) { return e["type"] == "worker.started"; }));
    EXPECT_EQ(0, d.terminate());
  }
  std::ifstream log(dir + "/state/logs/worker-work_w.log");
  const std::string text((std::istreambuf_iterator<char>(log)), {});
  EXPECT_NE(std::string::npos, text.find("testworker: asked to stop")) << text;  // not killed
  // Left running in the store by a clean stop: the next daemon runs it again.
  Daemon again(yaml, dir);
  ASSERT_TRUE(again.start()) << again.stderr_text();
  EXPECT_TRUE(again.wait_event([&](const nlohmann::json& e) { return is(e, "job.started", id); }));
  const auto job = body(again.call("GET", "/api/v1/jobs/" + std::to_string(id)));
  EXPECT_EQ("running", job["state"]);
  EXPECT_EQ(2, job["attempts"]);
}

}  // namespace
}  // namespace gpuvisor::itest
