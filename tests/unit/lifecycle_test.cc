// The lifecycle reducer on its own: each rule is one step from a chosen state, with the
// effects it asks for checked, and no loop, clock or process involved.
#include "supervisor/lifecycle.h"

#include <gtest/gtest.h>

#include "core/duration.h"
#include "lib/lifecycle_fixture.h"

namespace gpuvisor::lifecycle {
namespace {

using std::chrono::seconds;

TEST_F(LifecycleTest, AnEnsureOfAStoppedServiceStartsItOnceForAllWaiters) {
  feed(input::Ensure{1});
  EXPECT_EQ("ensure requested", one<effect::Start>().why);
  EXPECT_TRUE(state_.want_running);
  feed(input::NewInstance{});
  feed(input::Launched{"ensure requested", std::nullopt});
  EXPECT_EQ(ServiceState::kStarting, state_.state);
  feed(input::Ensure{2});
  EXPECT_TRUE(all<effect::Start>().empty());
  EXPECT_EQ((std::vector<WaiterId>{1, 2}), state_.waiters);
}

TEST_F(LifecycleTest, ALaunchArmsTheStartupDeadlineAndProbesWithinIt) {
  feed(input::Ensure{1});
  feed(input::NewInstance{});
  feed(input::Launched{"ensure requested", std::nullopt});
  EXPECT_EQ(now_ + seconds(300), armed(TimerKind::kStartup));
  const auto probe = one<effect::Probe>();
  EXPECT_FALSE(probe.liveness);
  EXPECT_EQ(seconds(2), probe.timeout);  // health.timeout, within the deadline
  EXPECT_EQ(state_.generation, probe.generation);
}

TEST_F(LifecycleTest, AFailedReadinessProbeIsRetriedAfterATenthOfTheTimeSoFar) {
  feed(input::Ensure{1});
  feed(input::NewInstance{});
  feed(input::Launched{"ensure requested", std::nullopt});
  feed(input::ProbeDone{state_.generation, false, false, "HTTP 503", false}, seconds(5));
  EXPECT_EQ(now_ + Millis(100), armed(TimerKind::kProbe));  // startup_poll_cap 100ms
  EXPECT_EQ("HTTP 503", state_.last_probe);
  feed(input::TimerFired{state_.generation, TimerKind::kProbe}, Millis(100));
  EXPECT_FALSE(one<effect::Probe>().liveness);
}

TEST_F(LifecycleTest, HealthyResolvesTheWaitersAndStartsLivenessChecks) {
  feed(input::Ensure{7});
  feed(input::NewInstance{});
  feed(input::Launched{"ensure requested", std::nullopt});
  feed(input::ProbeDone{state_.generation, false, true, "HTTP 200", false}, seconds(42));
  EXPECT_EQ(ServiceState::kReady, state_.state);
  EXPECT_EQ("health check passed (HTTP 200)", state_.reason);
  EXPECT_EQ(std::vector<WaiterId>{7}, one<effect::Resolve>().waiters);
  EXPECT_EQ(now_ + seconds(30), armed(TimerKind::kProbe));
  EXPECT_DOUBLE_EQ(42.0, state_.reload_seconds);
  feed(input::TimerFired{state_.generation, TimerKind::kProbe}, seconds(30));
  EXPECT_TRUE(one<effect::Probe>().liveness);
}

TEST_F(LifecycleTest, ACompletionFromAnOlderGenerationChangesNothing) {
  make_ready();
  const UnitState before = state_;
  feed(input::ProbeDone{before.generation - 1, true, false, "timed out", false});
  feed(input::Exited{before.generation - 1, "exited with status 1", false, false});
  feed(input::TimerFired{before.generation - 1, TimerKind::kIdle});
  EXPECT_TRUE(last_.effects.empty());
  EXPECT_EQ(ServiceState::kReady, state_.state);
  EXPECT_EQ(0, state_.liveness_failures);
}

TEST_F(LifecycleTest, ACrashFailsWaitersCleansUpThenRestartsAfterItsBackoff) {
  feed(input::Ensure{1});
  feed(input::NewInstance{});
  feed(input::Launched{"ensure requested", std::nullopt});
  const uint64_t generation = state_.generation;
  feed(input::Exited{generation, "exited with status 3", false, false});
  EXPECT_EQ(ServiceState::kError, state_.state);
  EXPECT_EQ("exited with status 3 while starting; restarting in 1s (restart 1 of 3)",
            state_.reason);
  const auto fail = one<effect::Fail>();
  EXPECT_EQ(std::vector<WaiterId>{1}, fail.waiters);
  EXPECT_TRUE(fail.with_log);
  EXPECT_EQ(ErrorCode::kFailed, fail.error.code);
  const auto cleanup = one<effect::StopInstance>();
  EXPECT_TRUE(cleanup.cleanup);
  EXPECT_EQ(seconds(10), cleanup.grace);
  EXPECT_GT(state_.generation, generation);

  feed(input::Cleaned{state_.generation}, seconds(2));
  EXPECT_EQ("failure", one<effect::DropInstance>().after);
  EXPECT_EQ(now_ + seconds(1), armed(TimerKind::kBackoff));
  feed(input::TimerFired{state_.generation, TimerKind::kBackoff}, seconds(1));
  EXPECT_EQ("restart 1 of 3 after failure", one<effect::Start>().why);
}

TEST_F(LifecycleTest, LivenessFailuresRestartOnlyAtTheThreshold) {
  make_ready();
  for (int i = 1; i < spec_.health.failure_threshold; ++i) {
    feed(input::ProbeDone{state_.generation, true, false, "timed out", false});
    EXPECT_EQ(ServiceState::kReady, state_.state);
  }
  feed(input::ProbeDone{state_.generation, true, false, "timed out", false});
  EXPECT_EQ(ServiceState::kError, state_.state);
  EXPECT_NE(std::string::npos, state_.reason.find("liveness check failed 3 times in a row"));
}

TEST_F(LifecycleTest, StopOfAServiceWithNoInstanceAnswersAtOnce) {
  feed(input::Stop{9, false});
  EXPECT_EQ(std::vector<WaiterId>{9}, one<effect::ResolveStops>().waiters);
  EXPECT_TRUE(all<effect::StopInstance>().empty());
}

TEST_F(LifecycleTest, AForcedStopDuringAGracefulOneKillsNowAndSaysSo) {
  make_ready();
  feed(input::Stop{2, false});
  EXPECT_EQ(seconds(10), one<effect::StopInstance>().grace);
  feed(input::Stop{3, true});
  one<effect::KillNow>();
  feed(input::StopDone{state_.generation, true, ""});
  EXPECT_EQ("killed with SIGKILL (stop --force)", state_.reason);
  EXPECT_EQ((std::vector<WaiterId>{2, 3}), one<effect::ResolveStops>().waiters);
  EXPECT_TRUE(all<effect::Start>().empty());
}

TEST_F(LifecycleTest, AnEnsureDuringAStopStartsAgainOnceStopped) {
  make_ready();
  feed(input::Stop{2, false});
  feed(input::Ensure{3});
  feed(input::StopDone{state_.generation, false, ""});
  EXPECT_EQ(ServiceState::kStopped, state_.state);
  EXPECT_EQ("ensure requested while stopping", one<effect::Start>().why);
}

TEST_F(LifecycleTest, EvictionFailsItsWaitersAndNamesWhoItWasFor) {
  make_ready();
  feed(input::Ensure{4});  // ready: resolved at once, not a waiter
  feed(input::Evict{"img"});
  EXPECT_FALSE(state_.want_running);
  EXPECT_EQ("evicted to make room for img", state_.reason);
  feed(input::StopDone{state_.generation, true, ""});
  EXPECT_EQ(
      "evicted to make room for img (killed with SIGKILL (did not exit within stop_grace 10s))",
      state_.reason);
  one<effect::VictimStopped>();
}

TEST_F(LifecycleTest, IdleTtlStopsAReadyServiceButNotABusyOne) {
  spec_.idle_ttl = seconds(600);
  make_ready();
  EXPECT_EQ(now_ + seconds(600), armed(TimerKind::kIdle));
  feed(input::Acquire{"a job"});
  EXPECT_EQ(ServiceState::kBusy, state_.state);
  feed(input::TimerFired{state_.generation, TimerKind::kIdle}, seconds(600));
  EXPECT_EQ(ServiceState::kBusy, state_.state);  // busy: the timer was cancelled, and is moot
  feed(input::Release{state_.generation});
  EXPECT_EQ(ServiceState::kReady, state_.state);
  EXPECT_EQ(now_ + seconds(600), armed(TimerKind::kIdle));
  feed(input::TimerFired{state_.generation, TimerKind::kIdle}, seconds(600));
  EXPECT_EQ(ServiceState::kStopping, state_.state);
  EXPECT_EQ("idle for 10m (idle_ttl)", state_.reason);
}

TEST_F(LifecycleTest, AReleaseForAnEndedInstanceChangesNothing) {
  make_ready();
  feed(input::Acquire{"a job"});
  const uint64_t token = state_.generation;
  feed(input::Exited{state_.generation, "killed by signal 9", false, false});
  feed(input::Cleaned{state_.generation});
  feed(input::TimerFired{state_.generation, TimerKind::kBackoff}, seconds(1));
  feed(input::NewInstance{});
  feed(input::Launched{"restart", std::nullopt});
  feed(input::Release{token});
  EXPECT_TRUE(last_.effects.empty());
  EXPECT_EQ(ServiceState::kStarting, state_.state);
}

TEST_F(LifecycleTest, APlannedExitIsAStopNotAFailure) {
  make_ready();
  feed(input::Exited{state_.generation, "stopped by its backend (budget)", false, true});
  EXPECT_EQ(ServiceState::kStopped, state_.state);
  EXPECT_FALSE(state_.has_instance);
  EXPECT_TRUE(all<effect::StopInstance>().empty());
  EXPECT_EQ("", one<effect::DropInstance>().after);
}

TEST_F(LifecycleTest, TheRestartBudgetEndsInGivingUp) {
  spec_.restart_limit = 1;
  make_ready();
  feed(input::Exited{state_.generation, "exited with status 1", false, false});
  feed(input::Cleaned{state_.generation});
  feed(input::TimerFired{state_.generation, TimerKind::kBackoff}, seconds(1));
  feed(input::NewInstance{});
  feed(input::Launched{"restart", std::nullopt});
  feed(input::ProbeDone{state_.generation, false, true, "HTTP 200", false});
  feed(input::Exited{state_.generation, "exited with status 1", false, false}, seconds(1));
  EXPECT_EQ("exited with status 1; gave up after 1 restarts", state_.reason);
  feed(input::Cleaned{state_.generation});
  EXPECT_FALSE(armed(TimerKind::kBackoff));
}

// Failures while the engine is away (dockerd restarting) retry with doubling backoff but leave
// the restart budget alone; the budget still counts the service's own failures.
TEST_F(LifecycleTest, AnUnreachableEngineRetriesWithoutSpendingTheRestartBudget) {
  spec_.restart_limit = 1;
  make_ready();
  const auto unreachable = [this](Millis after) {
    feed(input::Exited{state_.generation, "cannot reach the Docker engine", false, false, true},
         after);
    feed(input::Cleaned{state_.generation});
  };
  const std::vector<Millis> delays = {seconds(1), seconds(2), seconds(4), seconds(8), seconds(8)};
  for (const auto delay : delays) {
    unreachable(Millis(0));
    const std::string says = "; engine unreachable, retrying in " + format_duration(delay) +
                             " (not counted against restart_limit)";
    EXPECT_EQ(0u, state_.reason.find("cannot reach the Docker engine")) << state_.reason;
    EXPECT_TRUE(state_.reason.ends_with(says)) << state_.reason;
    EXPECT_EQ(0, state_.restarts);
    EXPECT_EQ(now_ + delay, armed(TimerKind::kBackoff));
    feed(input::TimerFired{state_.generation, TimerKind::kBackoff}, delay);
    EXPECT_NE(std::string::npos, one<effect::Start>().why.find("engine was unreachable"));
    feed(input::NewInstance{});
    feed(input::Launched{"retry", std::nullopt});
  }
  // Back and healthy: the engine's retries start over, and a crash of its own is counted.
  feed(input::ProbeDone{state_.generation, false, true, "HTTP 200", false});
  EXPECT_EQ(0, state_.engine_retries);
  feed(input::Exited{state_.generation, "exited with status 1", false, false});
  EXPECT_EQ(1, state_.restarts);
  EXPECT_EQ("exited with status 1; restarting in 1s (restart 1 of 1)", state_.reason);
}

TEST_F(LifecycleTest, ShutdownFailsWaitersAndStopsOnlyWhenAsked) {
  feed(input::Ensure{1});
  feed(input::NewInstance{});
  feed(input::Launched{"ensure requested", std::nullopt});
  shutting_down_ = true;
  feed(input::Shutdown{5});
  EXPECT_EQ(ErrorCode::kUnavailable, one<effect::Fail>().error.code);
  EXPECT_EQ(ServiceState::kStopping, state_.state);
  feed(input::Exited{state_.generation - 1, "exited with status 0", true, false});
  EXPECT_TRUE(last_.effects.empty());  // the stop's own exit is not a crash
  feed(input::StopDone{state_.generation, false, ""});
  EXPECT_TRUE(all<effect::Start>().empty());
}

TEST_F(LifecycleTest, AWaiterThatTimesOutIsToldTheStateAndTheLastProbe) {
  feed(input::Ensure{1});
  feed(input::NewInstance{});
  feed(input::Launched{"ensure requested", std::nullopt});
  feed(input::ProbeDone{state_.generation, false, false, "connection refused", true});
  feed(input::WaiterTimedOut{1, seconds(30)});
  const auto fail = one<effect::Fail>();
  EXPECT_EQ(ErrorCode::kTimeout, fail.error.code);
  EXPECT_EQ(
      "'llm' not ready after 30s (state starting: ensure requested); last health check: "
      "connection refused",
      fail.error.message);
  EXPECT_TRUE(state_.waiters.empty());
  EXPECT_EQ(ServiceState::kStarting, state_.state);
}

TEST_F(LifecycleTest, ABackoffIsPersistedWhileItRunsAndForgottenOnceOver) {
  make_ready();
  feed(input::Exited{state_.generation, "exited with status 1", false, false});
  feed(input::Cleaned{state_.generation});
  const auto pending = one<effect::PendingRestart>();
  EXPECT_EQ(now_ + seconds(1), pending.due);
  EXPECT_EQ(1, pending.restarts);
  feed(input::TimerFired{state_.generation, TimerKind::kBackoff}, seconds(1));
  EXPECT_FALSE(one<effect::PendingRestart>().due);
  EXPECT_FALSE(state_.restart_pending);
}

TEST_F(LifecycleTest, AStopDuringABackoffForgetsThePendingRestartButShutdownKeepsIt) {
  make_ready();
  feed(input::Exited{state_.generation, "exited with status 1", false, false});
  feed(input::Cleaned{state_.generation});
  shutting_down_ = true;
  feed(input::Shutdown{std::nullopt});
  EXPECT_TRUE(all<effect::PendingRestart>().empty());
  EXPECT_TRUE(state_.restart_pending);
  shutting_down_ = false;
  feed(input::Stop{1, false});
  EXPECT_FALSE(one<effect::PendingRestart>().due);
}

TEST_F(LifecycleTest, ARestartPendingFromThePreviousDaemonHappensWhenItWasDue) {
  feed(input::ResumeRestart{2, now_ + seconds(3)});
  EXPECT_EQ(ServiceState::kError, state_.state);
  EXPECT_TRUE(state_.want_running);
  EXPECT_EQ(2, state_.restarts);
  EXPECT_EQ(now_ + seconds(3), armed(TimerKind::kBackoff));
  feed(input::TimerFired{state_.generation, TimerKind::kBackoff}, seconds(3));
  EXPECT_EQ("restart 2 of 3 after failure", one<effect::Start>().why);
  // Overdue (the daemon was down longer than the backoff): at once.
  state_ = {};
  feed(input::ResumeRestart{1, now_ - seconds(60)});
  EXPECT_EQ(now_, armed(TimerKind::kBackoff));
}

}  // namespace
}  // namespace gpuvisor::lifecycle
