// /api/v1/plugins...: the plugin registry and plugin configs (docs/api.md).
#pragma once

#include "api/http_server.h"
#include "api/request_parts.h"
#include "plugins/registry.h"
#include "supervisor/supervisor.h"

namespace gpuvisor {

// parts: the request's path segments and query parameters (not its body).
HttpResponse plugin_response(PluginRegistry& plugins, const Supervisor& supervisor,
                             const HttpRequest& request, const RequestParts& parts);

nlohmann::json plugin_json(const PluginRegistry& plugins, const PluginManifest& p,
                           const Supervisor& supervisor);

}  // namespace gpuvisor
