#include "resources/conflicts.h"

namespace gpuvisor {

using nlohmann::json;

json GpuConflict::to_json() const {
  json ext = json::array();
  json ours = json::array();
  for (const auto& h : external) ext.push_back(gpuvisor::to_json(h, gpu));
  for (const auto& h : app) ours.push_back(gpuvisor::to_json(h, gpu));
  return {{"gpu", gpu},
          {"uuid", uuid},
          {"total_bytes", total_bytes},
          {"external_bytes", external_bytes},
          {"external", ext},
          {"app", ours}};
}

std::map<unsigned, GpuConflict> find_conflicts(const std::vector<GpuStatus>& gpus) {
  std::map<unsigned, GpuConflict> out;
  for (const auto& g : gpus) {
    if (g.state != GpuState::kExternalBusy) continue;
    out[g.device.index] = {g.device.index,   g.device.uuid, g.device.total_bytes,
                           g.external_bytes, g.external,    g.app};
  }
  return out;
}

ConflictChanges diff_conflicts(const std::map<unsigned, GpuConflict>& before,
                               const std::map<unsigned, GpuConflict>& now) {
  ConflictChanges changes;
  for (const auto& [gpu, c] : now) {
    if (before.count(gpu) == 0) changes.appeared.push_back(c);
  }
  for (const auto& [gpu, c] : before) {
    if (now.count(gpu) == 0) changes.cleared.push_back(c);
  }
  return changes;
}

}  // namespace gpuvisor
