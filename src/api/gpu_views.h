// JSON for /api/v1/gpus, /api/v1/processes and /api/v1/resources (docs/api.md).
#pragma once

#include <nlohmann/json.hpp>
#include <optional>
#include <vector>

#include "core/gpu.h"
#include "planner/planner.h"
#include "resources/gpu_status.h"

namespace gpuvisor {

nlohmann::json gpus_json(const GpuSnapshot& snapshot);
nlohmann::json plan_json(const Plan& plan);
nlohmann::json processes_json(const std::vector<GpuStatus>& gpus);
nlohmann::json resources_json(const std::vector<GpuStatus>& gpus,
                              const std::optional<SystemMemory>& memory,
                              unsigned external_busy_percent);

}  // namespace gpuvisor
