// Durations as users write them in config and on the command line: "500ms", "10s", "5m", "1h".
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace gpuvisor {

using Millis = std::chrono::milliseconds;

// Parses a non-negative integer followed by one unit (ms, s, m, h, d). A bare number is refused:
// "10" is ambiguous between seconds and milliseconds, and guessing wrong is a silent bug.
std::optional<Millis> parse_duration(std::string_view text);

// Shortest exact rendering: 1500ms -> "1500ms", 10000ms -> "10s", 300000ms -> "5m".
std::string format_duration(Millis d);

// Wall-clock time in Unix milliseconds: what records, events and jobs carry.
int64_t unix_ms_now();

}  // namespace gpuvisor
