// Helpers shared by the fuzz targets: the fuzzer's bytes as text, and a split of one input into
// the parts a target needs (a request's target and body, a schema and a value).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace gpuvisor::fuzz {

inline std::string_view text(const uint8_t* data, size_t size) {
  return {reinterpret_cast<const char*>(data), size};
}

// The part before the first `separator` (all of it when there is none), and what follows.
// A separator such as "\n---\n" never occurs inside a valid JSON document, so seeds stay
// readable files.
inline std::pair<std::string_view, std::string_view> split(std::string_view in,
                                                           std::string_view separator) {
  const auto at = in.find(separator);
  if (at == std::string_view::npos) return {in, {}};
  return {in.substr(0, at), in.substr(at + separator.size())};
}

}  // namespace gpuvisor::fuzz
