// Private to src/config: the Loader behind load_config_file, shared by the files that read each
// part of gpuvisor.yaml (config_loader.cc: the top level, daemon and plugins; service_section.cc:
// a service; runtime_sections.cc: docker, external and remote; field_readers.cc: the readers and
// the problem list they all report to; value_formats.cc: what a valid value looks like).
#pragma once

#include <yaml-cpp/yaml.h>

#include <functional>
#include <limits>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "config/config_loader.h"
#include "core/duration.h"
#include "core/result.h"
#include "core/service_spec.h"

namespace gpuvisor::config_detail {

// What each format check below wants, for "must be X, got Y".
inline constexpr std::string_view kDockerHost = "a unix socket: unix:///path/docker.sock or /path";
inline constexpr std::string_view kContainerName =
    "a container name (letters, digits, '_', '.', '-')";
inline constexpr std::string_view kCondaEnv = "a conda environment name";
inline constexpr std::string_view kMount = "\"/host/path:/container/path\" with optional \":ro\"";
inline constexpr std::string_view kPort =
    "\"HOST:CONTAINER\" or \"IP:HOST:CONTAINER\", optional /tcp or /udp";
inline constexpr std::string_view kHostPort = "HOST:PORT with a port 0-65535";
inline constexpr std::string_view kListenPort =
    "HOST:PORT with a port 1-65535, e.g. 127.0.0.1:8188";
inline constexpr std::string_view kAbsolutePath = "an absolute path";

// Format checks on a value's text (value_formats.cc).
bool is_absolute(std::string_view path);
bool is_remote_kind(std::string_view kind);
bool is_docker_host(std::string_view host);
bool is_host_port(std::string_view text);
bool is_listen_port(std::string_view text);  // a chosen port: not 0 (any)
bool is_http_url(std::string_view text);
bool valid_service_name(std::string_view name);
bool valid_container_name(std::string_view name);  // Docker's rule, for networks too
bool valid_conda_env(std::string_view name);
bool valid_image(std::string_view ref);
bool valid_mount(std::string_view mount);  // "/host:/in/container" with an optional ":ro" or ":rw"
bool valid_port(std::string_view port);    // "8188:8188", "127.0.0.1:8188:8188", optional "/tcp"
bool valid_env_name(std::string_view name);
// A decimal integer with an optional '+'; nothing else around it.
std::optional<long long> parse_integer(std::string_view text);

struct Problem {
  int line = 0;  // 1-based; 0 when yaml-cpp gave no position
  int column = 0;
  std::string what;
};

// One `key: value` entry of a mapping whose key is a string.
struct Field {
  std::string key;
  YAML::Node key_node;
  YAML::Node value;
};

using Handler = std::function<void(const Field&)>;
using Handlers = std::vector<std::pair<std::string, Handler>>;

std::string quote(std::string_view s);
// What a node turned out to be, for "must be X, got Y".
std::string describe(const YAML::Node& node);
// Where to point at a field's value: the key when the value was left empty.
YAML::Mark value_mark(const Field& f);
// "LINE:COL", 1-based.
std::string position(const YAML::Mark& mark);

// Reads one config text, collecting every problem rather than stopping at the first. Each
// read_* reports what is wrong with its field and returns false (or leaves `out` alone).
class Loader {
 public:
  explicit Loader(std::string origin) : origin_(std::move(origin)) {}

  // Every problem, and the config as far as it could be read.
  ConfigReport read(const std::string& text);

