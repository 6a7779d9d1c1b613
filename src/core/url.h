// The small part of URL syntax gpuvisor needs: plain http URLs to local or remote services,
// and "host:port" endpoints.
#pragma once

#include <optional>
#include <string>
#include <string_view>

namespace gpuvisor {

struct HttpUrl {
  std::string host;    // without brackets for IPv6
  std::string port;    // "80" when the URL has none
  std::string target;  // path and query, at least "/"
};

// "http://host[:port][/path]"; nullopt for any other scheme, an empty host or a bad port.
std::optional<HttpUrl> parse_http_url(std::string_view url);

struct HostPort {
  std::string host;
  std::string port;
};

// "host:port" or "[v6]:port"; the port must be 0-65535.
std::optional<HostPort> parse_host_port(std::string_view text);

// The methods a config may name for what gpuvisor sends: hooks and http plugins.
bool is_http_method(std::string_view method);

}  // namespace gpuvisor
