// Jobs through the real daemon: submitted over HTTP, stored in SQLite, run on an http plugin
// whose service is the test service (its /echo is the work), cancelled, and picked up again
// after the daemon is killed.
#include <gtest/gtest.h>

#include <filesystem>

#include "testkit/daemon.h"

namespace gpuvisor::itest {
namespace {

std::string jobs_yaml(int port, const std::string& extra_manifest = "") {
  const std::string p = std::to_string(port);
  return "services:\n  echo:\n    command: [$TESTSVC, --port, \"" + p +
         "\"]\n    health: {tcp: \"127.0.0.1:" + p +
         "\"}\nplugins:\n  manifests:\n"
         "    - {name: echo, category: demo, mode: http, service: echo,\n"
         "       http: {url: \"http://127.0.0.1:" +
         p +
         "/echo\"}}\n"
         "    - {name: hang, category: demo, mode: http, service: echo,\n"
         "       http: {url: \"http://127.0.0.1:" +
         p + "/hang\"}}\n" + extra_manifest;
}

bool job_event(const nlohmann::json& e, const std::string& type, int64_t id) {
  return e["type"] == type && e["data"]["id"] == id;
}

TEST(Jobs, ASubmittedJobEnsuresItsServiceRunsAndKeepsItsResult) {
  Daemon d(jobs_yaml(free_port()));
  ASSERT_TRUE(d.start()) << d.stderr_text();
  const auto submitted = d.cli({"jobs", "submit", "demo_echo", "--input", R"({"text": "hi"})"});
  ASSERT_EQ(0, submitted.exit_code) << submitted.err;
  const auto job = nlohmann::json::parse(submitted.out);
  const int64_t id = job["id"];
  EXPECT_EQ("pending", job["state"]);
  EXPECT_TRUE(d.wait_event([&](const nlohmann::json& e) {
    return job_event(e, "job.completed", id);
  })) << d.stderr_text();
  const auto done = body(d.call("GET", "/api/v1/jobs/" + std::to_string(id)));
  EXPECT_EQ("completed", done["state"]);
  EXPECT_EQ(nlohmann::json({{"text", "hi"}}), done["result"]);
  EXPECT_EQ(1, done["attempts"]);
  EXPECT_EQ(d.service("echo")["pid"], done["worker_pid"]);  // the process that did the work
  // Its service was started for it, kept busy while it ran, and is ready again.
  EXPECT_EQ("ready", d.service("echo")["state"]);
  EXPECT_TRUE(d.wait_event([](const nlohmann::json& e) {
    return e["type"] == "service.state_changed" && e["data"]["to"] == "busy";
  }));
  const auto result = d.cli({"jobs", "show", std::to_string(id)});
  EXPECT_EQ(0, result.exit_code);
  EXPECT_NE(std::string::npos, result.out.find("completed")) << result.out;
  const auto list = body(d.call("GET", "/api/v1/jobs?state=completed"));
  ASSERT_EQ(1u, list["jobs"].size());
  // Events filtered by type: only job events, from the start.
  std::vector<std::string> seen;
  d.wait_event(
      [&](const nlohmann::json& e) {
        seen.push_back(e["type"]);
        return e["type"] == "job.completed";
      },
      20s, "&types=job.");
  EXPECT_EQ((std::vector<std::string>{"job.queued", "job.started", "job.completed"}), seen);
}

TEST(Jobs, CancellingAPendingOrRunningJobStrandsNothingBehindIt) {
  Daemon d(jobs_yaml(free_port()));
  ASSERT_TRUE(d.start()) << d.stderr_text();
  // Concurrency 1: the second and third wait behind the first, which hangs.
  const int64_t first = body(d.call("POST", "/api/v1/plugins/demo_hang/jobs"))["id"];
  const int64_t second = body(d.call("POST", "/api/v1/plugins/demo_hang/jobs"))["id"];
  const int64_t third = body(d.call("POST", "/api/v1/plugins/demo_hang/jobs"))["id"];
  ASSERT_TRUE(
      d.wait_event([&](const nlohmann::json& e) { return job_event(e, "job.started", first); }));

  ASSERT_EQ(0, d.cli({"jobs", "cancel", std::to_string(second)}).exit_code);
  EXPECT_EQ("cancelled", body(d.call("GET", "/api/v1/jobs/" + std::to_string(second)))["state"]);
  ASSERT_EQ(0, d.cli({"jobs", "cancel", std::to_string(first)}).exit_code);
  EXPECT_TRUE(
      d.wait_event([&](const nlohmann::json& e) { return job_event(e, "job.cancelled", first); }));
  // The third starts as soon as the first is gone.
  EXPECT_TRUE(
      d.wait_event([&](const nlohmann::json& e) { return job_event(e, "job.started", third); }));
  ASSERT_EQ(0, d.cli({"jobs", "cancel", std::to_string(third)}).exit_code);
  const auto again = d.cli({"jobs", "cancel", std::to_string(second)});
  EXPECT_EQ(1, again.exit_code);
  EXPECT_NE(std::string::npos, again.err.find("already cancelled")) << again.err;
}

TEST(Jobs, BadSubmissionsAreClearErrors) {
  Daemon d(jobs_yaml(free_port()));
  ASSERT_TRUE(d.start()) << d.stderr_text();
  auto r = d.call("POST", "/api/v1/plugins/demo_nope/jobs");
  EXPECT_EQ(404, r->status);
  r = d.call("GET", "/api/v1/jobs/abc");
  EXPECT_EQ(400, r->status);
  r = d.call("GET", "/api/v1/jobs?state=done");
  EXPECT_EQ(400, r->status);
  r = d.call("GET", "/api/v1/jobs/999");
  EXPECT_EQ(404, r->status);
  const auto bad = d.cli({"jobs", "submit", "demo_echo", "--input", "{not json"});
  EXPECT_EQ(1, bad.exit_code);
  EXPECT_EQ(0u, body(d.call("GET", "/api/v1/jobs"))["jobs"].size());
}

// jobs prune: finished jobs past the newest N (or older than a duration) go now; a job not
// finished stays; bad arguments are refused and delete nothing.
TEST(Jobs, PruneDeletesFinishedJobsByCountOrAgeNow) {
  Daemon d(jobs_yaml(free_port()));
  ASSERT_TRUE(d.start()) << d.stderr_text();
  std::vector<int64_t> done;
  for (int i = 0; i < 3; ++i) {
    const int64_t id = body(d.call("POST", "/api/v1/plugins/demo_echo/jobs"))["id"];
    ASSERT_TRUE(
        d.wait_event([&](const nlohmann::json& e) { return job_event(e, "job.completed", id); }));
    done.push_back(id);
  }
  const int64_t hanging = body(d.call("POST", "/api/v1/plugins/demo_hang/jobs"))["id"];
  for (const auto& args : std::vector<std::vector<std::string>>{
           {"jobs", "prune", "--older-than", "soon"}, {"jobs", "prune", "--keep", "-1"}}) {
    const auto bad = d.cli(args);
    EXPECT_NE(0, bad.exit_code) << bad.out;
    EXPECT_FALSE(bad.err.empty());
  }
  // Without arguments, the configured retention (30 days, 100,000 jobs): all are recent.
  EXPECT_EQ("deleted 0 finished jobs\n", d.cli({"jobs", "prune"}).out);
  auto r = d.call("POST", "/api/v1/jobs/prune", R"({"keep": "many"})");
  EXPECT_EQ(400, r->status) << r->body;
  EXPECT_EQ(4u, body(d.call("GET", "/api/v1/jobs"))["jobs"].size());  // nothing went yet

  const auto pruned = d.cli({"jobs", "prune", "--keep", "1"});
  EXPECT_EQ(0, pruned.exit_code) << pruned.err;
  EXPECT_EQ("deleted 2 finished jobs\n", pruned.out);
  const auto left = body(d.call("GET", "/api/v1/jobs"))["jobs"];
  ASSERT_EQ(2u, left.size());
  EXPECT_EQ(hanging, left[0]["id"]);  // running: never pruned
  EXPECT_EQ(done[2], left[1]["id"]);  // the newest finished one
  EXPECT_EQ("deleted 1 finished job\n", d.cli({"jobs", "prune", "--older-than", "0s"}).out);
  ASSERT_EQ(0, d.cli({"jobs", "cancel", std::to_string(hanging)}).exit_code);
}

TEST(Jobs, AnAcknowledgedJobSurvivesADaemonKill) {
  const std::string dir = make_temp_dir("jobs-crash");
  const std::string yaml = jobs_yaml(free_port());
  int64_t running = 0, queued = 0;
  {
    Daemon d(yaml, dir);
    ASSERT_TRUE(d.start()) << d.stderr_text();
    running = body(d.call("POST", "/api/v1/plugins/demo_hang/jobs"))["id"];
    queued = body(d.call("POST", "/api/v1/plugins/demo_hang/jobs"))["id"];
    ASSERT_TRUE(d.wait_event(
        [&](const nlohmann::json& e) { return job_event(e, "job.started", running); }));
    d.kill9();
  }
  Daemon again(yaml, dir);
  ASSERT_TRUE(again.start()) << again.stderr_text();
  // The interrupted one runs again (its second start), the queued one waits behind it.
  EXPECT_TRUE(again.wait_event(
      [&](const nlohmann::json& e) { return job_event(e, "job.started", running); }));
  const auto j = body(again.call("GET", "/api/v1/jobs/" + std::to_string(running)));
  EXPECT_EQ("running", j["state"]);
  EXPECT_EQ(2, j["attempts"]);
  EXPECT_EQ("pending", body(again.call("GET", "/api/v1/jobs/" + std::to_string(queued)))["state"]);
  ASSERT_EQ(0, again.cli({"jobs", "cancel", std::to_string(running)}).exit_code);
  EXPECT_TRUE(again.wait_event(
      [&](const nlohmann::json& e) { return job_event(e, "job.started", queued); }));
  ASSERT_EQ(0, again.cli({"jobs", "cancel", std::to_string(queued)}).exit_code);
}

std::string worker_yaml() {
  return "services: {}\nplugins:\n  manifests:\n"
         "    - name: echo\n      category: work\n      mode: worker\n"
         "      worker: {command: [" GPUVISOR_BIN_DIR
         "/gpuvisor-testworker]}\n"
         "      config_schema:\n        type: object\n        properties:\n"
         "          voice: {type: string, default: alice}\n";
}

TEST(WorkerJobs, AWorkerStreamsAndReturnsAResultWithItsConfig) {
  Daemon d(worker_yaml());
  ASSERT_TRUE(d.start()) << d.stderr_text();
  const int64_t id = body(d.call("POST", "/api/v1/plugins/work_echo/jobs"))["id"];
  std::vector<std::string> chunks;
  EXPECT_TRUE(d.wait_event([&](const nlohmann::json& e) {
    if (e["type"] == "job.chunk" && e["data"]["id"] == id) chunks.push_back(e["data"]["data"]);
    return job_event(e, "job.completed", id);
  })) << d.stderr_text();
  EXPECT_EQ((std::vector<std::string>{"chunk 1", "chunk 2"}), chunks);
  const auto done = body(d.call("GET", "/api/v1/jobs/" + std::to_string(id) + "/result"));
  EXPECT_EQ("alice", done["result"]["config"]["voice"]) << done.dump();  // schema default
  EXPECT_EQ(1.0, body(d.call("GET", "/api/v1/jobs/" + std::to_string(id)))["progress"]);
}

TEST(WorkerJobs, ACrashFailsItsJobAndTheQueueGoesOnWithANewWorker) {
  Daemon d(worker_yaml());
  ASSERT_TRUE(d.start()) << d.stderr_text();
  auto submit = [&](const std::string& input) {
    return d.cli({"jobs", "submit", "work_echo", "--input", input});
  };
  const int64_t crash = nlohmann::json::parse(submit(R"({"crash": true})").out)["id"];
  const int64_t after = nlohmann::json::parse(submit(R"({"n": 2})").out)["id"];
  EXPECT_TRUE(d.wait_event([&](const nlohmann::json& e) {
    return job_event(e, "job.completed", after);
  })) << d.stderr_text();
  const auto failed = body(d.call("GET", "/api/v1/jobs/" + std::to_string(crash)));
  EXPECT_EQ("failed", failed["state"]);
  EXPECT_EQ("the worker exited with status 3", failed["error"]);
  const auto fail = nlohmann::json::parse(submit(R"({"fail": true})").out)["id"];
  EXPECT_TRUE(
      d.wait_event([&](const nlohmann::json& e) { return job_event(e, "job.failed", fail); }));
  EXPECT_EQ("worker: asked to fail", body(d.call("GET", "/api/v1/jobs/" + fail.dump()))["error"]);
}

TEST(WorkerJobs, CancellingARunningWorkerJobStopsTheWorker) {
  Daemon d(worker_yaml());
  ASSERT_TRUE(d.start()) << d.stderr_text();
  const int64_t hang = nlohmann::json::parse(
      d.cli({"jobs", "submit", "work_echo", "--input", R"({"hang": true})"}).out)["id"];
  const int64_t next = body(d.call("POST", "/api/v1/plugins/work_echo/jobs"))["id"];
  ASSERT_TRUE(
      d.wait_event([&](const nlohmann::json& e) { return job_event(e, "job.started", hang); }));
  ASSERT_EQ(0, d.cli({"jobs", "cancel", std::to_string(hang)}).exit_code);
  EXPECT_TRUE(
      d.wait_event([&](const nlohmann::json& e) { return job_event(e, "job.cancelled", hang); }));
  EXPECT_TRUE(d.wait_event([&](const nlohmann::json& e) {
    return job_event(e, "job.completed", next);
  })) << d.stderr_text();
  EXPECT_TRUE(d.wait_event([](const nlohmann::json& e) { return e["type"] == "worker.exited"; }));
}

// The answer to a cancel comes once the job has ended and its worker with it: a worker that takes
// a while to wind down has left its marker and exited by the time the cancel is answered.
TEST(WorkerJobs, ACancelIsAnsweredOnceTheJobAndItsWorkerHaveEnded) {
  Daemon d(worker_yaml());
  ASSERT_TRUE(d.start()) << d.stderr_text();
  const std::string marker = d.dir() + "/stopped";
  const nlohmann::json input = {{"hang", true}, {"stop_ms", 1500}, {"stopped_marker", marker}};
  const int64_t id = body(d.call("POST", "/api/v1/plugins/work_echo/jobs", input.dump()))["id"];
  // Its progress says the worker has the job and its slow stop in place.
  ASSERT_TRUE(d.wait_event([&](const nlohmann::json& e) {
    return e["type"] == "job.progress" && e["data"]["id"] == id;
  })) << d.stderr_text();
  pid_t worker = 0;  // recorded as the worker took the job; read once it is on disk
  ASSERT_TRUE(eventually([&] {
    const auto job = body(d.call("GET", "/api/v1/jobs/" + std::to_string(id)));
    if (job["worker_pid"].is_number()) worker = job["worker_pid"];
    return worker > 0;
  }));
  const auto cancelled = d.call("POST", "/api/v1/jobs/" + std::to_string(id) + "/cancel");
  ASSERT_TRUE(cancelled);
  ASSERT_EQ(200, cancelled->status) << cancelled->body;
  const auto answered = body(cancelled);
  EXPECT_EQ("cancelled", answered["state"]) << answered.dump();
  EXPECT_EQ("cancelled while running", answered["error"]) << answered.dump();
  EXPECT_GT(answered["finished_ms"].get<int64_t>(), 0);
  EXPECT_TRUE(std::filesystem::exists(marker)) << "answered before the worker had stopped";
  EXPECT_FALSE(pid_alive(worker));
  EXPECT_EQ("cancelled", body(d.call("GET", "/api/v1/jobs/" + std::to_string(id)))["state"]);
}

// A worker's job may start helpers that leave its session (setsid): cancelling the job ends
// them with the worker, through its cgroup, or without cgroups through the descendants seen when
// the stop began.
TEST(WorkerJobs, CancellingAJobEndsWhatItsWorkerStartedEvenOutsideItsSession) {
  for (const bool cgroups : {true, false}) {
    Daemon d(worker_yaml());
    ASSERT_TRUE(
        d.start(cgroups ? std::vector<std::string>{} : std::vector<std::string>{"--no-cgroups"}))
        << d.stderr_text();
    const std::string file = d.dir() + "/helper";
    const nlohmann::json input = {{"setsid_child", file}, {"hang", true}};
    const int64_t id = body(d.call("POST", "/api/v1/plugins/work_echo/jobs", input.dump()))["id"];
    ASSERT_TRUE(eventually([&] { return read_pid_file(file) > 0; })) << d.stderr_text();
    const pid_t helper = read_pid_file(file);
    ASSERT_TRUE(pid_alive(helper));
    ASSERT_EQ(0, d.cli({"jobs", "cancel", std::to_string(id)}).exit_code);
    EXPECT_TRUE(
        d.wait_event([&](const nlohmann::json& e) { return job_event(e, "job.cancelled", id); }));
    EXPECT_TRUE(wait_gone(helper)) << (cgroups ? "cgroup" : "process tree");
  }
}

// A worker that crashes leaves nothing running either. Only a cgroup can promise that: without
// one, a helper that left the session is no longer the worker's child once the worker is gone.
TEST(WorkerJobs, AWorkerThatCrashesLeavesNothingRunning) {
  Daemon d(worker_yaml());
  ASSERT_TRUE(d.start()) << d.stderr_text();
  if (d.stderr_text().find("cgroups off") != std::string::npos) GTEST_SKIP() << "no cgroups here";
  const std::string file = d.dir() + "/helper";
  const nlohmann::json input = {{"setsid_child", file}, {"crash", true}};
  const int64_t id = body(d.call("POST", "/api/v1/plugins/work_echo/jobs", input.dump()))["id"];
  EXPECT_TRUE(
      d.wait_event([&](const nlohmann::json& e) { return job_event(e, "job.failed", id); }));
  EXPECT_EQ("the worker exited with status 3",
            body(d.call("GET", "/api/v1/jobs/" + std::to_string(id)))["error"]);
  const pid_t helper = read_pid_file(file);
  ASSERT_GT(helper, 0);
  EXPECT_TRUE(wait_gone(helper));
}

TEST(WorkerJobs, AWorkerThatCannotStartFailsItsJobSayingWhy) {
  Daemon d(
      "services: {}\nplugins:\n  manifests:\n"
      "    - {name: gone, category: work, mode: worker,\n"
      "       worker: {command: [/nonexistent/worker]}}\n");
  ASSERT_TRUE(d.start()) << d.stderr_text();
  const int64_t id = body(d.call("POST", "/api/v1/plugins/work_gone/jobs"))["id"];
  EXPECT_TRUE(
      d.wait_event([&](const nlohmann::json& e) { return job_event(e, "job.failed", id); }));
  EXPECT_EQ(
      "cannot start the worker: cannot execute '/nonexistent/worker': No such file or "
      "directory",
      body(d.call("GET", "/api/v1/jobs/" + std::to_string(id)))["error"]);
}

TEST(Jobs, FinishedJobsPastTheRetentionAreDeletedAndRunningOnesKept) {
  const int port = free_port();
  Daemon d("daemon: {job_retention: 300ms}\n" + jobs_yaml(port));
  ASSERT_TRUE(d.start()) << d.stderr_text();
  const int64_t done = body(d.call("POST", "/api/v1/plugins/demo_echo/jobs"))["id"];
  const int64_t hang = body(d.call("POST", "/api/v1/plugins/demo_hang/jobs"))["id"];
  ASSERT_TRUE(
      d.wait_event([&](const nlohmann::json& e) { return job_event(e, "job.completed", done); }));
  EXPECT_TRUE(d.wait_event([](const nlohmann::json& e) {
    return e["type"] == "jobs.purged" && e["data"]["count"] == 1;
  })) << d.stderr_text();
  EXPECT_EQ(404, d.call("GET", "/api/v1/jobs/" + std::to_string(done))->status);
  EXPECT_EQ("running", body(d.call("GET", "/api/v1/jobs/" + std::to_string(hang)))["state"]);
}

}  // namespace
}  // namespace gpuvisor::itest
