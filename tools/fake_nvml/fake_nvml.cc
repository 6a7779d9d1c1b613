// A stand-in for libnvidia-ml.so.1 with the same C entry points, so tests and the demo drive
// gpuvisor's real NVML code path (dlopen and all) on machines without a GPU.
//
// State lives in the directory named by FAKE_NVML_DIR:
//   devices.json  {"devices": [{"name", "uuid", "total_mb", "base_used_mb", "util_gpu",
//                               "memory": {"total", "used", "free"}  (raw bytes, to feed
//                                                                     nonsense on purpose)}],
//                  "fail": {"nvmlDeviceGetMemoryInfo": 999, ...}}   (calls that return errors)
//   holds/*.json  {"pid", "gpu", "mb", "kind": "compute"|"graphics"}: VRAM a process holds
//                 ("gpus": [0, 1] instead of "gpu": mb on each, as a tensor-parallel server)
//                 for as long as it lives (gpuvisor-testsvc --vram-mb writes one).
// Without devices.json there is one simulated 24 GiB GPU. The state is read again at
// nvmlDeviceGetCount_v2, the first call of every snapshot.
#include <dirent.h>
#include <signal.h>

#include <cstring>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "gpu/nvml_abi.h"

namespace {

using nlohmann::json;

struct Device {
  std::string name = "Simulated GPU 24GB";
  std::string uuid;
  unsigned long long total = 24ULL << 30;
  unsigned long long base_used = 0;
  unsigned util_gpu = 0;
  json raw_memory;  // when set, returned as is
};

struct Hold {
  unsigned pid = 0;
  unsigned gpu = 0;
  unsigned long long bytes = 0;
  bool graphics = false;
};

struct State {
  std::vector<Device> devices;
  std::vector<Hold> holds;
  std::map<std::string, int> fail;
};

State g_state;
bool g_initialised = false;
nvmlDevice_st* g_handles[64];

std::string dir() {
  const char* d = std::getenv("FAKE_NVML_DIR");
  return d != nullptr ? d : "";
}

json read_json(const std::string& path) {
  std::ifstream in(path);
  if (!in) return json();
  return json::parse(in, nullptr, false);
}

bool alive(unsigned pid) {
  std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
  std::string line;
  if (!std::getline(stat, line)) return false;
  const auto close = line.rfind(')');
  return close != std::string::npos && close + 2 < line.size() && line[close + 2] != 'Z';
}

// Never throws into the caller: a state file the fake cannot use reads as no state.
void load() noexcept try {
  State s;
  const json devices = dir().empty() ? json() : read_json(dir() + "/devices.json");
  if (devices.is_object()) {
    for (const auto& d : devices.value("devices", json::array())) {
      Device dev;
      dev.name = d.value("name", dev.name);
      dev.total = d.value("total_mb", 24576ULL) << 20;
      dev.base_used = d.value("base_used_mb", 0ULL) << 20;
      dev.util_gpu = d.value("util_gpu", 0U);
      dev.raw_memory = d.value("memory", json());
      dev.uuid = d.value("uuid", "");
      s.devices.push_back(dev);
    }
    const json fail = devices.value("fail", json::object());
    for (const auto& [call, rc] : fail.items()) {
      if (rc.is_number_integer()) s.fail[call] = rc.get<int>();
    }
  } else {
    s.devices.push_back(Device{});
  }
  for (size_t i = 0; i < s.devices.size(); ++i) {
    if (s.devices[i].uuid.empty()) s.devices[i].uuid = "GPU-fake-" + std::to_string(i);
  }
  if (!dir().empty()) {
    const std::string holds = dir() + "/holds";
    if (DIR* d = opendir(holds.c_str())) {
      while (const dirent* e = readdir(d)) {
        const std::string file = e->d_name;
        if (file.size() < 6 || file.substr(file.size() - 5) != ".json") continue;
        const json h = read_json(holds + "/" + file);
        if (!h.is_object()) continue;
        json gpus = h.value("gpus", json::array());
        if (!gpus.is_array() || gpus.empty()) gpus = json::array({h.value("gpu", 0U)});
        for (const auto& g : gpus) {
          Hold hold{h.value("pid", 0U), g.is_number_unsigned() ? g.get<unsigned>() : ~0U,
                    h.value("mb", 0ULL) << 20, h.value("kind", "compute") == "graphics"};
          if (hold.pid > 0 && hold.gpu < s.devices.size() && alive(hold.pid)) {
            s.holds.push_back(hold);
          }
        }
      }
      closedir(d);
    }
  }
  g_state = std::move(s);
} catch (const std::exception&) {
  g_state = State{};
  g_state.devices.push_back(Device{});
  g_state.devices[0].uuid = "GPU-fake-0";
}

int failure(const char* call) {
  const auto it = g_state.fail.find(call);
  return it == g_state.fail.end() ? NVML_SUCCESS : it->second;
}

unsigned index_of(nvmlDevice_t device) {
  for (unsigned i = 0; i < 64; ++i) {
    if (g_handles[i] == device) return i;
  }
  return 64;
}

unsigned long long used(unsigned gpu) {
  unsigned long long total = g_state.devices[gpu].base_used;
  for (const auto& h : g_state.holds) {
    if (h.gpu == gpu) total += h.bytes;
  }
  return total;
}

nvmlReturn_t processes(nvmlDevice_t device, unsigned* count, nvmlProcessInfo_t* infos,
                       bool graphics, const char* call) {
  if (const int rc = failure(call)) return rc;
  const unsigned gpu = index_of(device);
  if (gpu >= g_state.devices.size()) return 2;  // NVML_ERROR_INVALID_ARGUMENT
  std::vector<nvmlProcessInfo_t> found;
  for (const auto& h : g_state.holds) {
    if (h.gpu == gpu && h.graphics == graphics) found.push_back({h.pid, h.bytes, 0, 0});
  }
  const unsigned capacity = *count;
  *count = static_cast<unsigned>(found.size());
  if (found.size() > capacity) return NVML_ERROR_INSUFFICIENT_SIZE;
  std::copy(found.begin(), found.end(), infos);
  return NVML_SUCCESS;
}

}  // namespace

