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

// "/api//v1/x/" -> {api, v1, x}: empty segments are skipped, nothing is percent-decoded.
std::vector<std::string> split_path(std::string_view path);

// The parameters of a query string (what follows the '?') and of a JSON object body, decoded.
// allowed: the names the route takes; anything else is a 400 naming it and them.
Result<std::map<std::string, std::string>> parse_params(std::string_view query,
                                                        std::string_view body,
                                                        const std::vector<std::string>& allowed);

// split_path and parse_params of one request target and body.
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
