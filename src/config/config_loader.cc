#include "config/config_loader.h"

#include <fcntl.h>
#include <unistd.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <utility>

#include "config/loader.h"
#include "config/yaml_json.h"
#include "core/url.h"

namespace gpuvisor {

namespace config_detail {

ConfigReport Loader::read(const std::string& text) {
  ConfigReport report_out;
  Config& config = report_out.config;
  config.path = origin_;
  try {
    check_utf8(text);
    const std::vector<YAML::Node> documents = load_all_documents(text);
    read_root(documents.empty() ? YAML::Node() : documents.front(), config);
    // YAML::Load would drop later documents, and what the user put in them, without a word.
    for (size_t i = 1; i < documents.size(); ++i) {
      if (!documents[i].IsNull()) {
        report(documents[i].Mark(), "only one YAML document is allowed; this one would be ignored");
      }
    }
  } catch (const YAML::Exception& e) {
    // Syntax errors and undefined aliases both carry the mark of the offending text.
    report(e.mark, e.mark.is_null() ? e.what() : "YAML syntax error: " + e.msg);
  } catch (const std::exception& e) {
    report(YAML::Mark::null_mark(), std::string("internal error: ") + e.what());
  }
  report_out.problems = render();
  report_out.service_names = service_names_;
  return report_out;
}

void Loader::read_root(const YAML::Node& root, Config& config) {
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
void Loader::check_listen_ports(const YAML::Node& root, const Config& config) {
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
    const std::string what = "service " + quote(s.name) + ": proxy.listen " + quote(s.proxy.listen);
    if (const auto url = parse_http_url(s.proxy.url);
        url && same(*at, HostPort{url->host, url->port})) {
      report(mark, what + " is the service's own proxy.url: it would forward to itself");
      continue;
    }
    const auto clash =
        std::find_if(taken.begin(), taken.end(), [&](const auto& t) { return same(*at, t.first); });
    if (clash != taken.end()) {
      report(mark, what + " is already " + clash->second + "; a port serves one service");
      continue;
    }
    taken.emplace_back(*at, "service " + quote(s.name) + "'s proxy.listen");
  }
}

void Loader::read_plugins(const Field& f, PluginsSpec& plugins) {
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
         for (const auto& m : g.value) {
           plugins.manifests.push_back(yaml_to_json(m));
           plugins.manifest_origins.push_back(origin_ + ":" + position(m.Mark()));
         }
       }},
  };
  visit_map(f.value, "in 'plugins'", handlers);
}

void Loader::read_daemon(const Field& f, DaemonSpec& daemon) {
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
      {"job_retention_count", number(daemon.job_retention_count, 0)},
      {"queue_max_wait", duration(daemon.queue_max_wait, false)},
  };
  visit_map(f.value, "in 'daemon'", handlers);
}

}  // namespace config_detail

namespace {

Result<Config> config_or_error(ConfigReport report) {
  if (report.problems.empty()) return std::move(report.config);
  std::string message;
  for (const auto& p : report.problems) message += (message.empty() ? "" : "\n") + p;
  return make_error(ErrorCode::kBadRequest, message);
}

}  // namespace

ConfigReport read_config_string(const std::string& text, const std::string& origin) {
  try {
    return config_detail::Loader(origin).read(text);
  } catch (...) {
    // Loader turns what yaml-cpp throws into messages; this is for the rest, such as bad_alloc.
    ConfigReport failed;
    failed.config.path = origin;
    failed.problems.push_back(origin + ": cannot load config");
    return failed;
  }
}

ConfigReport read_config_file(const std::string& path) {
  // Read here rather than with YAML::LoadFile, which reports every failure as "bad file" and
  // loses errno.
  auto cannot_read = [&](int err) {
    ConfigReport failed;
    failed.config.path = path;
    failed.problems.push_back(path + ": cannot read: " + std::strerror(err));
    return failed;
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
  return read_config_string(text, path);
}

Result<Config> load_config_string(const std::string& text, const std::string& origin) {
  return config_or_error(read_config_string(text, origin));
}

Result<Config> load_config_file(const std::string& path) {
  return config_or_error(read_config_file(path));
}

}  // namespace gpuvisor
