// What a valid value of each kind looks like, for the config's readers.
#include <algorithm>
#include <charconv>

#include "config/loader.h"
#include "core/url.h"

namespace gpuvisor::config_detail {

namespace {

bool is_alnum(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
}

bool is_port_number(std::string_view p) {
  const auto n = parse_integer(p);
  return n && *n >= 1 && *n <= 65535;
}

}  // namespace

std::optional<long long> parse_integer(std::string_view text) {
  if (!text.empty() && text.front() == '+') text.remove_prefix(1);
  long long value = 0;
  const char* end = text.data() + text.size();
  auto [ptr, ec] = std::from_chars(text.data(), end, value);
  if (text.empty() || ec != std::errc() || ptr != end) return std::nullopt;
  return value;
}

bool is_absolute(std::string_view path) {
  return !path.empty() && path.front() == '/';
}

bool is_remote_kind(std::string_view k) {
  return k == "remote_ssh" || k == "cloud_vm" || k == "cloud_container" ||
         k == "cloud_serverless" || k == "cloud_gpu" || k == "cloud_cpu";
}

bool is_docker_host(std::string_view host) {
  return host.rfind("unix:///", 0) == 0 || (!host.empty() && host.front() == '/');
}

bool is_host_port(std::string_view text) {
  return parse_host_port(text).has_value();
}

bool is_listen_port(std::string_view text) {
  const auto hp = parse_host_port(text);
  return hp && !hp->host.empty() && hp->port != "0";
}

bool is_http_url(std::string_view text) {
  return parse_http_url(text).has_value();
}

bool valid_service_name(std::string_view name) {
  if (name.empty() || name.size() > 63 || !is_alnum(name.front())) return false;
  return std::all_of(name.begin(), name.end(),
                     [](char c) { return is_alnum(c) || c == '_' || c == '.' || c == '-'; });
}

bool valid_container_name(std::string_view name) {
  if (name.empty() || name.size() > 128 || !is_alnum(name.front())) return false;
  return std::all_of(name.begin(), name.end(),
                     [](char c) { return is_alnum(c) || c == '_' || c == '.' || c == '-'; });
}

bool valid_conda_env(std::string_view name) {
  return !name.empty() && name.find_first_of("/ \t\n") == std::string_view::npos;
}

bool valid_image(std::string_view ref) {
  return !ref.empty() && ref.find_first_of(" \t\n") == std::string_view::npos && ref.front() != '-';
}

bool valid_mount(std::string_view m) {
  const auto first = m.find(':');
  if (first == std::string_view::npos || first == 0 || m.front() != '/') return false;
  const auto rest = m.substr(first + 1);
  const auto second = rest.find(':');
  const auto inside = rest.substr(0, second);
  if (inside.empty() || inside.front() != '/') return false;
  if (second == std::string_view::npos) return true;
  const auto mode = rest.substr(second + 1);
  return mode == "ro" || mode == "rw";
}

bool valid_port(std::string_view p) {
  if (const auto slash = p.find('/'); slash != std::string_view::npos) {
    const auto proto = p.substr(slash + 1);
    if (proto != "tcp" && proto != "udp") return false;
    p = p.substr(0, slash);
  }
  const auto last = p.rfind(':');
  if (last == std::string_view::npos) return false;
  const auto head = p.substr(0, last);
  const auto colon = head.rfind(':');
  const auto host_port = colon == std::string_view::npos ? head : head.substr(colon + 1);
  return is_port_number(p.substr(last + 1)) && is_port_number(host_port) &&
         (colon == std::string_view::npos || colon > 0);
}

bool valid_env_name(std::string_view name) {
  if (name.empty() || (name.front() >= '0' && name.front() <= '9')) return false;
  return std::all_of(name.begin(), name.end(), [](char c) { return is_alnum(c) || c == '_'; });
}

}  // namespace gpuvisor::config_detail
