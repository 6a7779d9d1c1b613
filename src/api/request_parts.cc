#include "api/request_parts.h"

#include <algorithm>
#include <charconv>

namespace gpuvisor {

namespace {

std::optional<std::string> percent_decode(std::string_view in) {
  std::string out;
  for (size_t i = 0; i < in.size(); ++i) {
    if (in[i] == '+') {
      out += ' ';
    } else if (in[i] == '%') {
      unsigned value = 0;
      if (i + 2 >= in.size()) return std::nullopt;
      auto [ptr, ec] = std::from_chars(in.data() + i + 1, in.data() + i + 3, value, 16);
      if (ec != std::errc() || ptr != in.data() + i + 3) return std::nullopt;
      out += static_cast<char>(value);
      i += 2;
    } else {
      out += in[i];
    }
  }
  return out;
}

Error bad(const std::string& message) {
  return make_error(ErrorCode::kBadRequest, message);
}

}  // namespace

std::optional<std::string> query_param(std::string_view target, std::string_view name) {
  const auto q = target.find('?');
  if (q == std::string_view::npos) return std::nullopt;
  std::string_view query = target.substr(q + 1);
  while (!query.empty()) {
    const auto amp = query.find('&');
    const std::string_view pair = query.substr(0, amp);
    const auto eq = pair.find('=');
    if (pair.substr(0, eq) == name) {
      return eq == std::string_view::npos ? std::optional<std::string>("")
                                          : percent_decode(pair.substr(eq + 1));
    }
    if (amp == std::string_view::npos) break;
    query.remove_prefix(amp + 1);
  }
  return std::nullopt;
}

std::vector<std::string> split_path(std::string_view path) {
  std::vector<std::string> segments;
  while (!path.empty()) {
    const auto slash = path.find('/');
    if (slash != 0) segments.emplace_back(path.substr(0, slash));
    if (slash == std::string_view::npos) break;
    path.remove_prefix(slash + 1);
  }
  return segments;
}

Result<std::map<std::string, std::string>> parse_params(std::string_view query,
                                                        std::string_view body,
                                                        const std::vector<std::string>& allowed) {
  std::map<std::string, std::string> params;
  auto accept = [&](const std::string& key, std::string value) -> Status {
    if (std::find(allowed.begin(), allowed.end(), key) == allowed.end()) {
      std::string list;
      for (const auto& a : allowed) list += (list.empty() ? "" : ", ") + a;
      return bad("unknown parameter '" + key + "'" +
                 (list.empty() ? " (this route takes none)" : " (allowed: " + list + ")"));
    }
    params[key] = std::move(value);
    return {};
  };
  while (!query.empty()) {
    const auto amp = query.find('&');
    const std::string_view pair = query.substr(0, amp);
    const auto eq = pair.find('=');
    const auto key = percent_decode(pair.substr(0, eq));
    const auto value = percent_decode(eq == std::string_view::npos ? "" : pair.substr(eq + 1));
    if (!key || !value) return bad("malformed query string near '" + std::string(pair) + "'");
    if (!key->empty()) {
      if (auto ok = accept(*key, *value); !ok) return ok.error();
    }
    if (amp == std::string_view::npos) break;
    query.remove_prefix(amp + 1);
  }
  if (body.find_first_not_of(" \t\r\n") != std::string_view::npos) {
    const auto json = nlohmann::json::parse(body, nullptr, false);
    if (json.is_discarded()) return bad("request body is not valid JSON");
    if (!json.is_object()) return bad("request body must be a JSON object");
    for (const auto& [key, value] : json.items()) {
      std::string text;
      if (value.is_string()) {
        text = value.get<std::string>();
      } else if (value.is_boolean() || value.is_number_integer()) {
        text = value.dump();
      } else {
        return bad("body field '" + key + "' must be a string, boolean or integer");
      }
      if (auto ok = accept(key, std::move(text)); !ok) return ok.error();
    }
  }
  return params;
}

Result<RequestParts> parse_request(std::string_view target, std::string_view body,
                                   const std::vector<std::string>& allowed) {
  const auto q = target.find('?');
  const std::string_view query = q == std::string_view::npos ? "" : target.substr(q + 1);
  auto params = parse_params(query, body, allowed);
  if (!params) return params.error();
  return RequestParts{split_path(target.substr(0, q)), std::move(*params)};
}

Result<bool> bool_param(const RequestParts& parts, const std::string& name, bool fallback) {
  const auto it = parts.params.find(name);
  if (it == parts.params.end()) return fallback;
  if (it->second == "true" || it->second == "1" || it->second.empty()) return true;
  if (it->second == "false" || it->second == "0") return false;
  return bad("'" + name + "' must be true or false, got '" + it->second + "'");
}

Result<Millis> duration_param(const RequestParts& parts, const std::string& name, Millis fallback) {
  const auto it = parts.params.find(name);
  if (it == parts.params.end()) return fallback;
  const auto d = parse_duration(it->second);
  if (!d) return bad("'" + name + "': bad duration '" + it->second + "' (use e.g. 500ms, 30s, 5m)");
  return *d;
}

Result<long long> int_param(const RequestParts& parts, const std::string& name, long long fallback,
                            long long min, long long max) {
  const auto it = parts.params.find(name);
  if (it == parts.params.end()) return fallback;
  long long value = 0;
  const auto& text = it->second;
  auto [ptr, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc() || ptr != text.data() + text.size() || value < min || value > max) {
    return bad("'" + name + "' must be an integer from " + std::to_string(min) + " to " +
               std::to_string(max) + ", got '" + text + "'");
  }
  return value;
}

}  // namespace gpuvisor
