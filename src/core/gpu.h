// What the GPUs hold at one moment: the planner's input, the API's /gpus and /processes.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace gpuvisor {

struct GpuDevice {
  unsigned index = 0;
  std::string uuid;
  std::string name;
  uint64_t total_bytes = 0;
  uint64_t used_bytes = 0;
  uint64_t free_bytes = 0;
  std::optional<unsigned> util_gpu_percent;     // absent where the device does not report it
  std::optional<unsigned> util_memory_percent;  // memory controller busy time, not capacity
};

enum class GpuProcessKind { kCompute, kGraphics };

struct GpuProcess {
  unsigned gpu = 0;  // GpuDevice::index
  pid_t pid = 0;
  std::optional<uint64_t> used_bytes;  // absent where NVML cannot tell (no permission, WDDM)
  GpuProcessKind kind = GpuProcessKind::kCompute;
};

struct GpuSnapshot {
  std::vector<GpuDevice> devices;
  std::vector<GpuProcess> processes;  // every GPU; a process on two GPUs appears twice
  int64_t taken_unix_ms = 0;
};

const char* to_string(GpuProcessKind kind);

}  // namespace gpuvisor
