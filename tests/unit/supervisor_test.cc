// The lifecycle state machine, driven through fakes on a real io_context (no sleeps: the loop
// runs until the expected state is reached).
#include "supervisor/supervisor.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <optional>

#include "core/duration.h"
#include "lib/fakes.h"
#include "lib/supervisor_fixture.h"

namespace gpuvisor {
namespace {

TEST_F(SupervisorTest, EnsureStartsOnceAndWaitsForHealth) {
  prober_.script = {{false, "connection refused"}, {false, "connection refused"}};
  auto result = ensure("llm");
  ASSERT_TRUE(wait(result));
  ASSERT_TRUE(result->value().ok()) << result->value().error().message;
  EXPECT_EQ(ServiceState::kReady, result->value()->state);
  EXPECT_EQ(std::vector<std::string>{"llm"}, runtime_.started);
  EXPECT_EQ((std::vector<std::string>{"starting", "ready"}), transitions("llm"));
  EXPECT_GE(prober_.checks, 3);
}

TEST_F(SupervisorTest, ConcurrentEnsuresShareOneStart) {
  auto a = ensure("llm");
  auto b = ensure("llm");
  ASSERT_TRUE(wait(a));
  ASSERT_TRUE(wait(b));
  EXPECT_TRUE(a->value().ok());
  EXPECT_TRUE(b->value().ok());
  EXPECT_EQ(std::vector<std::string>{"llm"}, runtime_.started);
}

TEST_F(SupervisorTest, EnsureOfUnknownServiceNamesTheConfiguredOnes) {
  auto result = ensure("nope");
  ASSERT_TRUE(wait(result));
  ASSERT_FALSE(result->value().ok());
  EXPECT_EQ(ErrorCode::kNotFound, result->value().error().code);
  EXPECT_NE(std::string::npos, result->value().error().message.find("llm, tts"));
  EXPECT_TRUE(runtime_.started.empty());
}

TEST_F(SupervisorTest, ExitWhileStartingFailsAtOnceWithTheExitStatus) {
  prober_.otherwise = {false, "connection refused"};
  auto result = ensure("llm");
  ASSERT_TRUE(run_until(io_, [&] { return runtime_.instances.count("llm") > 0; }));
  runtime_.instances["llm"]->exit(3);
  ASSERT_TRUE(wait(result));
  ASSERT_FALSE(result->value().ok());
  EXPECT_EQ(ErrorCode::kFailed, result->value().error().code);
  EXPECT_NE(std::string::npos,
            result->value().error().message.find("exited with status 3 while starting"));
  EXPECT_EQ(ServiceState::kError, state("llm"));
}

TEST_F(SupervisorTest, StartupTimeoutFailsAndStopsTheProcess) {
  spec("llm").startup_timeout = Millis(30);
  prober_.otherwise = {false, "HTTP 503"};
  auto result = ensure("llm");
  ASSERT_TRUE(wait(result));
  ASSERT_FALSE(result->value().ok());
  EXPECT_NE(std::string::npos, result->value().error().message.find("startup_timeout 30ms"));
  EXPECT_NE(std::string::npos, result->value().error().message.find("HTTP 503"));
  EXPECT_EQ(1u, runtime_.instances["llm"]->stop_graces.size());
}

TEST_F(SupervisorTest, CrashRestartsWithBackoffThenGivesUpAtTheLimit) {
  spec("llm").restart = RestartPolicy::kOnFailure;
  spec("llm").restart_limit = 2;
  auto result = ensure("llm");
  ASSERT_TRUE(wait(result));
  for (int crash = 1; crash <= 3; ++crash) {
    ASSERT_TRUE(wait_state("llm", ServiceState::kReady));
    ASSERT_EQ(static_cast<size_t>(crash), runtime_.started.size());
    runtime_.instances["llm"]->exit(1);
    ASSERT_TRUE(wait_state("llm", ServiceState::kError));
  }
  // Nothing more starts: the limit was reached.
  ASSERT_TRUE(run_until(io_, [&] { return runtime_.instances["llm"]->exited(); }));
  EXPECT_EQ(3u, runtime_.started.size());
  EXPECT_NE(std::string::npos, sup().get("llm")->reason.find("gave up after 2 restarts"));
}

TEST_F(SupervisorTest, RestartPolicyNoLeavesTheServiceInError) {
  auto result = ensure("llm");
  ASSERT_TRUE(wait(result));
  runtime_.instances["llm"]->exit(1);
  ASSERT_TRUE(wait_state("llm", ServiceState::kError));
  EXPECT_EQ(1u, runtime_.started.size());
  EXPECT_EQ("exited with status 1", sup().get("llm")->last_exit);
}

TEST_F(SupervisorTest, CleanExitIsNotRestartedOnFailurePolicy) {
  spec("llm").restart = RestartPolicy::kOnFailure;
  ASSERT_TRUE(wait(ensure("llm")));
  runtime_.instances["llm"]->exit(0);
  ASSERT_TRUE(wait_state("llm", ServiceState::kError));
  ASSERT_TRUE(run_until(io_, [&] { return runtime_.instances["llm"]->exited(); }));
  EXPECT_EQ(1u, runtime_.started.size());
}

TEST_F(SupervisorTest, StopWhileStartingFailsTheEnsureWithConflict) {
  prober_.otherwise = {false, "connection refused"};
  auto ensured = ensure("llm");
  ASSERT_TRUE(run_until(io_, [&] { return state("llm") == ServiceState::kStarting; }));
  auto stopped = stop("llm");
  ASSERT_TRUE(wait(ensured));
  ASSERT_TRUE(wait(stopped));
  EXPECT_EQ(ErrorCode::kConflict, ensured->value().error().code);
  EXPECT_EQ(ServiceState::kStopped, stopped->value()->state);
}

TEST_F(SupervisorTest, ExitDuringStopIsNotMistakenForACrash) {
  spec("llm").restart = RestartPolicy::kAlways;
  runtime_.hold_stops = true;
  ASSERT_TRUE(wait(ensure("llm")));
  auto stopped = stop("llm");
  ASSERT_TRUE(wait_state("llm", ServiceState::kStopping));
  runtime_.instances["llm"]->exit(0);  // the SIGTERM worked
  io_.restart();
  io_.poll();
  EXPECT_EQ(ServiceState::kStopping, state("llm"));
  runtime_.instances["llm"]->finish_stop();
  ASSERT_TRUE(wait(stopped));
  EXPECT_EQ(ServiceState::kStopped, state("llm"));
  EXPECT_EQ(1u, runtime_.started.size());
}

TEST_F(SupervisorTest, EnsureDuringStopStartsAgainOnceStopped) {
  runtime_.hold_stops = true;
  ASSERT_TRUE(wait(ensure("llm")));
  auto stopped = stop("llm");
  auto ensured = ensure("llm");
  io_.restart();
  io_.poll();
  EXPECT_EQ(1u, runtime_.started.size());  // never two instances at once
  runtime_.instances["llm"]->finish_stop();
  ASSERT_TRUE(wait(stopped));
  ASSERT_TRUE(wait(ensured));
  EXPECT_TRUE(ensured->value().ok());
  EXPECT_EQ(2u, runtime_.started.size());
}

TEST_F(SupervisorTest, ForceStopBringsTheKillForward) {
  runtime_.hold_stops = true;
  ASSERT_TRUE(wait(ensure("llm")));
  auto first = stop("llm");
  auto forced = stop("llm", true);
  io_.restart();
  io_.poll();
  EXPECT_EQ((std::vector<Millis>{Millis(1000), Millis(0)}), runtime_.instances["llm"]->stop_graces);
  runtime_.instances["llm"]->finish_stop();
  ASSERT_TRUE(wait(first));
  ASSERT_TRUE(wait(forced));
  EXPECT_EQ("killed with SIGKILL (stop --force)", forced->value()->reason);
}

TEST_F(SupervisorTest, StopDuringRestartBackoffStaysStopped) {
  spec("llm").restart = RestartPolicy::kOnFailure;
  spec("llm").restart_backoff = Millis(200);
  ASSERT_TRUE(wait(ensure("llm")));
  runtime_.instances["llm"]->exit(1);
  ASSERT_TRUE(run_until(io_, [&] {
    return sup().get("llm")->reason.find("restarting in") != std::string::npos &&
           runtime_.instances["llm"]->exited();
  }));
  auto stopped = stop("llm");
  ASSERT_TRUE(wait(stopped));
  EXPECT_EQ(ServiceState::kStopped, state("llm"));
  // Run past the backoff: nothing may start.
  const auto until = std::chrono::steady_clock::now() + Millis(300);
  run_until(io_, [&] { return std::chrono::steady_clock::now() > until; });
  EXPECT_EQ(1u, runtime_.started.size());
  EXPECT_EQ(ServiceState::kStopped, state("llm"));
}

TEST_F(SupervisorTest, FailedLivenessChecksRestartTheService) {
  spec("llm").restart = RestartPolicy::kOnFailure;
  spec("llm").health.failure_threshold = 2;
  ASSERT_TRUE(wait(ensure("llm")));
  prober_.script = {{false, "timed out after 2s"}, {false, "timed out after 2s"}};
  ASSERT_TRUE(run_until(io_, [&] { return runtime_.started.size() == 2; }));
  ASSERT_TRUE(wait_state("llm", ServiceState::kReady));
  bool saw_reason = false;
  for (const auto& e : events_.since(0)) {
    const std::string reason = e.data.value("reason", "");
    saw_reason |= reason.find("liveness check failed 2 times") != std::string::npos;
  }
  EXPECT_TRUE(saw_reason);
}

TEST_F(SupervisorTest, EnsureTimeoutLeavesTheStartRunning) {
  prober_.otherwise = {false, "connection refused"};
  auto result = ensure("llm", Millis(20));
  ASSERT_TRUE(wait(result));
  EXPECT_EQ(ErrorCode::kTimeout, result->value().error().code);
  EXPECT_NE(std::string::npos, result->value().error().message.find("connection refused"));
  EXPECT_EQ(ServiceState::kStarting, state("llm"));
}

TEST_F(SupervisorTest, StartFailureIsReportedWithTheReason) {
  runtime_.fail_start = true;
  auto result = ensure("llm");
  ASSERT_TRUE(wait(result));
  ASSERT_FALSE(result->value().ok());
  EXPECT_NE(std::string::npos, result->value().error().message.find("No such file"));
  EXPECT_EQ(ServiceState::kError, state("llm"));
}

TEST_F(SupervisorTest, StartPersistsARecordAndStopRemovesIt) {
  const auto record = std::filesystem::path(state_dir_) / "run" / "llm.json";
  ASSERT_TRUE(wait(ensure("llm")));
  EXPECT_TRUE(std::filesystem::exists(record));
  ASSERT_TRUE(wait(stop("llm")));
  EXPECT_FALSE(std::filesystem::exists(record));
}

TEST_F(SupervisorTest, AdoptsWhatAPreviousDaemonStarted) {
  {
    auto store = StateStore::open(state_dir_);
    ASSERT_TRUE(store.ok());
    ASSERT_TRUE(store->save(InstanceRecord{"llm", 4242, 77, "", false, 1}).ok());
  }
  ASSERT_TRUE(wait_state("llm", ServiceState::kReady));
  EXPECT_EQ(std::vector<std::string>{"llm"}, runtime_.adopted);
  EXPECT_TRUE(runtime_.started.empty());
  EXPECT_EQ(4242, sup().get("llm")->pid);
  EXPECT_TRUE(sup().get("llm")->adopted);
  EXPECT_EQ((std::vector<std::string>{"unknown", "ready"}), transitions("llm"));
}

TEST_F(SupervisorTest, AnAdoptedInstanceKeepsItsRestartCountUnlessItRanLong) {
  {
    auto store = StateStore::open(state_dir_);
    InstanceRecord recent{"llm", 4242, 77, "", false, unix_ms_now()};
    recent.restarts = 2;
    ASSERT_TRUE(store->save(recent).ok());
    InstanceRecord old{"tts", 4343, 78, "", false, 1};  // started in 1970
    old.restarts = 3;
    ASSERT_TRUE(store->save(old).ok());
  }
  ASSERT_TRUE(wait_state("llm", ServiceState::kReady));
  EXPECT_EQ(2, sup().get("llm")->restarts);
  EXPECT_EQ(0, sup().get("tts")->restarts);
  std::ifstream saved(std::filesystem::path(state_dir_) / "run" / "llm.json");
  EXPECT_EQ(2, nlohmann::json::parse(saved).value("restarts", -1));
}

TEST_F(SupervisorTest, WhatTheRuntimeReclaimsIsAWarningAfterTheAdoptions) {
  runtime_.reclaimed = {"/cg/llm.1.1: left running by an earlier daemon with no record of it"};
  {
    auto store = StateStore::open(state_dir_);
    ASSERT_TRUE(store->save(InstanceRecord{"llm", 4242, 77, "", false, 1}).ok());
  }
  sup();
  EXPECT_EQ(std::vector<std::string>{"llm"}, runtime_.reclaim_saw);
  const auto events = events_.since(0);
  const auto warning = std::find_if(events.begin(), events.end(),
                                    [](const auto& e) { return e.type == "daemon.warning"; });
  ASSERT_NE(events.end(), warning);
  EXPECT_EQ(runtime_.reclaimed.front(), warning->data["message"]);
}

TEST_F(SupervisorTest, RecordOfAGoneProcessIsDiscardedNotSignalled) {
  runtime_.adoptable = false;
  {
    auto store = StateStore::open(state_dir_);
    ASSERT_TRUE(store->save(InstanceRecord{"llm", 4242, 77, "", false, 1}).ok());
  }
  sup();
  EXPECT_EQ(std::vector<std::string>{"llm"}, runtime_.discarded);
  EXPECT_EQ(ServiceState::kStopped, state("llm"));
  EXPECT_FALSE(std::filesystem::exists(std::filesystem::path(state_dir_) / "run" / "llm.json"));
}

TEST_F(SupervisorTest, CorruptRecordIsMovedAsideWithAWarning) {
  std::filesystem::create_directories(std::filesystem::path(state_dir_) / "run");
  { std::ofstream(std::filesystem::path(state_dir_) / "run" / "llm.json") << "{not json"; }
  sup();
  EXPECT_TRUE(runtime_.adopted.empty());
  EXPECT_TRUE(
      std::filesystem::exists(std::filesystem::path(state_dir_) / "run" / "llm.json.corrupt"));
  ASSERT_FALSE(events_.since(0).empty());
  EXPECT_EQ("daemon.warning", events_.since(0).front().type);
}

TEST_F(SupervisorTest, ShutdownStopsWhatItStarted) {
  ASSERT_TRUE(wait(ensure("llm")));
  bool done = false;
  sup().shutdown(true, [&] { done = true; });
  ASSERT_TRUE(run_until(io_, [&] { return done; }));
  EXPECT_EQ(ServiceState::kStopped, state("llm"));
  EXPECT_EQ(1u, runtime_.instances["llm"]->stop_graces.size());
}

TEST_F(SupervisorTest, AHoldKeepsTheServiceBusyUntilItGoesOutOfScope) {
  ASSERT_TRUE(wait(ensure("llm")));
  {
    auto first = sup().hold("llm", "a job");
    ASSERT_TRUE(first.ok());
    Hold moved = std::move(*first);
    EXPECT_TRUE(moved.active());
    EXPECT_FALSE(first->active());  // moved from: holds nothing, releases nothing
    EXPECT_EQ(ServiceState::kBusy, state("llm"));
  }
  EXPECT_EQ(ServiceState::kReady, state("llm"));
}

TEST_F(SupervisorTest, AHoldOnAFailedInstanceIsInactiveAndLettingItGoLeavesTheNextAlone) {
  spec("llm").restart = RestartPolicy::kAlways;
  ASSERT_TRUE(wait(ensure("llm")));
  auto old = sup().hold("llm", "a job");
  ASSERT_TRUE(old.ok());
  runtime_.instances["llm"]->exit(1);
  ASSERT_TRUE(wait_state("llm", ServiceState::kError));
  EXPECT_FALSE(old->active());
  ASSERT_TRUE(wait_state("llm", ServiceState::kReady));
  auto current = sup().hold("llm", "another job");
  ASSERT_TRUE(current.ok());
  old->release();
  EXPECT_EQ(ServiceState::kBusy, state("llm"));
  EXPECT_TRUE(current->active());
}

TEST_F(SupervisorTest, EnsureHeldStartsTheServiceAndHandsBackAHold) {
  std::optional<Result<Hold>> got;
  sup().ensure_held("llm", Millis(10'000), "a job",
                    [&](Result<Hold> hold) { got.emplace(std::move(hold)); });
  ASSERT_TRUE(run_until(io_, [&] { return got.has_value(); }));
  ASSERT_TRUE(got->ok()) << got->error().message;
  EXPECT_EQ(ServiceState::kBusy, state("llm"));
  got.reset();
  EXPECT_EQ(ServiceState::kReady, state("llm"));

  std::optional<Result<Hold>> refused;
  sup().ensure_held("nope", Millis(10), "a job",
                    [&](Result<Hold> hold) { refused.emplace(std::move(hold)); });
  ASSERT_TRUE(run_until(io_, [&] { return refused.has_value(); }));
  EXPECT_EQ(ErrorCode::kNotFound, refused->error().code);
}

}  // namespace
}  // namespace gpuvisor
