// How long to wait before the next readiness check of a starting service. Pure, so the policy
// is tested on its own.
#pragma once

#include "core/duration.h"

namespace gpuvisor {

// Refused connections are cheap to repeat, so they are retried at least every 2 ms.
inline constexpr Millis kRefusedPollCap{2};

// A tenth of the time spent starting so far, at least 1 ms: the delay between becoming healthy
// and being seen stays within ~10% of the service's own start-up time. At most `cap` (the
// service's startup_poll_cap) while the service answers but is not healthy yet, and at most
// kRefusedPollCap while nothing listens.
Millis readiness_poll_delay(Millis elapsed, Millis cap, bool refused);

}  // namespace gpuvisor
