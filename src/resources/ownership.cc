#include "resources/ownership.h"

#include <map>
#include <vector>

namespace gpuvisor {

Ownership OwnershipTracker::snapshot() {
  Ownership out;
  std::map<std::string, std::vector<pid_t>> services;
  for (const auto& [pid, name] : supervisor_.service_pids()) services[name].push_back(pid);
  for (auto& [name, pids] : services) out.add(Holder{HolderKind::kService, name}, pids);
  for (const WorkerInfo* w : workers_.all()) {
    Holder holder{w->outside ? HolderKind::kOutsideWorker : HolderKind::kWorker, w->id, w->plugin,
                  w->type};
    if (!w->service.empty()) {
      if (const auto view = supervisor_.get(w->service); view)
        holder.priority = view->spec->priority;
    }
    holder.busy = w->status != "idle";
    out.add(std::move(holder), workers_.related_pids(w->id));
  }
  leases_.add_to(out);
  return out;
}

std::optional<Millis> OwnershipTracker::evict(const Holder& holder, const std::string& why) {
  if (holder.kind != HolderKind::kWorker || !evict_worker_) return std::nullopt;
  return evict_worker_(holder.name, why);
}

}  // namespace gpuvisor
