// SPDX-License-Identifier: Apache-2.0
// `gpuvisor check`: the config and its plugins validated as `serve` validates them, with nothing
// started and nothing written (like `nginx -t`).
#pragma once

#include <cstddef>
#include <string>
#include <vector>

#include "core/service_spec.h"
#include "plugins/registry.h"

namespace gpuvisor {

struct CheckReport {
  // Every problem, one line each: "FILE:LINE:COL: what" where the position is known, the
  // config's in document order first, then the plugins'.
  std::vector<std::string> errors;
  size_t services = 0;  // counts of a valid config
  size_t plugins = 0;
};

// Reads the config at path (empty: the embedded demo) and loads its plugins, the plugins
// directory included. The plugins are checked even when the config has problems, against every
// service name the file declares.
CheckReport check_config(const std::string& path);

// Runs check_config and prints its outcome: each error on stderr and a count, or
// "ok: N services, M plugins" on stdout. Returns the exit status: 0 valid, 1 not.
int run_check(const std::string& path);

// What PluginRegistry::load needs from a config; `services` are the names a plugin may use.
// config_dir empty: plugin configs are neither read nor created.
PluginRegistry::Sources plugin_sources(const Config& config,
                                       const std::vector<std::string>& services,
                                       const std::string& config_dir);

}  // namespace gpuvisor
