// FakeClock: the time the lifecycle tests step through.
#include "core/clock.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace gpuvisor {
namespace {

TEST(FakeClock, TimersFireInDeadlineOrderEachAtItsOwnInstant) {
  FakeClock clock;
  const SteadyTime start = clock.now();
  std::vector<std::pair<std::string, Millis>> fired;
  auto a = clock.make_timer();
  auto b = clock.make_timer();
  auto c = clock.make_timer();
  auto at = [&](const std::string& name) {
    return [&, name] {
      fired.emplace_back(name, std::chrono::duration_cast<Millis>(clock.now() - start));
    };
  };
  a->arm_after(Millis(300), at("a"));
  b->arm_after(Millis(100), at("b"));
  c->arm_after(Millis(100), at("c"));  // same deadline: arming order
  clock.advance(Millis(99));
  EXPECT_TRUE(fired.empty());
  clock.advance(Millis(1'000));
  EXPECT_EQ((std::vector<std::pair<std::string, Millis>>{
                {"b", Millis(100)}, {"c", Millis(100)}, {"a", Millis(300)}}),
            fired);
  EXPECT_EQ(Millis(1'099), std::chrono::duration_cast<Millis>(clock.now() - start));
  EXPECT_EQ(0u, clock.armed_count());
}

TEST(FakeClock, CancelRearmAndDestroyMeanTheOldCallbackNeverRuns) {
  FakeClock clock;
  int runs = 0;
  auto cancelled = clock.make_timer();
  cancelled->arm_after(Millis(10), [&] { runs += 100; });
  cancelled->cancel();
  EXPECT_FALSE(cancelled->armed());
  auto rearmed = clock.make_timer();
  rearmed->arm_after(Millis(10), [&] { runs += 1000; });
  rearmed->arm_after(Millis(20), [&] { runs += 1; });
  {
    auto destroyed = clock.make_timer();
    destroyed->arm_after(Millis(5), [&] { runs += 10'000; });
  }
  clock.advance(Millis(15));
  EXPECT_EQ(0, runs);
  clock.advance(Millis(5));
  EXPECT_EQ(1, runs);
}

TEST(FakeClock, ATimerArmedByACallbackFiresInTheSameAdvanceWhenDue) {
  FakeClock clock;
  auto timer = clock.make_timer();
  int ticks = 0;
  std::function<void()> tick = [&] {
    if (++ticks < 5) timer->arm_after(Millis(10), tick);
  };
  timer->arm_after(Millis(10), tick);
  clock.advance(Millis(35));
  EXPECT_EQ(3, ticks);
  clock.advance(Millis(100));
  EXPECT_EQ(5, ticks);
}

TEST(FakeClock, ADueCallbackMayCancelAnotherDueTimer) {
  FakeClock clock;
  auto first = clock.make_timer();
  auto second = clock.make_timer();
  bool second_ran = false;
  first->arm_after(Millis(1), [&] { second->cancel(); });
  second->arm_after(Millis(2), [&] { second_ran = true; });
  clock.advance(Millis(10));
  EXPECT_FALSE(second_ran);
}

TEST(FakeClock, WallTimeMovesWithIt) {
  FakeClock clock;
  const int64_t before = clock.unix_ms();
  clock.advance(Millis(1'500));
  EXPECT_EQ(before + 1'500, clock.unix_ms());
}

}  // namespace
}  // namespace gpuvisor
