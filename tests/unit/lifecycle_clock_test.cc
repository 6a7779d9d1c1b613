// The lifecycle's deadlines at chosen instants, on a FakeClock: nothing here waits for real
// time, so the values are the ones users configure (minutes), not tiny test ones.
#include <gtest/gtest.h>

#include "core/duration.h"
#include "lib/supervisor_fixture.h"

namespace gpuvisor {
namespace {

using std::chrono::minutes;
using std::chrono::seconds;

class LifecycleClockTest : public SupervisorTest {
 protected:
  void SetUp() override {
    SupervisorTest::SetUp();
    use_fake_clock();
    for (auto& s : config_.services) {
      s.health.interval = seconds(30);
      s.startup_timeout = minutes(5);
      s.restart_backoff = seconds(1);
      s.restart_backoff_max = seconds(4);
    }
  }
  size_t starts() const { return runtime_.started.size(); }
};

TEST_F(LifecycleClockTest, StartupTimeoutFailsAtItsDeadlineAndNotBefore) {
  prober_.otherwise = {false, "HTTP 503"};
  auto result = ensure("llm", minutes(10));
  advance(Millis(0));
  ASSERT_EQ(ServiceState::kStarting, state("llm"));
  advance(minutes(5) - Millis(1));
  EXPECT_EQ(ServiceState::kStarting, state("llm"));
  EXPECT_FALSE(result->has_value());
  advance(Millis(1));
  ASSERT_TRUE(result->has_value());
  ASSERT_FALSE(result->value().ok());
  EXPECT_NE(std::string::npos, result->value().error().message.find("startup_timeout 5m"));
  EXPECT_NE(std::string::npos, result->value().error().message.find("HTTP 503"));
}

TEST_F(LifecycleClockTest, ReadinessProbesBackOffAsTheStartGoesOn) {
  prober_.otherwise = {false, "HTTP 503"};
  ensure("llm", minutes(10));
  advance(Millis(0));
  const int first = prober_.checks;
  advance(seconds(10));
  const int in_first_10s = prober_.checks - first;
  advance(seconds(10));
  const int in_next_10s = prober_.checks - first - in_first_10s;
  // elapsed/10 between probes, capped by health.startup_poll_cap: fewer as time goes on.
  EXPECT_GT(in_first_10s, in_next_10s);
  EXPECT_GT(in_next_10s, 0);
}

TEST_F(LifecycleClockTest, RestartBackoffDoublesUpToItsCap) {
  spec("llm").restart = RestartPolicy::kAlways;
  spec("llm").restart_limit = 10;
  ensure("llm");
  advance(Millis(0));
  ASSERT_EQ(ServiceState::kReady, state("llm"));
  for (const Millis delay : {seconds(1), seconds(2), seconds(4), seconds(4)}) {
    const size_t before = starts();
    runtime_.instances["llm"]->exit(1);
    advance(Millis(0));
    ASSERT_EQ(ServiceState::kError, state("llm"));
    EXPECT_NE(std::string::npos,
              sup().get("llm")->reason.find("restarting in " + format_duration(delay)));
    advance(delay - Millis(1));
    EXPECT_EQ(before, starts()) << "restarted before its backoff of " << format_duration(delay);
    advance(Millis(1));
    EXPECT_EQ(before + 1, starts());
    ASSERT_EQ(ServiceState::kReady, state("llm"));
  }
}

TEST_F(LifecycleClockTest, RunningPastRestartResetAfterGivesBackTheRestartBudget) {
  spec("llm").restart = RestartPolicy::kAlways;
  spec("llm").restart_limit = 1;
  spec("llm").restart_reset_after = minutes(10);
  ensure("llm");
  advance(Millis(0));
  runtime_.instances["llm"]->exit(1);
  advance(seconds(1));
  ASSERT_EQ(ServiceState::kReady, state("llm"));
  ASSERT_EQ(1, sup().get("llm")->restarts);
  // A crash within restart_reset_after of being ready: the budget (1) is spent.
  advance(minutes(10) - Millis(1));
  runtime_.instances["llm"]->exit(1);
  advance(minutes(1));
  EXPECT_EQ(ServiceState::kError, state("llm"));
  EXPECT_NE(std::string::npos, sup().get("llm")->reason.find("gave up after 1 restarts"));

  // Ensured again (a person asked: the budget starts over), then up for restart_reset_after.
  ensure("llm");
  advance(Millis(0));
  runtime_.instances["llm"]->exit(1);
  advance(seconds(1));
  ASSERT_EQ(ServiceState::kReady, state("llm"));
  advance(minutes(10));
  runtime_.instances["llm"]->exit(1);
  advance(Millis(0));
  EXPECT_NE(std::string::npos, sup().get("llm")->reason.find("restarting in 1s (restart 1 of 1)"));
}

TEST_F(LifecycleClockTest, IdleTtlCountsFromTheLastUse) {
  spec("llm").idle_ttl = minutes(10);
  ensure("llm");
  advance(Millis(0));
  ASSERT_EQ(ServiceState::kReady, state("llm"));
  advance(minutes(9));
  ensure("llm");  // a use: the idle time starts over
  advance(minutes(9));
  EXPECT_EQ(ServiceState::kReady, state("llm"));
  advance(minutes(1) - Millis(1));
  EXPECT_EQ(ServiceState::kReady, state("llm"));
  advance(Millis(1));
  EXPECT_EQ(ServiceState::kStopped, state("llm"));
  std::string why_stopping;
  for (const auto& e : events_.since(0)) {
    if (e.type == "service.state_changed" && e.data["to"] == "stopping") {
      why_stopping = e.data["reason"].get<std::string>();
    }
  }
  EXPECT_EQ("idle for 10m (idle_ttl)", why_stopping);
}

TEST_F(LifecycleClockTest, ABusyServiceIsNotStoppedByIdleTtlUntilReleasedAndIdleAgain) {
  spec("llm").idle_ttl = minutes(1);
  ensure("llm");
  advance(Millis(0));
  const auto token = sup().acquire("llm", "a long job");
  ASSERT_TRUE(token.ok());
  advance(minutes(30));
  EXPECT_EQ(ServiceState::kBusy, state("llm"));
  sup().release("llm", *token);
  advance(minutes(1) - Millis(1));
  EXPECT_EQ(ServiceState::kReady, state("llm"));
  advance(Millis(1));
  EXPECT_EQ(ServiceState::kStopped, state("llm"));
}

TEST_F(LifecycleClockTest, AnEnsureTimeoutEndsTheWaitButNotTheStart) {
  prober_.otherwise = {false, "connection refused"};
  auto result = ensure("llm", seconds(30));
  advance(seconds(30) - Millis(1));
  EXPECT_FALSE(result->has_value());
  advance(Millis(1));
  ASSERT_TRUE(result->has_value());
  EXPECT_EQ(ErrorCode::kTimeout, result->value().error().code);
  EXPECT_NE(std::string::npos, result->value().error().message.find("not ready after 30s"));
  EXPECT_EQ(ServiceState::kStarting, state("llm"));
  prober_.otherwise = {true, "HTTP 200"};
  advance(seconds(30));
  EXPECT_EQ(ServiceState::kReady, state("llm"));
}

}  // namespace
}  // namespace gpuvisor
