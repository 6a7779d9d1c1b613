#include "resources/gpu_status.h"

#include <fstream>
#include <sstream>

namespace gpuvisor {

nlohmann::json to_json(const HeldMemory& held, unsigned gpu) {
  nlohmann::json j{{"gpu", gpu},
                   {"pid", held.pid},
                   {"name", held.name},
                   {"used_bytes", nullptr},
                   {"kind", to_string(held.kind)},
                   {"owner", nullptr},
                   {"external", held.owner.empty()}};
  if (held.used_bytes) j["used_bytes"] = *held.used_bytes;
  if (!held.owner.empty()) j["owner"] = held.owner;
  return j;
}

const char* to_string(GpuState state) {
  switch (state) {
    case GpuState::kAvailable:
      return "available";
    case GpuState::kAppBusy:
      return "app_busy";
    case GpuState::kExternalBusy:
      return "external_busy";
  }
  return "available";
}

std::vector<GpuStatus> classify_gpus(const GpuSnapshot& snapshot, const Ownership& owners,
                                     unsigned external_busy_percent,
                                     const std::function<std::string(pid_t)>& name_of) {
  std::vector<GpuStatus> out;
  std::map<unsigned, size_t> slot;
  for (const auto& d : snapshot.devices) {
    slot[d.index] = out.size();
    out.push_back(GpuStatus{d, GpuState::kAvailable, 0, 0, {}, {}});
  }
  for (const auto& p : snapshot.processes) {
    const auto at = slot.find(p.gpu);
    if (at == slot.end()) continue;  // a process on a device the snapshot does not list
    GpuStatus& gpu = out[at->second];
    const Holder* owner = owners.find(p.pid);
    HeldMemory held{p.pid, name_of(p.pid), p.used_bytes, owner == nullptr ? "" : owner->owner(),
                    p.kind};
    if (owner != nullptr) {
      gpu.app_bytes += p.used_bytes.value_or(0);
      gpu.app.push_back(std::move(held));
    } else {
      gpu.external_bytes += p.used_bytes.value_or(0);
      gpu.external.push_back(std::move(held));
    }
  }
  for (auto& gpu : out) {
    const uint64_t total = gpu.device.total_bytes;
    // Integer arithmetic: external * 100 >= total * percent, no rounding at the boundary.
    if (total > 0 && gpu.external_bytes * 100 >= total * external_busy_percent) {
      gpu.state = GpuState::kExternalBusy;
    } else if (!gpu.app.empty()) {
      gpu.state = GpuState::kAppBusy;
    }
  }
  return out;
}

std::optional<SystemMemory> read_system_memory(const std::string& path) {
  std::ifstream in(path);
  std::string line;
  SystemMemory m;
  bool total = false, available = false;
  while (std::getline(in, line)) {
    std::istringstream fields(line);
    std::string key;
    uint64_t kib = 0;
    fields >> key >> kib;
    if (key == "MemTotal:") {
      m.total_bytes = kib * 1024;
      total = true;
    } else if (key == "MemAvailable:") {
      m.available_bytes = kib * 1024;
      available = true;
    }
  }
  if (!total || !available) return std::nullopt;
  return m;
}

std::string process_name(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/comm");
  std::string name;
  std::getline(in, name);
  return name;
}

}  // namespace gpuvisor
