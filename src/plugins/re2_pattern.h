// JSON Schema's 'pattern' checked with RE2 instead of valijson's std::regex. libstdc++'s
// std::regex backtracks and recurses once per character: a long value (a 1 MiB config string)
// ends the daemon's stack, and a pattern such as "(a*)*b" takes exponential time. RE2 matches in
// time linear in the input, without recursion, and refuses what it cannot do so (backreferences,
// lookaround) when the pattern is compiled, which is when the manifest is loaded.
//
// valijson 0.7 has no hook for its regex engine, so the schema valijson parses has each 'pattern'
// keyword moved to kRe2PatternKey (a keyword valijson does not know), which add_re2_pattern
// makes a custom constraint.
#pragma once

#include <optional>
#include <string>

namespace valijson {
class SchemaParser;
}

namespace gpuvisor {

inline constexpr const char* kRe2PatternKey = "x-gpuvisor-re2-pattern";

// RE2's own message for why it cannot compile pattern; nullopt when it can.
std::optional<std::string> re2_problem(const std::string& pattern);

// Makes parser turn kRe2PatternKey into a constraint: a string value must contain a match of the
// pattern (search semantics, unanchored, as JSON Schema says); other values pass. A pattern that
// is not a string, or that RE2 cannot compile, throws from the parser.
void add_re2_pattern(valijson::SchemaParser& parser);

}  // namespace gpuvisor
