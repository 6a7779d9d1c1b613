// Looks at the GPUs every interval, whether or not anyone asks: keeps each service's measured
// VRAM current and publishes GPU conflicts as they appear and clear (gpu.conflict,
// gpu.conflict_cleared), so a dashboard or a script hears of them without polling.
#pragma once

#include <map>
#include <memory>

#include "core/clock.h"
#include "core/duration.h"
#include "core/ownership.h"
#include "events/event_bus.h"
#include "gpu/inventory.h"
#include "resources/conflicts.h"
#include "supervisor/supervisor.h"

namespace gpuvisor {

class GpuWatch {
 public:
  GpuWatch(Clock& clock, GpuInventory& gpus, Supervisor& supervisor, OwnershipSource& owners,
           EventBus& events, unsigned external_busy_percent, Millis interval);
  // Nothing to do without NVML or with an interval of 0.
  void start();
  // One look now (the timer's, and the tests').
  void look();

 private:
  void arm();

  std::unique_ptr<Timer> timer_;
  GpuInventory& gpus_;
  Supervisor& supervisor_;
  OwnershipSource& owners_;
  EventBus& events_;
  unsigned external_busy_percent_;
  Millis interval_;
  std::map<unsigned, GpuConflict> conflicts_;
  bool failing_ = false;  // the last snapshot failed: said once, not every interval
};

}  // namespace gpuvisor
