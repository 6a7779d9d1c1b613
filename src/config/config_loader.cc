#include "config/config_loader.h"

#include <fcntl.h>
#include <unistd.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <functional>
#include <limits>
#include <optional>
#include <utility>

#include "config/closest_match.h"
#include "config/yaml_json.h"
#include "core/duration.h"
#include "core/url.h"

namespace gpuvisor {

namespace {

constexpr std::string_view kDockerHost = "a unix socket: unix:///path/docker.sock or /path";
constexpr std::string_view kContainerName = "a container name (letters, digits, '_', '.', '-')";
constexpr std::string_view kCondaEnv = "a conda environment name";
constexpr std::string_view kMount = "\"/host/path:/container/path\" with optional \":ro\"";
constexpr std::string_view kPort =
    "\"HOST:CONTAINER\" or \"IP:HOST:CONTAINER\", optional /tcp or /udp";
constexpr std::string_view kHostPort = "HOST:PORT with a port 0-65535";
constexpr std::string_view kListenPort = "HOST:PORT with a port 1-65535, e.g. 127.0.0.1:8188";
constexpr std::string_view kAbsolutePath = "an absolute path";

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

std::string quote(std::string_view s) {
  return "'" + std::string(s) + "'";
}

// What a node turned out to be, for "must be X, got Y".
std::string describe(const YAML::Node& node) {
  if (node.IsScalar()) return quote(node.Scalar());
  return node.IsSequence() ? "a list" : node.IsMap() ? "a map" : "nothing";
}

// A value left empty (`key:` alone) carries the mark of whatever follows it, often the next
// line; the key is where the user should look.
YAML::Mark value_mark(const Field& f) {
  return f.value.IsNull() ? f.key_node.Mark() : f.value.Mark();
}

std::string position(const YAML::Mark& mark) {
  return std::to_string(mark.line + 1) + ":" + std::to_string(mark.column + 1);
}

std::optional<long long> parse_integer(std::string_view text) {
  if (!text.empty() && text.front() == '+') text.remove_prefix(1);
  long long value = 0;
  const char* end = text.data() + text.size();
  auto [ptr, ec] = std::from_chars(text.data(), end, value);
  if (text.empty() || ec != std::errc() || ptr != end) return std::nullopt;
  return value;
}

bool is_alnum(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
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

// A port to listen on for good: a chosen one, not 0 (any).
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

// Docker's own rule for container and network names.
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

// "/host:/in/container" with an optional ":ro" or ":rw".
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

bool is_port_number(std::string_view p) {
  const auto n = parse_integer(p);
  return n && *n >= 1 && *n <= 65535;
}

// "8188:8188", "127.0.0.1:8188:8188", each with an optional "/tcp" or "/udp".
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

class Loader {
 public:
  explicit Loader(std::string origin) : origin_(std::move(origin)) {}

  Result<Config> load(const std::string& text) {
    Config config;
    config.path = origin_;
    try {
      check_utf8(text);
      const std::vector<YAML::Node> documents = load_all_documents(text);
      read_root(documents.empty() ? YAML::Node() : documents.front(), config);
      // YAML::Load would drop later documents, and what the user put in them, without a word.
      for (size_t i = 1; i < documents.size(); ++i) {
        if (!documents[i].IsNull()) {
          report(documents[i].Mark(),
                 "only one YAML document is allowed; this one would be ignored");
        }
      }
    } catch (const YAML::Exception& e) {
      // Syntax errors and undefined aliases both carry the mark of the offending text.
      report(e.mark, e.mark.is_null() ? e.what() : "YAML syntax error: " + e.msg);
    } catch (const std::exception& e) {
      report(YAML::Mark::null_mark(), std::string("internal error: ") + e.what());
    }
    if (problems_.empty()) return config;
    return make_error(ErrorCode::kBadRequest, render());
  }

 private:
  void report(const YAML::Mark& mark, const std::string& what) {
    const bool known = !mark.is_null();
    problems_.push_back({known ? mark.line + 1 : 0, known ? mark.column + 1 : 0, printable(what)});
  }

  // A message is one line: a newline in a quoted key, or in yaml-cpp's own text ("unknown escape
  // character: " and the character), would start a line with no position.
  static std::string printable(const std::string& text) {
    std::string out;
    for (const char c : text) {
      const auto u = static_cast<unsigned char>(c);
      if (c == '\n') {
        out += "\\n";
      } else if (u < 0x20 || u == 0x7f) {
        char hex[8];
        std::snprintf(hex, sizeof hex, "\\x%02x", u);
        out += hex;
      } else {
        out += c;
      }
    }
    return out;
  }

  // A problem with a field's value: "'KEY'" + rest, at the value. Returns false so that readers
  // can `return bad_value(...)`.
  bool bad_value(const Field& f, const std::string& rest) {
    report(value_mark(f), quote(f.key) + rest);
    return false;
  }

  std::string render() {
    // Checks that run after a whole section (a missing 'command', a second health check) report
    // late; sorting puts every line back in document order.
    std::stable_sort(problems_.begin(), problems_.end(), [](const Problem& a, const Problem& b) {
      return std::pair(a.line, a.column) < std::pair(b.line, b.column);
    });
    std::string out;
    for (const auto& p : problems_) {
      if (!out.empty()) out += '\n';
      out += origin_;
      if (p.line > 0) out += ":" + std::to_string(p.line) + ":" + std::to_string(p.column);
      out += ": " + p.what;
    }
    return out;
  }

  // Calls the handler named by each key of `map`. Keys without one go to `other` when given,
  // and are reported as unknown otherwise; `context` ends "unknown key 'x'" messages.
  void visit_map(const YAML::Node& map, std::string_view context, const Handlers& handlers,
                 const Handler& other = nullptr, std::string_view duplicate_noun = "key") {
    std::vector<std::pair<std::string, YAML::Mark>> seen;
    for (auto it = map.begin(); it != map.end(); ++it) {
      Field f{"", it->first, it->second};
      if (!f.key_node.IsScalar()) {
        report(f.key_node.Mark(), "keys must be strings, got " + describe(f.key_node));
        continue;
      }
      f.key = f.key_node.Scalar();
      // yaml-cpp keeps both entries of a repeated key; silently taking one would hide a mistake.
      auto first =
          std::find_if(seen.begin(), seen.end(), [&](auto& s) { return s.first == f.key; });
      if (first != seen.end()) {
        report(f.key_node.Mark(), "duplicate " + std::string(duplicate_noun) + " " + quote(f.key) +
                                      " (first declared at " + position(first->second) + ")");
        continue;
      }
      seen.emplace_back(f.key, f.key_node.Mark());
      auto handler =
          std::find_if(handlers.begin(), handlers.end(), [&](auto& h) { return h.first == f.key; });
      if (handler != handlers.end()) {
        handler->second(f);
      } else if (other) {
        other(f);
      } else {
        report_unknown_key(f, context, handlers);
      }
    }
  }

  void report_unknown_key(const Field& f, std::string_view context, const Handlers& handlers) {
    std::string what = "unknown key " + quote(f.key) + " " + std::string(context);
    if (f.key == "<<") {
      what += ": YAML merge keys are not supported";  // yaml-cpp 0.7 does not implement them
    } else {
      std::vector<std::string> known;
      for (const auto& h : handlers) known.push_back(h.first);
      if (auto near = closest_match(f.key, known)) what += " (did you mean " + quote(*near) + "?)";
    }
    report(f.key_node.Mark(), std::move(what));
  }

  bool read_string(const Field& f, std::string& out) {
    if (!f.value.IsScalar()) return bad_value(f, " must be a string, got " + describe(f.value));
    out = f.value.Scalar();
    return true;
  }

  // A string that must also pass `valid`; `expected` says what it should look like.
  bool read_checked(const Field& f, std::string& out, bool (*valid)(std::string_view),
                    std::string_view expected) {
    std::string text;
    if (!read_string(f, text)) return false;
    if (!valid(text))
      return bad_value(f, " must be " + std::string(expected) + ", got " + quote(text));
    out = std::move(text);
    return true;
  }

  bool read_bool(const Field& f, bool& out) {
    // The YAML 1.1 spellings, as yaml-cpp's own conversion reads them.
    static const std::vector<std::string> kTrue = {"true", "True", "TRUE", "yes", "Yes",
                                                   "YES",  "on",   "On",   "ON"};
    static const std::vector<std::string> kFalse = {"false", "False", "FALSE", "no", "No",
                                                    "NO",    "off",   "Off",   "OFF"};
    const std::string t = f.value.IsScalar() ? f.value.Scalar() : "";
    const bool yes = std::find(kTrue.begin(), kTrue.end(), t) != kTrue.end();
    if (!yes && std::find(kFalse.begin(), kFalse.end(), t) == kFalse.end()) {
      return bad_value(f, " must be true or false, got " + describe(f.value));
    }
    out = yes;
    return true;
  }

  template <typename Int>
  bool read_int(const Field& f, Int& out, long long min,
                long long max = std::numeric_limits<long long>::max()) {
    const auto value = f.value.IsScalar() ? parse_integer(f.value.Scalar()) : std::nullopt;
    if (!value) return bad_value(f, " must be an integer, got " + describe(f.value));
    if (*value < min) {
      return bad_value(
          f, " must be at least " + std::to_string(min) + ", got " + std::to_string(*value));
    }
    if (*value > max) {
      return bad_value(
          f, " must be at most " + std::to_string(max) + ", got " + std::to_string(*value));
    }
    if (!std::in_range<Int>(*value)) return bad_value(f, " is too large: " + f.value.Scalar());
    out = static_cast<Int>(*value);
    return true;
  }

  bool read_duration(const Field& f, Millis& out, bool positive) {
    const auto d = f.value.IsScalar() ? parse_duration(f.value.Scalar()) : std::nullopt;
    if (!d && f.value.IsScalar() && parse_integer(f.value.Scalar())) {
      const std::string& n = f.value.Scalar();  // the common slip: a bare number
      return bad_value(
          f, ": bad duration '" + n + "' (a number needs a unit: " + n + "s, " + n + "ms)");
    }
    if (!d) {
      return bad_value(f, ": bad duration " + describe(f.value) + " (use e.g. 500ms, 10s, 5m)");
    }
    if (positive && d->count() <= 0) return bad_value(f, " must be greater than 0");
    out = *d;
    return true;
  }

  // An argv: a non-empty list of strings whose first element, the program, is not empty.
  bool read_argv(const Field& f, std::vector<std::string>& out) {
    if (!f.value.IsSequence()) {
      return bad_value(f, " must be a list of strings, got " + describe(f.value));
    }
    std::vector<std::string> argv;
    for (const auto& item : f.value) {
      if (!item.IsScalar()) {
        report(item.IsNull() ? f.value.Mark() : item.Mark(),
               quote(f.key) + " must be a list of strings, got " + describe(item) + " in it");
        return false;
      }
      argv.push_back(item.Scalar());
    }
    if (argv.empty()) return bad_value(f, " must not be empty");
    if (argv.front().empty()) return bad_value(f, ": the program (first element) is empty");
    out = std::move(argv);
    return true;
  }

  // Handlers for the plain fields, so that each table entry is one line.
  Handler text(std::string& out) {
    return [this, &out](const Field& g) { read_string(g, out); };
  }
  Handler checked(std::string& out, bool (*valid)(std::string_view), std::string_view expected) {
    return [this, &out, valid, expected](const Field& g) { read_checked(g, out, valid, expected); };
  }
  Handler flag(bool& out) {
    return [this, &out](const Field& g) { read_bool(g, out); };
  }
  template <typename Int>
  Handler number(Int& out, long long min, long long max = std::numeric_limits<long long>::max()) {
    return [this, &out, min, max](const Field& g) { read_int(g, out, min, max); };
  }
  Handler duration(Millis& out, bool positive) {
    return [this, &out, positive](const Field& g) { read_duration(g, out, positive); };
  }

  // True for a map to read. A section left empty (`health:` alone) keeps the defaults.
  bool expect_map(const Field& f, std::string_view what) {
    if (f.value.IsMap()) return true;
    if (!f.value.IsNull())
      bad_value(f, " must be " + std::string(what) + ", got " + describe(f.value));
    return false;
  }

  void read_root(const YAML::Node& root, Config& config) {
    if (root.IsNull()) {
      report(YAML::Mark(), "the config is empty: 'services' is required");
      return;
    }
    if (!root.IsMap()) {
      report(root.Mark(), "the top level must be a map with 'services', got " + describe(root));
      return;
    }
    bool has_services = false;
    const Handlers handlers = {
        {"daemon", [&](const Field& f) { read_daemon(f, config.daemon); }},
        {"services",
         [&](const Field& f) {
           has_services = true;
           read_services(f, config);
         }},
        {"plugins", [&](const Field& f) { read_plugins(f, config.plugins); }},
    };
    visit_map(root, "at the top level", handlers);
    if (!has_services) report(root.Mark(), "'services' is required");
    check_listen_ports(root, config);
  }

  // A proxy.listen port is the service's alone: not another's, not the daemon's, and not the
  // address it forwards to (that would be a loop back into itself).
  void check_listen_ports(const YAML::Node& root, const Config& config) {
    const auto same = [](const HostPort& a, const HostPort& b) {
      const auto any = [](const std::string& h) { return h == "0.0.0.0" || h == "::"; };
      return a.port == b.port && (a.host == b.host || any(a.host) || any(b.host));
    };
    std::vector<std::pair<HostPort, std::string>> taken;
    if (auto daemon = parse_host_port(config.daemon.listen)) {
      taken.emplace_back(*daemon, "the daemon's own address (daemon.listen)");
    }
    for (const auto& s : config.services) {
      if (s.proxy.listen.empty()) continue;
      const auto at = parse_host_port(s.proxy.listen);
      if (!at) continue;  // reported where it was read
      const YAML::Node node = root["services"][s.name]["proxy"]["listen"];
      const YAML::Mark mark = node ? node.Mark() : root.Mark();
      const std::string what =
          "service " + quote(s.name) + ": proxy.listen " + quote(s.proxy.listen);
      if (const auto url = parse_http_url(s.proxy.url);
          url && same(*at, HostPort{url->host, url->port})) {
        report(mark, what + " is the service's own proxy.url: it would forward to itself");
        continue;
      }
      const auto clash = std::find_if(taken.begin(), taken.end(),
                                      [&](const auto& t) { return same(*at, t.first); });
      if (clash != taken.end()) {
        report(mark, what + " is already " + clash->second + "; a port serves one service");
        continue;
      }
      taken.emplace_back(*at, "service " + quote(s.name) + "'s proxy.listen");
    }
  }

  void read_plugins(const Field& f, PluginsSpec& plugins) {
    if (!expect_map(f, "a map")) return;
    const Handlers handlers = {
        {"dir", checked(plugins.dir, is_absolute, kAbsolutePath)},
        {"categories",
         [&](const Field& g) {
           if (!expect_map(g, "a map of category id to display name")) return;
           visit_map(g.value, "", {}, [&](const Field& c) {
             std::string name;
             if (read_string(c, name)) plugins.categories[c.key] = name;
           });
         }},
        {"manifests",
         [&](const Field& g) {
           if (!g.value.IsSequence()) {
             bad_value(g, " must be a list of plugin manifests, got " + describe(g.value));
             return;
           }
           // Checked by the plugin registry, which knows what a manifest needs.
           for (const auto& m : g.value) plugins.manifests.push_back(yaml_to_json(m));
         }},
    };
    visit_map(f.value, "in 'plugins'", handlers);
  }

  void read_daemon(const Field& f, DaemonSpec& daemon) {
    if (!expect_map(f, "a map")) return;
    const Handlers handlers = {
        {"listen", checked(daemon.listen, is_host_port, kHostPort)},
        {"state_dir", text(daemon.state_dir)},
        {"stop_services_on_exit", flag(daemon.stop_services_on_exit)},
        {"use_cgroups", flag(daemon.use_cgroups)},
        {"log_ring_lines", number(daemon.log_ring_lines, 10)},
        {"nvml_library", text(daemon.nvml_library)},
        {"docker_host", checked(daemon.docker_host, is_docker_host, kDockerHost)},
        {"conda", text(daemon.conda)},
        {"external_busy_percent", number(daemon.external_busy_percent, 1, 100)},
        {"io_threads", number(daemon.io_threads, 0, 256)},
        {"preempt_busy_lower", flag(daemon.preempt_busy_lower)},
        {"vram_release_timeout", duration(daemon.vram_release_timeout, true)},
        {"gpu_watch_interval", duration(daemon.gpu_watch_interval, false)},
        {"job_retention", duration(daemon.job_retention, false)},
    };
    visit_map(f.value, "in 'daemon'", handlers);
  }

  void read_services(const Field& f, Config& config) {
    if (!expect_map(f, "a map of service name to settings")) return;
    auto service = [&](const Field& entry) {
      ServiceSpec spec;
      if (read_service(entry, spec)) config.services.push_back(std::move(spec));
    };
    visit_map(f.value, "", {}, service, "service name");
    check_models(f, config);
  }

  // A /v1 model name routes to one service: a name listed twice is an error at the second.
  void check_models(const Field& f, const Config& config) {
    std::map<std::string, std::string> owner;
    for (const auto& s : config.services) {
      for (const auto& model : s.proxy.models) {
        const auto taken = owner.emplace(model, s.name);
        if (taken.second) continue;
        const YAML::Node node = f.value[s.name];
        const YAML::Mark mark = node && node["proxy"] ? node["proxy"].Mark() : f.value.Mark();
        report(mark, "service " + quote(s.name) + ": model " + quote(model) +
                         " is already served by " + quote(taken.first->second) +
                         "; a model names one service");
      }
    }
  }

  bool read_service(const Field& entry, ServiceSpec& spec) {
    spec.name = entry.key;
    spec.origin = origin_ + ":" + position(entry.key_node.Mark());
    const size_t problems_before = problems_.size();
    if (!valid_service_name(spec.name)) {
      report(entry.key_node.Mark(), "invalid service name " + quote(spec.name) +
                                        " (use 1 to 63 letters, digits, '_', '.' or '-', "
                                        "starting with a letter or digit)");
    }
    const std::string service = "service " + quote(spec.name);
    if (!entry.value.IsNull() && !entry.value.IsMap()) {
      return bad_value(entry,
                       ": a service must be a map of settings, got " + describe(entry.value));
    }
    std::optional<Field> command;
    const Handlers handlers = {
        {"runtime", [&](const Field& g) { read_runtime(g, spec.runtime); }},
        {"description", text(spec.description)},
        {"command", [&](const Field& g) { command = g; }},
        {"shell", flag(spec.shell)},
        {"env", [&](const Field& g) { read_env(g, spec.env); }},
        {"cwd", checked(spec.cwd, is_absolute, kAbsolutePath)},
        {"vram_mb", number(spec.vram_mb, 0)},
        {"gpu",
         [this, &spec](const Field& g) {
           unsigned index = 0;
           if (read_int(g, index, 0, 63)) spec.gpu = index;
         }},
        {"priority", number(spec.priority, std::numeric_limits<int>::min())},
        {"phases", [&](const Field& g) { read_phases(g, spec.phases); }},
        {"health", [&](const Field& g) { read_health(g, service, spec.health); }},
        {"startup_timeout", duration(spec.startup_timeout, true)},
        {"stop_grace", duration(spec.stop_grace, false)},
        {"restart", [&](const Field& g) { read_restart(g, spec.restart); }},
        {"restart_backoff", duration(spec.restart_backoff, false)},
        {"restart_backoff_max", duration(spec.restart_backoff_max, false)},
        {"restart_limit", number(spec.restart_limit, 0)},
        {"restart_reset_after", duration(spec.restart_reset_after, false)},
        {"pid_file", checked(spec.pid_file, is_absolute, kAbsolutePath)},
        {"conda_env", checked(spec.conda_env, valid_conda_env, kCondaEnv)},
        {"docker", [&](const Field& g) { read_docker(g, service, spec.docker); }},
        {"external", [&](const Field& g) { read_external(g, service, spec.external); }},
        {"remote", [&](const Field& g) { read_remote(g, service, spec.remote); }},
        {"proxy", [&](const Field& g) { read_proxy(g, service, spec.proxy); }},
        {"idle_ttl", duration(spec.idle_ttl, false)},
    };
    if (entry.value.IsMap()) visit_map(entry.value, "in " + service, handlers);
    if (command) {
      read_command(*command, spec);
    } else if (spec.runtime == RuntimeKind::kProcess) {
      report(entry.key_node.Mark(), service + ": 'command' is required");
    }
    if ((spec.runtime == RuntimeKind::kExternal || spec.runtime == RuntimeKind::kRemote) &&
        command) {
      report(key_mark(entry, "command"),
             service +
                 ": an external service has no 'command': gpuvisor does not start it "
                 "(use external.wake to load it)");
    }
    check_runtime_fields(entry, service, spec);
    return problems_.size() == problems_before;
  }

  // Settings that only make sense for one runtime, and what each runtime cannot do without.
  static YAML::Mark key_mark(const Field& entry, const char* key) {
    return entry.value.IsMap() && entry.value[key] ? entry.value[key].Mark()
                                                   : entry.key_node.Mark();
  }

  void check_runtime_fields(const Field& entry, const std::string& service,
                            const ServiceSpec& spec) {
    const auto key_mark = [&](const char* key) { return Loader::key_mark(entry, key); };
    const bool has_external = entry.value.IsMap() && entry.value["external"];
    if (spec.runtime == RuntimeKind::kExternal) {
      if (spec.external.pid_file.empty() && spec.external.port == 0 && spec.health.empty()) {
        report(key_mark("external"),
               service +
                   ": an external service needs a way to be found: external.port, "
                   "external.pid_file or a health check");
      }
      for (const char* key : {"pid_file", "conda_env", "shell", "cwd", "env"}) {
        if (entry.value.IsMap() && entry.value[key]) {
          report(key_mark(key), service + ": '" + key +
                                    "' is not used by an external service (for the server's "
                                    "PID file, use external.pid_file)");
        }
      }
    } else if (has_external) {
      report(key_mark("external"), service + ": 'external' needs 'runtime: external'");
    }
    const bool has_remote = entry.value.IsMap() && entry.value["remote"];
    if (spec.runtime == RuntimeKind::kRemote) {
      const auto& r = spec.remote;
      if (r.provision.empty() || r.status.empty() || r.terminate.empty()) {
        report(key_mark("remote"), service +
                                       ": a remote service needs remote.provision, remote.status "
                                       "and remote.terminate (commands)");
      }
      if (spec.vram_mb > 0 || spec.gpu) {
        report(key_mark(spec.vram_mb > 0 ? "vram_mb" : "gpu"),
               service +
                   ": a remote service uses no local GPU; describe it with remote.gpu_type "
                   "and remote.gpu_count");
      }
    } else if (has_remote) {
      report(key_mark("remote"), service + ": 'remote' needs 'runtime: remote'");
    }
    if (spec.runtime == RuntimeKind::kDocker) {
      if (spec.docker.container.empty() && spec.docker.image.empty()) {
        report(key_mark("docker"), service +
                                       ": a docker service needs docker.container (an existing "
                                       "container) or docker.image (gpuvisor creates one)");
      }
      if (spec.docker.image.empty() && !spec.command.empty()) {
        report(key_mark("command"), service +
                                        ": 'command' needs docker.image: an existing container "
                                        "keeps the command it was created with");
      }
      if (!spec.pid_file.empty()) {
        report(key_mark("pid_file"), service + ": 'pid_file' is for process services");
      }
      if (!spec.conda_env.empty()) {
        report(key_mark("conda_env"), service + ": 'conda_env' is for process services");
      }
    } else if (entry.value.IsMap() && entry.value["docker"]) {
      report(key_mark("docker"), service + ": 'docker' needs 'runtime: docker'");
    }
  }

  void read_docker(const Field& f, const std::string& service, DockerSpec& docker) {
    if (!expect_map(f, "a map")) return;
    const Handlers handlers = {
        {"container", checked(docker.container, valid_container_name, kContainerName)},
        {"image", checked(docker.image, valid_image, "an image reference such as repo/name:tag")},
        {"mounts", [&](const Field& g) { read_list(g, docker.mounts, valid_mount, kMount); }},
        {"ports", [&](const Field& g) { read_list(g, docker.ports, valid_port, kPort); }},
        {"network",
         checked(docker.network, valid_container_name, "a network name (host, none, bridge, ...)")},
        {"init", flag(docker.init)},
        {"gpus",
         [&](const Field& g) {
           std::string text;
           if (!read_string(g, text)) return;
           if (text == "placed") {
             docker.gpus = DockerSpec::Gpus::kPlaced;
           } else if (text == "all") {
             docker.gpus = DockerSpec::Gpus::kAll;
           } else if (text == "none") {
             docker.gpus = DockerSpec::Gpus::kNone;
           } else {
             report(value_mark(g),
                    "unknown docker.gpus " + quote(text) + " (valid: placed, all, none)");
           }
         }},
    };
    visit_map(f.value, "in 'docker' of " + service, handlers);
  }

  // `proxy: http://127.0.0.1:8000` for the URL alone, or a map with the rest.
  void read_proxy(const Field& f, const std::string& service, ProxySpec& proxy) {
    if (f.value.IsScalar()) {
      read_checked(f, proxy.url, is_http_url, "a URL starting with http://");
      return;
    }
    if (!expect_map(f, "a URL (http://HOST:PORT) or a map")) return;
    const Handlers handlers = {
        {"url", checked(proxy.url, is_http_url, "a URL starting with http://")},
        {"models", [&](const Field& g) { read_argv(g, proxy.models); }},
        {"wait", duration(proxy.wait, true)},
        {"concurrency", number(proxy.concurrency, 0, 100'000)},
        {"listen", checked(proxy.listen, is_listen_port, kListenPort)},
    };
    visit_map(f.value, "in 'proxy' of " + service, handlers);
    if (proxy.url.empty()) report(f.value.Mark(), service + ": 'proxy' needs 'url'");
  }

  void read_external(const Field& f, const std::string& service, ExternalSpec& external) {
    if (!expect_map(f, "a map")) return;
    const Handlers handlers = {
        {"pid_file", checked(external.pid_file, is_absolute, kAbsolutePath)},
        {"port", number(external.port, 1, 65535)},
        {"sleep", [&](const Field& g) { read_hook(g, service, external.sleep); }},
        {"wake", [&](const Field& g) { read_hook(g, service, external.wake); }},
    };
    visit_map(f.value, "in 'external' of " + service, handlers);
  }

  void read_remote(const Field& f, const std::string& service, RemoteSpec& remote) {
    if (!expect_map(f, "a map")) return;
    const auto money = [this](double& out) {
      return [this, &out](const Field& g) {
        const std::string text = g.value.IsScalar() ? g.value.Scalar() : "";
        char* end = nullptr;
        const double v = std::strtod(text.c_str(), &end);
        if (text.empty() || end != text.c_str() + text.size() || !std::isfinite(v) || v < 0) {
          bad_value(g, " must be an amount in USD >= 0 (e.g. 2.49), got " + describe(g.value));
          return;
        }
        out = v;
      };
    };
    const Handlers handlers = {
        {"kind", checked(remote.kind, is_remote_kind,
                         "one of remote_ssh, cloud_vm, cloud_container, cloud_serverless, "
                         "cloud_gpu, cloud_cpu")},
        {"provider", text(remote.provider)},
        {"region", text(remote.region)},
        {"gpu_type", text(remote.gpu_type)},
        {"gpu_count", number(remote.gpu_count, 0, 64)},
        {"cost_per_hour", money(remote.cost_per_hour)},
        {"budget", money(remote.budget)},
        {"provision", [&](const Field& g) { read_argv(g, remote.provision); }},
        {"status", [&](const Field& g) { read_argv(g, remote.status); }},
        {"terminate", [&](const Field& g) { read_argv(g, remote.terminate); }},
        {"command_timeout", duration(remote.command_timeout, true)},
        {"status_interval", duration(remote.status_interval, true)},
        {"idle_timeout", duration(remote.idle_timeout, false)},
    };
    visit_map(f.value, "in 'remote' of " + service, handlers);
  }

  void read_hook(const Field& f, const std::string& service, HookSpec& hook) {
    if (!expect_map(f, "a map with 'http' or 'exec'")) return;
    const Handlers handlers = {
        {"http", checked(hook.http, is_http_url, "a URL starting with http://")},
        {"method", checked(hook.method, is_http_method, "GET, POST, PUT, PATCH or DELETE")},
        {"body", text(hook.body)},
        {"exec", [&](const Field& g) { read_argv(g, hook.exec); }},
        {"timeout", duration(hook.timeout, true)},
    };
    visit_map(f.value, "in '" + f.key + "' of " + service, handlers);
    const bool http = static_cast<bool>(f.value["http"]), exec = static_cast<bool>(f.value["exec"]);
    if (http == exec) {
      report(f.key_node.Mark(), quote(f.key) + " of " + service +
                                    (http ? " has both 'http' and 'exec'; set one"
                                          : " needs 'http' (a URL) or 'exec' (a command)"));
    }
  }

  // A list of strings, each of which must pass `valid`.
  void read_list(const Field& f, std::vector<std::string>& out, bool (*valid)(std::string_view),
                 std::string_view expected) {
    if (!f.value.IsSequence()) {
      bad_value(f, " must be a list of strings, got " + describe(f.value));
      return;
    }
    for (const auto& item : f.value) {
      if (!item.IsScalar() || !valid(item.Scalar())) {
        report(item.Mark(), "each of " + quote(f.key) + " must be " + std::string(expected) +
                                ", got " + describe(item));
        continue;
      }
      out.push_back(item.Scalar());
    }
  }

  // Runs once the service's map has been read: `shell` may come after `command`.
  void read_command(const Field& f, ServiceSpec& spec) {
    if (f.value.IsScalar() && !spec.shell) {
      bad_value(f,
                " is a single string: write it as a list ([program, arg, ...]), or set "
                "'shell: true' to run it with /bin/sh -c");
    } else if (f.value.IsScalar() && f.value.Scalar().empty()) {
      bad_value(f, " must not be empty");
    } else if (f.value.IsScalar()) {
      spec.command = {f.value.Scalar()};
    } else if (spec.shell && f.value.IsSequence()) {
      bad_value(f, " must be a single string for /bin/sh -c when 'shell: true', got a list");
    } else {
      read_argv(f, spec.command);
    }
  }

  void read_runtime(const Field& f, RuntimeKind& out) {
    std::string text;
    if (!read_string(f, text)) return;
    if (text == "process") {
      out = RuntimeKind::kProcess;
    } else if (text == "docker") {
      out = RuntimeKind::kDocker;
    } else if (text == "external") {
      out = RuntimeKind::kExternal;
    } else if (text == "remote") {
      out = RuntimeKind::kRemote;
    } else if (text == "kubernetes") {
      report(value_mark(f), "runtime " + quote(text) +
                                " is declared but not supported yet (supported: process, docker, "
                                "external, remote)");
    } else {
      report(value_mark(f),
             "unknown runtime " + quote(text) + " (valid: process, docker, external, remote)");
    }
  }

  void read_restart(const Field& f, RestartPolicy& out) {
    // YAML 1.1 reads a plain `no` as false, but yaml-cpp hands over the scalar's text, so the
    // policy is matched as text.
    std::string text;
    if (!read_string(f, text)) return;
    if (text == "no") {
      out = RestartPolicy::kNo;
    } else if (text == "on-failure") {
      out = RestartPolicy::kOnFailure;
    } else if (text == "always") {
      out = RestartPolicy::kAlways;
    } else {
      report(value_mark(f),
             "unknown restart policy " + quote(text) + " (valid: no, on-failure, always)");
    }
  }

  void read_env(const Field& f, std::map<std::string, std::string>& out) {
    if (!expect_map(f, "a map of NAME: value")) return;
    auto variable = [&](const Field& g) {
      if (!valid_env_name(g.key)) {
        report(g.key_node.Mark(), "invalid env name " + quote(g.key) +
                                      " (use letters, digits and '_', not starting with a digit)");
      } else if (!g.value.IsScalar()) {
        bad_value(g, " must be a string, got " + describe(g.value) + " (\"\" for an empty value)");
      } else {
        out[g.key] = g.value.Scalar();  // numbers and booleans keep the text the user wrote
      }
    };
    visit_map(f.value, "", {}, variable);
  }

  void read_phases(const Field& f, std::vector<int>& out) {
    if (!f.value.IsSequence()) {
      bad_value(f, " must be a list of integers >= 0 (e.g. [4]), got " + describe(f.value));
      return;
    }
    for (const auto& item : f.value) {
      int phase = 0;
      if (read_int(Field{f.key, f.key_node, item}, phase, 0)) out.push_back(phase);
    }
  }

  void read_health(const Field& f, const std::string& service, HealthSpec& health) {
    if (!expect_map(f, "a map")) return;
    const Handlers handlers = {
        {"http", checked(health.http, is_http_url, "a URL starting with http://")},
        {"tcp", checked(health.tcp, is_host_port, kHostPort)},
        {"exec", [&](const Field& g) { read_argv(g, health.exec); }},
        {"interval", duration(health.interval, true)},
        {"timeout", duration(health.timeout, true)},
        {"failure_threshold", number(health.failure_threshold, 1)},
        {"startup_poll_cap", duration(health.startup_poll_cap, true)},
    };
    visit_map(f.value, "in 'health' of " + service, handlers);
    std::string first_check;  // exactly one of http / tcp / exec
    for (auto it = f.value.begin(); it != f.value.end(); ++it) {
      const std::string key = it->first.IsScalar() ? it->first.Scalar() : "";
      if (key != "http" && key != "tcp" && key != "exec") continue;
      if (first_check.empty()) first_check = key;
      if (key == first_check) continue;  // a repeat is reported as a duplicate key
      report(it->first.Mark(), "'health' has both " + quote(first_check) + " and " + quote(key) +
                                   "; set exactly one of 'http', 'tcp', 'exec'");
    }
  }

  std::string origin_;
  std::vector<Problem> problems_;
};

}  // namespace

Result<Config> load_config_string(const std::string& text, const std::string& origin) {
  try {
    return Loader(origin).load(text);
  } catch (...) {
    // Loader turns what yaml-cpp throws into messages; this is for the rest, such as bad_alloc.
    return make_error(ErrorCode::kBadRequest, origin + ": cannot load config");
  }
}

Result<Config> load_config_file(const std::string& path) {
  // Read here rather than with YAML::LoadFile, which reports every failure as "bad file" and
  // loses errno.
  auto cannot_read = [&](int err) {
    return make_error(ErrorCode::kBadRequest, path + ": cannot read: " + std::strerror(err));
  };
  const int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return cannot_read(errno);
  std::string text;
  char buffer[65536];
  for (;;) {
    const ssize_t n = read(fd, buffer, sizeof buffer);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      const int err = errno;
      close(fd);
      return cannot_read(err);
    }
    if (n == 0) break;
    text.append(buffer, static_cast<size_t>(n));
  }
  close(fd);
  return load_config_string(text, path);
}

}  // namespace gpuvisor