 private:
  // Problems, and the readers every section uses (field_readers.cc).
  void report(const YAML::Mark& mark, const std::string& what);
  // A message is one line: a newline in a quoted key, or in yaml-cpp's own text ("unknown escape
  // character: " and the character), would start a line with no position.
  static std::string printable(const std::string& text);
  // A problem with a field's value: "'KEY'" + rest, at the value. Returns false so that readers
  // can `return bad_value(...)`.
  bool bad_value(const Field& f, const std::string& rest);
  // The problems as lines, in document order.
  std::vector<std::string> render();
  // Calls the handler named by each key of `map`. Keys without one go to `other` when given,
  // and are reported as unknown otherwise; `context` ends "unknown key 'x'" messages.
  void visit_map(const YAML::Node& map, std::string_view context, const Handlers& handlers,
                 const Handler& other = nullptr, std::string_view duplicate_noun = "key");
  void report_unknown_key(const Field& f, std::string_view context, const Handlers& handlers);
  bool read_string(const Field& f, std::string& out);
  // A string that must also pass `valid`; `expected` says what it should look like.
  bool read_checked(const Field& f, std::string& out, bool (*valid)(std::string_view),
                    std::string_view expected);
  bool read_bool(const Field& f, bool& out);
  template <typename Int>
  bool read_int(const Field& f, Int& out, long long min,
                long long max = std::numeric_limits<long long>::max());
  bool read_duration(const Field& f, Millis& out, bool positive);
  // An argv: a non-empty list of strings whose first element, the program, is not empty.
  bool read_argv(const Field& f, std::vector<std::string>& out);
  // A list of strings, each of which must pass `valid`.
  void read_list(const Field& f, std::vector<std::string>& out, bool (*valid)(std::string_view),
                 std::string_view expected);
  // Handlers for the plain fields, so that each table entry is one line.
  Handler text(std::string& out);
  Handler checked(std::string& out, bool (*valid)(std::string_view), std::string_view expected);
  Handler flag(bool& out);
  template <typename Int>
  Handler number(Int& out, long long min, long long max = std::numeric_limits<long long>::max()) {
    return [this, &out, min, max](const Field& g) { read_int(g, out, min, max); };
  }
  Handler duration(Millis& out, bool positive);
  // True for a map to read. A section left empty (`health:` alone) keeps the defaults.
  bool expect_map(const Field& f, std::string_view what);

  // The top level, 'daemon' and 'plugins' (config_loader.cc).
  void read_root(const YAML::Node& root, Config& config);
  void check_listen_ports(const YAML::Node& root, const Config& config);
  void read_plugins(const Field& f, PluginsSpec& plugins);
  void read_daemon(const Field& f, DaemonSpec& daemon);

  // A service and its plain settings (service_section.cc).
  void read_services(const Field& f, Config& config);
  void check_models(const Field& f, const Config& config);
  bool read_service(const Field& entry, ServiceSpec& spec);
  void read_command(const Field& f, ServiceSpec& spec);
  void read_runtime(const Field& f, RuntimeKind& out);
  void read_restart(const Field& f, RestartPolicy& out);
  void read_env(const Field& f, std::map<std::string, std::string>& out);
  void read_phases(const Field& f, std::vector<int>& out);
  void read_health(const Field& f, const std::string& service, HealthSpec& health);
  void read_proxy(const Field& f, const std::string& service, ProxySpec& proxy);

  // What belongs to one runtime (runtime_sections.cc).
  static YAML::Mark key_mark(const Field& entry, const char* key);
  void check_runtime_fields(const Field& entry, const std::string& service,
                            const ServiceSpec& spec);
  void read_docker(const Field& f, const std::string& service, DockerSpec& docker);
  void read_external(const Field& f, const std::string& service, ServiceSpec& spec);
  void read_gpus(const Field& f, std::vector<unsigned>& out);
  void check_gpus(const Field& entry, const std::string& service, ServiceSpec& spec);
  void read_remote(const Field& f, const std::string& service, RemoteSpec& remote);
  void read_hook(const Field& f, const std::string& service, HookSpec& hook);

  std::string origin_;
  std::vector<Problem> problems_;
  std::vector<std::string> service_names_;  // every key of the services map
};

template <typename Int>
bool Loader::read_int(const Field& f, Int& out, long long min, long long max) {
  const auto value = f.value.IsScalar() ? parse_integer(f.value.Scalar()) : std::nullopt;
  if (!value) return bad_value(f, " must be an integer, got " + describe(f.value));
  if (*value < min) {
    return bad_value(
        f, " must be at least " + std::to_string(min) + ", got " + std::to_string(*value));
  }
  if (*value > max) {
    return bad_value(f,
                     " must be at most " + std::to_string(max) + ", got " + std::to_string(*value));
  }
  if (!std::in_range<Int>(*value)) return bad_value(f, " is too large: " + f.value.Scalar());
  out = static_cast<Int>(*value);
  return true;
}

}  // namespace gpuvisor::config_detail
