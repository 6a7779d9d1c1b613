#include "supervisor/readiness.h"

#include <algorithm>

namespace gpuvisor {

Millis readiness_poll_delay(Millis elapsed, Millis cap, bool refused) {
  const Millis upper = std::max(Millis(1), refused ? std::min(cap, kRefusedPollCap) : cap);
  return std::clamp(elapsed / 10, Millis(1), upper);
}

}  // namespace gpuvisor
