// The daemon's one answer to "which GPU processes are ours, and whose": every live PID of every
// running service (from the supervisor) and of every worker (from the registry), taken fresh on
// each snapshot. The planner reads it through OwnershipSource, as do /gpus, /processes,
// /metrics and the GPU watch's conflict events, so they never disagree about a PID.
#pragma once

#include <functional>
#include <optional>
#include <string>

#include "core/duration.h"
#include "core/ownership.h"
#include "resources/leases.h"
#include "resources/worker_registry.h"
#include "supervisor/supervisor.h"

namespace gpuvisor {

class OwnershipTracker final : public OwnershipSource {
 public:
  // Stops an idle worker so a placement gets its memory; its stop grace, or nullopt when it is
  // gone or busy. The jobs layer, which owns the workers, supplies it.
  using EvictWorker =
      std::function<std::optional<Millis>(const std::string& id, const std::string& why)>;

  OwnershipTracker(Supervisor& supervisor, const WorkerRegistry& workers, const Leases& leases)
      : supervisor_(supervisor), workers_(workers), leases_(leases) {}
  void set_evict_worker(EvictWorker evict) { evict_worker_ = std::move(evict); }

  // Services first, then workers, then leases. A worker's priority is its plugin's service's (0
  // without one); it is busy unless idle (starting, running and stopping workers are not
  // evictable).
  Ownership snapshot() override;
  std::optional<Millis> evict(const Holder& holder, const std::string& why) override;

 private:
  Supervisor& supervisor_;
  const WorkerRegistry& workers_;
  const Leases& leases_;
  EvictWorker evict_worker_;
};

}  // namespace gpuvisor
