#include <dlfcn.h>

#include <chrono>
#include <string>
#include <vector>

#include "gpu/inventory.h"
#include "gpu/nvml_abi.h"

namespace gpuvisor {

namespace {

// More would mean a corrupt reply, not a bigger machine.
constexpr unsigned kMaxDevices = 64;
constexpr unsigned kMaxProcessesPerDevice = 4096;

class UnavailableInventory : public GpuInventory {
 public:
  explicit UnavailableInventory(std::string why) : why_(std::move(why)) {}
  Result<GpuSnapshot> snapshot() override {
    return make_error(ErrorCode::kUnavailable, "no GPU inventory: " + why_);
  }
  std::string describe() const override { return "unavailable: " + why_; }
  bool available() const override { return false; }

 private:
  std::string why_;
};

class NvmlInventory : public GpuInventory {
 public:
  ~NvmlInventory() override {
    if (shutdown_ != nullptr) shutdown_();
    if (handle_ != nullptr) dlclose(handle_);
  }

  static Result<std::unique_ptr<GpuInventory>> open(const std::string& path);
  Result<GpuSnapshot> snapshot() override;
  std::string describe() const override { return "NVML from " + path_; }
  bool available() const override { return true; }

 private:
  // The first of names the library exports (newer versions first).
  template <typename F>
  bool resolve_any(F& fn, std::initializer_list<const char*> names) {
    for (const char* name : names) {
      fn = reinterpret_cast<F>(dlsym(handle_, name));
      if (fn != nullptr) return true;
    }
    return false;
  }
  Error nvml_error(const std::string& what, nvmlReturn_t rc) const {
    const char* text = error_string_ != nullptr ? error_string_(rc) : nullptr;
    return Error{
        ErrorCode::kUnavailable,
        what + ": " + (text != nullptr ? text : "NVML error") + " (" + std::to_string(rc) + ")",
        {}};
  }
  Status read_device(unsigned index, GpuSnapshot& out) const;
  Status read_processes(unsigned index, nvmlDevice_t device, nvmlDeviceGetRunningProcesses_fn query,
                        GpuProcessKind kind, GpuSnapshot& out) const;

