// Who holds each GPU: gpuvisor's own services, or processes it did not start (external). Pure:
// a snapshot and the owner of each of our PIDs in, a status per GPU out.
#pragma once

#include <sys/types.h>

#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "core/gpu.h"
#include "core/ownership.h"

namespace gpuvisor {

enum class GpuState { kAvailable, kAppBusy, kExternalBusy };
const char* to_string(GpuState state);

struct HeldMemory {
  pid_t pid = 0;
  std::string name;                    // /proc/PID/comm, for people; never used to match
  std::optional<uint64_t> used_bytes;  // as NVML reports it
  std::string owner;                   // Holder::owner(): "llm", "worker:w-1"; empty: external
  GpuProcessKind kind = GpuProcessKind::kCompute;
};

// One process's memory on one GPU as the API and the events show it: gpu, pid, name,
// used_bytes (null when unknown), kind, owner (null when external), external.
nlohmann::json to_json(const HeldMemory& held, unsigned gpu);

struct GpuStatus {
  GpuDevice device;
  GpuState state = GpuState::kAvailable;
  uint64_t app_bytes = 0;
  uint64_t external_bytes = 0;
  std::vector<HeldMemory> app;
  std::vector<HeldMemory> external;
};

struct SystemMemory {
  uint64_t total_bytes = 0;
  uint64_t available_bytes = 0;
};

// A GPU is external_busy when external processes hold at least external_busy_percent of its
// own memory (each GPU against itself), app_busy when one of ours is on it, else available.
std::vector<GpuStatus> classify_gpus(const GpuSnapshot& snapshot, const Ownership& owners,
                                     unsigned external_busy_percent,
                                     const std::function<std::string(pid_t)>& name_of);

// MemTotal and MemAvailable from /proc/meminfo; nullopt when it cannot be read.
std::optional<SystemMemory> read_system_memory(const std::string& path = "/proc/meminfo");

// /proc/PID/comm without its newline, or "" when the process is gone.
std::string process_name(pid_t pid);

}  // namespace gpuvisor
