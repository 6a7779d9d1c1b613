// SPDX-License-Identifier: Apache-2.0
// Sleep and wake in the lifecycle reducer: an eviction that keeps the process, the residual
// measured once it settles, the wake that goes through the health check, and every way out.
#include <gtest/gtest.h>

#include "lib/lifecycle_fixture.h"

namespace gpuvisor::lifecycle {
namespace {

using std::chrono::seconds;

constexpr uint64_t kMiB = 1ULL << 20;

class SleepTest : public LifecycleTest {
 protected:
  SleepTest() {
    spec_.sleep.http = "http://127.0.0.1:1/sleep";
    spec_.wake.http = "http://127.0.0.1:1/wake_up";
  }
  // Ready, then put to sleep for img, its hook done.
  void make_asleep() {
    make_ready();
    feed(input::Sleep{"img"});
    feed(input::HookDone{state_.generation, Hook::kSleep, ""});
    ASSERT_EQ(ServiceState::kSleeping, state_.state);
  }
};

TEST_F(SleepTest, AnEvictionBySleepRunsTheHookAndKeepsTheInstance) {
  make_ready();
  const uint64_t born = state_.instance_generation;
  feed(input::Sleep{"img"});
  EXPECT_EQ(ServiceState::kStopping, state_.state);
  EXPECT_EQ("putting it to sleep to make room for img", state_.reason);
  EXPECT_EQ(Hook::kSleep, one<effect::RunHook>().hook);
  EXPECT_TRUE(all<effect::StopInstance>().empty());
  EXPECT_FALSE(state_.want_running);

  feed(input::HookDone{state_.generation, Hook::kSleep, ""});
  EXPECT_EQ(ServiceState::kSleeping, state_.state);
  EXPECT_EQ("asleep: put to sleep to make room for img", state_.reason);
  EXPECT_TRUE(state_.has_instance);
  EXPECT_EQ(born, state_.instance_generation);
  EXPECT_EQ(1u, all<effect::VictimStopped>().size());  // the placement may look again
  EXPECT_EQ(1u, all<effect::ReadVram>().size());       // and the residual is measured
  EXPECT_TRUE(all<effect::DropInstance>().empty());
}

TEST_F(SleepTest, TheResidualIsWhatTheReadingsSettleOn) {
  make_asleep();
  const uint64_t g = state_.generation;
  feed(input::VramReading{g, 9000 * kMiB});
  EXPECT_EQ(now_ + Millis(100), armed(TimerKind::kSettle));
  feed(input::TimerFired{g, TimerKind::kSettle}, Millis(100));
  EXPECT_EQ(1u, all<effect::ReadVram>().size());
  feed(input::VramReading{g, 1200 * kMiB});  // still falling
  feed(input::VramReading{g, 1201 * kMiB}, Millis(100));
  EXPECT_EQ(0u, state_.residual_bytes);  // once steady is not yet settled
  feed(input::VramReading{g, 1200 * kMiB}, Millis(100));
  EXPECT_EQ(1200 * kMiB, state_.residual_bytes);
  EXPECT_EQ(ServiceState::kSleeping, state_.state);
  EXPECT_NE(std::string::npos, state_.reason.find("still holds 1.2 GiB")) << state_.reason;
  EXPECT_FALSE(armed(TimerKind::kSettle));
}

TEST_F(SleepTest, ReadingsThatNeverSettleAreTakenAtTheLimit) {
  make_asleep();
  const uint64_t g = state_.generation;
  feed(input::VramReading{g, 5000 * kMiB});
  feed(input::VramReading{g, 3000 * kMiB}, seconds(11));
  EXPECT_EQ(3000 * kMiB, state_.residual_bytes);
}

TEST_F(SleepTest, AFailedSleepHookStopsItInstead) {
  make_ready();
  feed(input::Sleep{"img"});
  feed(input::HookDone{state_.generation, Hook::kSleep, "POST /sleep: HTTP 500"});
  EXPECT_EQ(ServiceState::kStopping, state_.state);
  EXPECT_EQ(1u, all<effect::StopInstance>().size());
  feed(input::StopDone{state_.generation, false, ""});
  EXPECT_EQ(ServiceState::kStopped, state_.state);
  EXPECT_EQ("evicted to make room for img", state_.reason);
}

TEST_F(SleepTest, WithoutASleepHookOrWhileStartingItIsStopped) {
  spec_.sleep = {};
  make_ready();
  feed(input::Sleep{"img"});
  EXPECT_TRUE(all<effect::RunHook>().empty());
  EXPECT_EQ(1u, all<effect::StopInstance>().size());
}

TEST_F(SleepTest, AnEnsureWakesItThroughThePlacementThenTheHookThenTheHealthCheck) {
  make_asleep();
  feed(input::Ensure{5});
  EXPECT_EQ(1u, all<effect::Start>().size());  // placed first: it may need memory made
  EXPECT_EQ(ServiceState::kSleeping, state_.state);
  feed(input::Queued{"ensure requested"});
  EXPECT_EQ(ServiceState::kSleeping, state_.state);  // asleep until woken

  feed(input::Wake{"start llm on GPU 0"});
  EXPECT_EQ(ServiceState::kStarting, state_.state);
  EXPECT_EQ(Hook::kWake, one<effect::RunHook>().hook);
  EXPECT_TRUE(all<effect::Probe>().empty());  // not before the hook is done
  feed(input::HookDone{state_.generation, Hook::kWake, ""}, Millis(300));
  EXPECT_FALSE(one<effect::Probe>().liveness);
  feed(input::ProbeDone{state_.generation, false, true, "HTTP 200", false}, Millis(100));
  EXPECT_EQ(ServiceState::kReady, state_.state);
  EXPECT_EQ(std::vector<WaiterId>{5}, one<effect::Resolve>().waiters);
  EXPECT_DOUBLE_EQ(0.4, state_.wake_seconds);
  EXPECT_DOUBLE_EQ(0.0, state_.reload_seconds);  // a wake is not a cold start
}

TEST_F(SleepTest, WithoutAWakeHookTheHealthCheckAloneWakesIt) {
  spec_.wake = {};
  make_asleep();
  feed(input::Ensure{5});
  feed(input::Wake{"placed"});
  EXPECT_TRUE(all<effect::RunHook>().empty());
  EXPECT_EQ(1u, all<effect::Probe>().size());
}

TEST_F(SleepTest, AFailedWakeIsAFailureOfTheService) {
  make_asleep();
  feed(input::Ensure{5});
  feed(input::Wake{"placed"});
  feed(input::HookDone{state_.generation, Hook::kWake, "POST /wake_up: HTTP 500"});
  EXPECT_EQ(ServiceState::kError, state_.state);
  EXPECT_EQ(1u, one<effect::Fail>().waiters.size());
  EXPECT_TRUE(one<effect::StopInstance>().cleanup);
}

TEST_F(SleepTest, AnExitWhileAsleepIsHandledLikeAnyExit) {
  make_asleep();
  feed(input::Exited{state_.instance_generation, "exited with status 1", false, false});
  EXPECT_EQ(ServiceState::kError, state_.state);
  EXPECT_EQ("exited with status 1 while asleep", state_.reason);
  EXPECT_TRUE(one<effect::StopInstance>().cleanup);
}

TEST_F(SleepTest, StopOfASleepingServiceStopsIt) {
  make_asleep();
  feed(input::Stop{9, false});
  EXPECT_EQ(ServiceState::kStopping, state_.state);
  feed(input::StopDone{state_.generation, false, ""});
  EXPECT_EQ(ServiceState::kStopped, state_.state);
  EXPECT_FALSE(state_.has_instance);
}

TEST_F(SleepTest, AStaleProbeFromBeforeTheSleepChangesNothing) {
  make_ready();
  const uint64_t before = state_.generation;
  feed(input::Sleep{"img"});
  feed(input::HookDone{state_.generation, Hook::kSleep, ""});
  feed(input::ProbeDone{before, true, false, "connection refused", false});
  EXPECT_TRUE(last_.effects.empty());
  EXPECT_EQ(ServiceState::kSleeping, state_.state);
}

TEST_F(SleepTest, AnEnsureWhileGoingToSleepWakesItOnceAsleep) {
  make_ready();
  feed(input::Sleep{"img"});
  feed(input::Ensure{3});
  EXPECT_TRUE(all<effect::Start>().empty());
  feed(input::HookDone{state_.generation, Hook::kSleep, ""});
  EXPECT_EQ(ServiceState::kSleeping, state_.state);
  EXPECT_EQ(1u, all<effect::Start>().size());
}

TEST_F(SleepTest, APlacementThatCannotWakeItLeavesItAsleep) {
  make_asleep();
  feed(input::Ensure{4});
  feed(input::PlacementFailed{make_error(ErrorCode::kConflict, "cannot place llm")});
  EXPECT_EQ(ServiceState::kSleeping, state_.state);
  EXPECT_EQ("asleep; cannot wake it: cannot place llm", state_.reason);
  EXPECT_EQ(1u, one<effect::Fail>().waiters.size());
}

TEST_F(SleepTest, AnInstanceAdoptedAsleepIsNotProbedAsReady) {
  feed(input::NewInstance{});
  feed(input::Adopted{"adopted pid 7 asleep after daemon restart", std::nullopt, true});
  EXPECT_EQ(ServiceState::kSleeping, state_.state);
  EXPECT_TRUE(all<effect::Probe>().empty());
}

}  // namespace
}  // namespace gpuvisor::lifecycle
