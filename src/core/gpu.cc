#include "core/gpu.h"

namespace gpuvisor {

const char* to_string(GpuProcessKind kind) {
  return kind == GpuProcessKind::kGraphics ? "graphics" : "compute";
}

}  // namespace gpuvisor
