// SPDX-License-Identifier: Apache-2.0
#include "app/check.h"

#include <iostream>
#include <sstream>

#include "app/embedded_config.h"
#include "config/config_loader.h"

namespace gpuvisor {

namespace {

void append_lines(const std::string& text, std::vector<std::string>& out) {
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) {
    if (!line.empty()) out.push_back(line);
  }
}

}  // namespace

PluginRegistry::Sources plugin_sources(const Config& config,
                                       const std::vector<std::string>& services,
                                       const std::string& config_dir) {
  PluginRegistry::Sources sources;
  sources.dir = config.plugins.dir;
  sources.inline_manifests = config.plugins.manifests;
  sources.inline_origins = config.plugins.manifest_origins;
  sources.categories = config.plugins.categories;
  sources.services.insert(services.begin(), services.end());
  sources.config_dir = config_dir;
  return sources;
}

CheckReport check_config(const std::string& path) {
  ConfigReport read = path.empty() ? read_config_string(kEmbeddedConfig, "<embedded demo>")
                                   : read_config_file(path);
  CheckReport report;
  report.errors = std::move(read.problems);
  // Every declared name, valid or not: a plugin that names a service with a problem of its own
  // would otherwise be reported as naming no service at all.
  const auto plugins = PluginRegistry::load(plugin_sources(read.config, read.service_names, ""));
  if (!plugins) append_lines(plugins.error().message, report.errors);
  if (report.errors.empty()) {
    report.services = read.config.services.size();
    report.plugins = plugins->all().size();
  }
  return report;
}

int run_check(const std::string& path) {
  const CheckReport report = check_config(path);
  const std::string what = path.empty() ? "the embedded demo config" : path;
  if (report.errors.empty()) {
    const auto count = [](size_t n, const char* noun) {
      return std::to_string(n) + " " + noun + (n == 1 ? "" : "s");
    };
    std::cout << "ok: " << count(report.services, "service") << ", "
              << count(report.plugins, "plugin") << " in " << what << "\n";
    return 0;
  }
  for (const auto& e : report.errors) std::cerr << e << "\n";
  std::cerr << what << ": " << report.errors.size()
            << (report.errors.size() == 1 ? " error" : " errors") << "\n";
  return 1;
}

}  // namespace gpuvisor
