#include "core/bytes.h"

#include <cstdio>

namespace gpuvisor {

std::string format_bytes(uint64_t bytes) {
  constexpr uint64_t kMiB = 1ULL << 20;
  if (bytes < 1024 * kMiB) return std::to_string(bytes / kMiB) + " MiB";
  char text[32];
  std::snprintf(text, sizeof text, "%.1f GiB", static_cast<double>(bytes) / (1024.0 * kMiB));
  return text;
}

}  // namespace gpuvisor
