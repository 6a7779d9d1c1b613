// Splitting a request target into path segments and query parameters, and reading the optional
// JSON body of a POST, with errors that say which parameter is wrong.
#pragma once

#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/duration.h"
#include "core/result.h"

namespace gpuvisor {

struct RequestParts {
  std::vector<std::string> segments;          // "/api/v1/services/x" -> {api, v1, services, x}
  std::map<std::string, std::string> params;  // from the query string and the JSON body
};

// allowed: the parameter names this route takes; anything else is a 400 naming it.
Result<RequestParts> parse_request(std::string_view target, std::string_view body,
                                   const std::vector<std::string>& allowed);

// One query parameter of target, percent-decoded; nullopt when it is absent or malformed. For
// targets that are not the API's own (the proxy's), where other parameters are the service's.
std::optional<std::string> query_param(std::string_view target, std::string_view name);

Result<bool> bool_param(const RequestParts& parts, const std::string& name, bool fallback);
Result<Millis> duration_param(const RequestParts& parts, const std::string& name, Millis fallback);
Result<long long> int_param(const RequestParts& parts, const std::string& name, long long fallback,
                            long long min, long long max);

}  // namespace gpuvisor
