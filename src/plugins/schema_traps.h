// What valijson (0.7, Debian 12) lets through its schema parser and then fails on, found before
// it sees a schema: each of these would end the daemon, not be an error.
// - A 'pattern' is compiled only when a value reaches it (with RE2, see re2_pattern.h); a
//   patternProperties name likewise, with std::regex, and a bad one throws std::regex_error out
//   of the validation.
// - An integer 'multipleOf' of 0 divides by zero.
// - A '$ref' that leads back to where it started, or one to another document (with no way to
//   fetch it, a relative one resolves against itself), recurses in the parser until the stack
//   ends.
// - Nesting deep enough to end the stack in its recursive parser.
#pragma once

#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

namespace gpuvisor {

// The first such problem, as "/properties/voice/pattern is not a valid regular expression
// (...)"; nullopt when there is none.
std::optional<std::string> find_schema_trap(const nlohmann::json& schema);

// Where valijson will read a string 'pattern' keyword: every subschema that has one, found from
// the root and through each local '$ref', as valijson goes. Only for a schema without traps (whose
// '$ref's end).
std::vector<nlohmann::json::json_pointer> pattern_keywords(const nlohmann::json& schema);

}  // namespace gpuvisor
