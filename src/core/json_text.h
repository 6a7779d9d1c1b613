// JSON as text, for anything that leaves the process (a reply, an event, a database row).
#pragma once

#include <nlohmann/json.hpp>
#include <string>

namespace gpuvisor {

// Never throws: text from outside (a service's output, its reply to a job, a request's
// percent-decoded target) need not be UTF-8, and nlohmann's dump() throws on such bytes in the
// middle of a reply, an event stream or a commit. They become U+FFFD instead.
std::string json_text(const nlohmann::json& value);

}  // namespace gpuvisor
