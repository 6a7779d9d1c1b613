// JSON for /api/v1/gpus, /processes, /resources and /workers (docs/api.md).
#pragma once

#include <nlohmann/json.hpp>
#include <optional>
#include <vector>

#include "core/gpu.h"
#include "planner/planner.h"
#include "resources/gpu_status.h"
#include "resources/worker_registry.h"

namespace gpuvisor {

nlohmann::json gpus_json(const GpuSnapshot& snapshot);
nlohmann::json plan_json(const Plan& plan);
nlohmann::json processes_json(const std::vector<GpuStatus>& gpus);
nlohmann::json resources_json(const std::vector<GpuStatus>& gpus,
                              const std::optional<SystemMemory>& memory,
                              unsigned external_busy_percent);
// /api/v1/workers: each registered worker with the PIDs that are its own now.
nlohmann::json workers_json(const WorkerRegistry& workers);
nlohmann::json worker_json(const WorkerInfo& worker, const std::vector<pid_t>& pids);

}  // namespace gpuvisor