extern "C" {

__attribute__((visibility("default"))) nvmlReturn_t nvmlInit_v2() {
  for (unsigned i = 0; i < 64; ++i) g_handles[i] = reinterpret_cast<nvmlDevice_st*>(&g_handles[i]);
  load();
  if (const int rc = failure("nvmlInit_v2")) return rc;
  g_initialised = true;
  return NVML_SUCCESS;
}

__attribute__((visibility("default"))) nvmlReturn_t nvmlShutdown() {
  g_initialised = false;
  return NVML_SUCCESS;
}

__attribute__((visibility("default"))) const char* nvmlErrorString(nvmlReturn_t rc) {
  switch (rc) {
    case 0:
      return "Success";
    case 1:
      return "Uninitialized";
    case 2:
      return "Invalid Argument";
    case 3:
      return "Not Supported";
    case 4:
      return "Insufficient Permissions";
    case 7:
      return "Insufficient Size";
    case 9:
      return "Driver Not Loaded";
    case 15:
      return "GPU is lost";
    default:
      return "Unknown Error";
  }
}

__attribute__((visibility("default"))) nvmlReturn_t nvmlDeviceGetCount_v2(unsigned* count) {
  if (!g_initialised) return 1;
  load();
  if (const int rc = failure("nvmlDeviceGetCount_v2")) return rc;
  *count = g_state.devices.size() > 64 ? 999 : static_cast<unsigned>(g_state.devices.size());
  return NVML_SUCCESS;
}

__attribute__((visibility("default"))) nvmlReturn_t nvmlDeviceGetHandleByIndex_v2(
    unsigned index, nvmlDevice_t* device) {
  if (const int rc = failure("nvmlDeviceGetHandleByIndex_v2")) return rc;
  if (index >= g_state.devices.size()) return 2;
  *device = g_handles[index];
  return NVML_SUCCESS;
}

__attribute__((visibility("default"))) nvmlReturn_t nvmlDeviceGetUUID(nvmlDevice_t device,
                                                                      char* uuid, unsigned len) {
  const unsigned gpu = index_of(device);
  if (gpu >= g_state.devices.size()) return 2;
  std::strncpy(uuid, g_state.devices[gpu].uuid.c_str(), len);
  return NVML_SUCCESS;
}

__attribute__((visibility("default"))) nvmlReturn_t nvmlDeviceGetName(nvmlDevice_t device,
                                                                      char* name, unsigned len) {
  const unsigned gpu = index_of(device);
  if (gpu >= g_state.devices.size()) return 2;
  std::strncpy(name, g_state.devices[gpu].name.c_str(), len);
  return NVML_SUCCESS;
}

__attribute__((visibility("default"))) nvmlReturn_t nvmlDeviceGetMemoryInfo(nvmlDevice_t device,
                                                                            nvmlMemory_t* memory) {
  if (const int rc = failure("nvmlDeviceGetMemoryInfo")) return rc;
  const unsigned gpu = index_of(device);
  if (gpu >= g_state.devices.size()) return 2;
  const Device& d = g_state.devices[gpu];
  if (d.raw_memory.is_object()) {
    memory->total = d.raw_memory.value("total", 0ULL);
    memory->used = d.raw_memory.value("used", 0ULL);
    memory->free = d.raw_memory.value("free", 0ULL);
    return NVML_SUCCESS;
  }
  memory->total = d.total;
  memory->used = std::min(d.total, used(gpu));
  memory->free = d.total - memory->used;
  return NVML_SUCCESS;
}

__attribute__((visibility("default"))) nvmlReturn_t nvmlDeviceGetUtilizationRates(
    nvmlDevice_t device, nvmlUtilization_t* util) {
  const unsigned gpu = index_of(device);
  if (gpu >= g_state.devices.size()) return 2;
  util->gpu = g_state.devices[gpu].util_gpu;
  util->memory = 0;
  return NVML_SUCCESS;
}

__attribute__((visibility("default"))) nvmlReturn_t nvmlDeviceGetComputeRunningProcesses_v3(
    nvmlDevice_t device, unsigned* count, nvmlProcessInfo_t* infos) {
  return processes(device, count, infos, false, "nvmlDeviceGetComputeRunningProcesses_v3");
}

__attribute__((visibility("default"))) nvmlReturn_t nvmlDeviceGetGraphicsRunningProcesses_v3(
    nvmlDevice_t device, unsigned* count, nvmlProcessInfo_t* infos) {
  return processes(device, count, infos, true, "nvmlDeviceGetGraphicsRunningProcesses_v3");
}

}  // extern "C"
