// "Did you mean ...?" for misspelled names: config keys, service names on the command line.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace gpuvisor {

// Edit distance (insert, delete, substitute, swap two neighbours; each costs 1), ignoring ASCII
// case, so "Comand" and "comamnd" are both one step from "command".
size_t edit_distance(std::string_view a, std::string_view b);

// The candidate nearest to `word` when it is close enough to be a likely typo: distance at most
// max(2, word.size() / 3) and less than the length of either string, so short words do not
// "match" unrelated short candidates. Failing that, the first candidate that `word` (3 or more
// characters) is the start of. Ties go to the earlier candidate; nullopt when none is close.
std::optional<std::string> closest_match(std::string_view word,
                                         const std::vector<std::string>& candidates);

}  // namespace gpuvisor