  std::string path_;
  void* handle_ = nullptr;
  nvmlShutdown_fn shutdown_ = nullptr;
  nvmlErrorString_fn error_string_ = nullptr;
  nvmlDeviceGetCount_v2_fn get_count_ = nullptr;
  nvmlDeviceGetHandleByIndex_v2_fn get_handle_ = nullptr;
  nvmlDeviceGetUUID_fn get_uuid_ = nullptr;
  nvmlDeviceGetName_fn get_name_ = nullptr;
  nvmlDeviceGetMemoryInfo_fn get_memory_ = nullptr;
  nvmlDeviceGetUtilizationRates_fn get_utilization_ = nullptr;
  nvmlDeviceGetRunningProcesses_fn get_compute_ = nullptr;
  nvmlDeviceGetRunningProcesses_fn get_graphics_ = nullptr;
};

Result<std::unique_ptr<GpuInventory>> NvmlInventory::open(const std::string& path) {
  auto inv = std::make_unique<NvmlInventory>();
  inv->path_ = path;
  inv->handle_ = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (inv->handle_ == nullptr) {
    const char* why = dlerror();
    return make_error(ErrorCode::kUnavailable,
                      "cannot load " + path + ": " + (why != nullptr ? why : "dlopen failed"));
  }
  nvmlInit_v2_fn init = nullptr;
  const char* missing = nullptr;
  const auto need = [&](auto& fn, std::initializer_list<const char*> names) {
    if (missing == nullptr && !inv->resolve_any(fn, names)) missing = *names.begin();
  };
  need(init, {"nvmlInit_v2"});
  need(inv->shutdown_, {"nvmlShutdown"});
  need(inv->error_string_, {"nvmlErrorString"});
  need(inv->get_count_, {"nvmlDeviceGetCount_v2"});
  need(inv->get_handle_, {"nvmlDeviceGetHandleByIndex_v2"});
  need(inv->get_uuid_, {"nvmlDeviceGetUUID"});
  need(inv->get_name_, {"nvmlDeviceGetName"});
  need(inv->get_memory_, {"nvmlDeviceGetMemoryInfo"});
  need(inv->get_compute_,
       {"nvmlDeviceGetComputeRunningProcesses_v3", "nvmlDeviceGetComputeRunningProcesses_v2"});
  // Optional: older drivers and some devices lack them; the snapshot just has less detail.
  inv->resolve_any(inv->get_utilization_, {"nvmlDeviceGetUtilizationRates"});
  inv->resolve_any(inv->get_graphics_, {"nvmlDeviceGetGraphicsRunningProcesses_v3",
                                        "nvmlDeviceGetGraphicsRunningProcesses_v2"});
  if (missing != nullptr) {
    return make_error(ErrorCode::kUnavailable,
                      path + " lacks " + missing + " (driver too old, or not NVML)");
  }
  if (const nvmlReturn_t rc = init(); rc != NVML_SUCCESS) {
    inv->shutdown_ = nullptr;  // nothing to shut down
    return inv->nvml_error("nvmlInit_v2 from " + path, rc);
  }
  return std::unique_ptr<GpuInventory>(std::move(inv));
}

Result<GpuSnapshot> NvmlInventory::snapshot() {
  GpuSnapshot out;
  out.taken_unix_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                          std::chrono::system_clock::now().time_since_epoch())
                          .count();
  unsigned count = 0;
  if (const nvmlReturn_t rc = get_count_(&count); rc != NVML_SUCCESS) {
    return nvml_error("nvmlDeviceGetCount_v2", rc);
  }
  if (count > kMaxDevices) {
    return make_error(ErrorCode::kUnavailable, "NVML reports " + std::to_string(count) +
                                                   " devices (more than " +
                                                   std::to_string(kMaxDevices) + "): not believed");
  }
  for (unsigned i = 0; i < count; ++i) {
    if (auto done = read_device(i, out); !done) return done.error();
  }
  return out;
}

Status NvmlInventory::read_device(unsigned index, GpuSnapshot& out) const {
  const std::string where = "GPU " + std::to_string(index);
  nvmlDevice_t device = nullptr;
  if (const nvmlReturn_t rc = get_handle_(index, &device); rc != NVML_SUCCESS) {
    return nvml_error(where + ": nvmlDeviceGetHandleByIndex_v2", rc);
  }
  GpuDevice d;
  d.index = index;
  char text[NVML_DEVICE_UUID_BUFFER_SIZE + 1] = {};
  if (const nvmlReturn_t rc = get_uuid_(device, text, NVML_DEVICE_UUID_BUFFER_SIZE);
      rc != NVML_SUCCESS) {
    return nvml_error(where + ": nvmlDeviceGetUUID", rc);
  }
  d.uuid = text;  // text[96] stays 0: a reply without its terminator is cut, not overrun
  char name[NVML_DEVICE_NAME_BUFFER_SIZE + 1] = {};
  if (const nvmlReturn_t rc = get_name_(device, name, NVML_DEVICE_NAME_BUFFER_SIZE);
      rc != NVML_SUCCESS) {
    return nvml_error(where + ": nvmlDeviceGetName", rc);
  }
  d.name = name;
  nvmlMemory_t memory{};
  if (const nvmlReturn_t rc = get_memory_(device, &memory); rc != NVML_SUCCESS) {
    return nvml_error(where + ": nvmlDeviceGetMemoryInfo", rc);
  }
  if (memory.used > memory.total || memory.free > memory.total) {
    return make_error(ErrorCode::kUnavailable,
                      where + ": NVML memory reading is inconsistent (total " +
                          std::to_string(memory.total) + ", used " + std::to_string(memory.used) +
                          ", free " + std::to_string(memory.free) + " bytes)");
  }
  d.total_bytes = memory.total;
  d.used_bytes = memory.used;
  d.free_bytes = memory.free;
  nvmlUtilization_t util{};
  if (get_utilization_ != nullptr && get_utilization_(device, &util) == NVML_SUCCESS &&
      util.gpu <= 100 && util.memory <= 100) {
    d.util_gpu_percent = util.gpu;
    d.util_memory_percent = util.memory;
  }
  out.devices.push_back(std::move(d));
  if (auto done = read_processes(index, device, get_compute_, GpuProcessKind::kCompute, out);
      !done) {
    return done;
  }
  if (get_graphics_ == nullptr) return Status{};
  return read_processes(index, device, get_graphics_, GpuProcessKind::kGraphics, out);
}

Status NvmlInventory::read_processes(unsigned index, nvmlDevice_t device,
                                     nvmlDeviceGetRunningProcesses_fn query, GpuProcessKind kind,
                                     GpuSnapshot& out) const {
  const std::string what =
      "GPU " + std::to_string(index) + ": running " + to_string(kind) + " processes";
  // Processes come and go between the calls: grow and ask again until the list fits.
  std::vector<nvmlProcessInfo_t> infos(16);
  for (int attempt = 0;; ++attempt) {
    unsigned count = static_cast<unsigned>(infos.size());
    const nvmlReturn_t rc = query(device, &count, infos.data());
    if (rc == NVML_ERROR_NOT_SUPPORTED) return Status{};
    if (rc == NVML_ERROR_INSUFFICIENT_SIZE && attempt < 4 && count <= kMaxProcessesPerDevice) {
      infos.resize(std::max<size_t>(count + 8, infos.size() * 2));
      continue;
    }
    if (rc != NVML_SUCCESS) return nvml_error(what, rc);
    if (count > infos.size()) {
      return make_error(ErrorCode::kUnavailable, what + ": NVML returned " + std::to_string(count) +
                                                     " entries for " +
                                                     std::to_string(infos.size()) + " slots");
    }
    for (unsigned i = 0; i < count; ++i) {
      GpuProcess p;
      p.gpu = index;
      p.pid = static_cast<pid_t>(infos[i].pid);
      p.kind = kind;
      if (infos[i].usedGpuMemory != NVML_VALUE_NOT_AVAILABLE) p.used_bytes = infos[i].usedGpuMemory;
      if (p.pid > 0) out.processes.push_back(p);
    }
    return Status{};
  }
}

}  // namespace

std::string default_nvml_library() {
  const char* env = std::getenv("GPUVISOR_NVML_LIBRARY");
  return env != nullptr && *env != '\0' ? env : "libnvidia-ml.so.1";
}

std::unique_ptr<GpuInventory> open_nvml_inventory(const std::string& library_path) {
  auto opened = NvmlInventory::open(library_path);
  if (!opened) return std::make_unique<UnavailableInventory>(opened.error().message);
  return std::move(*opened);
}

}  // namespace gpuvisor
