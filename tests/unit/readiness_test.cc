#include "supervisor/readiness.h"

#include <gtest/gtest.h>

namespace gpuvisor {
namespace {

TEST(ReadinessPollDelay, ATenthOfTheStartUpSoFarAtLeastOneMillisecond) {
  EXPECT_EQ(Millis(1), readiness_poll_delay(Millis(0), Millis(100), false));
  EXPECT_EQ(Millis(1), readiness_poll_delay(Millis(9), Millis(100), false));
  EXPECT_EQ(Millis(30), readiness_poll_delay(Millis(300), Millis(100), false));
}

TEST(ReadinessPollDelay, AnsweringButUnhealthyWaitsUpToTheCap) {
  EXPECT_EQ(Millis(100), readiness_poll_delay(Millis(60'000), Millis(100), false));
  EXPECT_EQ(Millis(2'000), readiness_poll_delay(Millis(60'000), Millis(2'000), false));
}

TEST(ReadinessPollDelay, NothingListeningIsRetriedEveryFewMilliseconds) {
  EXPECT_EQ(Millis(1), readiness_poll_delay(Millis(15), Millis(100), true));
  EXPECT_EQ(kRefusedPollCap, readiness_poll_delay(Millis(60'000), Millis(100), true));
  EXPECT_EQ(Millis(1), readiness_poll_delay(Millis(60'000), Millis(1), true));  // a lower cap wins
}

}  // namespace
}  // namespace gpuvisor
