// GPU conflicts: a GPU on which processes gpuvisor did not start hold a large share of the
// memory (external_busy), so what the planner believes free may not be. Pure: statuses in,
// what appeared and what cleared since the last look out.
#pragma once

#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "resources/gpu_status.h"

namespace gpuvisor {

struct GpuConflict {
  unsigned gpu = 0;
  std::string uuid;
  uint64_t total_bytes = 0;
  uint64_t external_bytes = 0;
  std::vector<HeldMemory> external;
  std::vector<HeldMemory> app;  // ours on the same GPU, the ones it squeezes

  nlohmann::json to_json() const;
};

// The GPUs in conflict now, by index.
std::map<unsigned, GpuConflict> find_conflicts(const std::vector<GpuStatus>& gpus);

struct ConflictChanges {
  std::vector<GpuConflict> appeared;
  std::vector<GpuConflict> cleared;  // as they were last seen
};

// What changed from before to now. A conflict whose external processes changed is neither new
// nor cleared: it is the same GPU, still squeezed.
ConflictChanges diff_conflicts(const std::map<unsigned, GpuConflict>& before,
                               const std::map<unsigned, GpuConflict>& now);

}  // namespace gpuvisor
