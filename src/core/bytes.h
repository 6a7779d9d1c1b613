// Memory sizes for people: "512 MiB", "23.5 GiB" (plans, refusals, tables).
#pragma once

#include <cstdint>
#include <string>

namespace gpuvisor {

std::string format_bytes(uint64_t bytes);

}  // namespace gpuvisor
