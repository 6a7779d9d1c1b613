// The GPU inventory: devices, memory and the processes holding it, read through NVML. NVML is
// loaded at run time with dlopen, so gpuvisor runs (with VRAM unknown) where there is none.
#pragma once

#include <memory>
#include <string>

#include "core/gpu.h"
#include "core/result.h"

namespace gpuvisor {

class GpuInventory {
 public:
  virtual ~GpuInventory() = default;
  // One full reading of every device and process. An error says what failed, and where.
  virtual Result<GpuSnapshot> snapshot() = 0;
  // "NVML from libnvidia-ml.so.1", or "unavailable: <why>".
  virtual std::string describe() const = 0;
  // False when NVML could not be loaded at all: there is nothing to plan with.
  virtual bool available() const = 0;
};

// "libnvidia-ml.so.1" unless GPUVISOR_NVML_LIBRARY (or configured) says otherwise.
std::string default_nvml_library();

// Loads the library and initialises NVML. Never fails: without NVML the inventory answers
// every snapshot with the reason (kUnavailable), once the daemon has logged it.
std::unique_ptr<GpuInventory> open_nvml_inventory(const std::string& library_path);

}  // namespace gpuvisor
