// A plugin as /api/v1/plugins shows it (docs/api.md); the routes themselves are Api's.
#pragma once

#include <nlohmann/json.hpp>

#include "plugins/registry.h"
#include "supervisor/supervisor.h"

namespace gpuvisor {

nlohmann::json plugin_json(const PluginRegistry& plugins, const PluginManifest& p,
                           const Supervisor& supervisor);

}  // namespace gpuvisor
