// The plugin routes of Api (docs/api.md, "Plugins"), and the plugin object they answer with.
#include "api/plugin_routes.h"

#include "api/responses.h"
#include "api/routes.h"

namespace gpuvisor {

namespace http = boost::beast::http;
using nlohmann::json;

namespace {

bool running(const Supervisor& supervisor, const std::string& service) {
  auto v = supervisor.get(service);
  return v && (v->state == ServiceState::kReady || v->state == ServiceState::kBusy ||
               v->state == ServiceState::kStarting);
}

Result<PluginFilter> filter_from(const RequestParts& parts) {
  PluginFilter f;
  const auto& p = parts.params;
  if (const auto it = p.find("category"); it != p.end()) f.category = it->second;
  if (const auto it = p.find("mode"); it != p.end()) {
    if (it->second == "http") {
      f.mode = PluginMode::kHttp;
    } else if (it->second == "worker") {
      f.mode = PluginMode::kWorker;
    } else {
      return make_error(ErrorCode::kBadRequest,
                        "bad mode '" + it->second + "': expected http or worker");
    }
  }
  if (const auto it = p.find("location"); it != p.end()) {
    if (it->second != "local" && it->second != "cloud") {
      return make_error(ErrorCode::kBadRequest,
                        "bad location '" + it->second + "': expected local or cloud");
    }
    f.cloud = it->second == "cloud";
  }
  if (p.count("configured") != 0) {
    auto configured = bool_param(parts, "configured", false);
    if (!configured) return configured.error();
    f.configured = *configured;
  }
  return f;
}

// The {id} of a plugin route, refused before it names a file.
Result<std::string> plugin_id(const RouteMatch& match) {
  const std::string& id = match.arg("id");
  if (!valid_plugin_id(id)) {
    return make_error(
        ErrorCode::kBadRequest,
        "invalid plugin id '" + id + "' (letters, digits, '_', '-', '.'; no path separators)");
  }
  return id;
}

}  // namespace

json plugin_json(const PluginRegistry& plugins, const PluginManifest& p,
                 const Supervisor& supervisor) {
  json out = {{"id", p.id},
              {"name", p.name},
              {"category", p.category},
              {"title", p.title},
              {"description", p.description},
              {"version", p.version},
              {"mode", to_string(p.mode)},
              {"location", p.cloud ? "cloud" : "local"},
              {"service", p.service.empty() ? json(nullptr) : json(p.service)},
              {"concurrency", p.concurrency},
              {"queue_timeout", format_duration(p.queue_timeout)},
              {"configured", plugins.configured(p.id)},
              {"active", !p.service.empty() && running(supervisor, p.service)},
              {"config_schema", p.config_schema}};
  if (p.mode == PluginMode::kHttp) {
    out["http"] = {{"method", p.http_method},
                   {"url", p.http_url},
                   {"timeout", format_duration(p.http_timeout)}};
  } else {
    const auto& w = p.worker;
    out["worker"] = {{"command", w.command},
                     {"conda_env", w.conda_env.empty() ? json(nullptr) : json(w.conda_env)},
                     {"restart", to_string(w.restart)},
                     {"backoff", format_duration(w.backoff)},
                     {"backoff_max", format_duration(w.backoff_max)},
                     {"restart_limit", w.restart_limit},
                     {"idle_timeout", format_duration(w.idle_timeout)}};
  }
  return out;
}

HttpResponse Api::plugins(const Call& call) {
  auto filter = filter_from(call.match.parts);
  if (!filter) return error_response(call.request, filter.error());
  json list = json::array();
  for (const auto* p : plugins_.list(*filter))
    list.push_back(plugin_json(plugins_, *p, supervisor_));
  json categories = json::object();
  for (const auto& [id, name] : plugins_.categories()) categories[id] = name;
  return ok(call.request, {{"plugins", list}, {"categories", categories}});
}

HttpResponse Api::plugin_stats(const Call& call) {
  return ok(call.request,
            plugins_.stats([this](const std::string& s) { return running(supervisor_, s); }));
}

HttpResponse Api::plugin(const Call& call) {
  const auto id = plugin_id(call.match);
  if (!id) return error_response(call.request, id.error());
  const auto* p = plugins_.find(*id);
  if (p == nullptr) {
    return error_response(call.request,
                          make_error(ErrorCode::kNotFound, "no plugin '" + *id + "'"));
  }
  return ok(call.request, plugin_json(plugins_, *p, supervisor_));
}

HttpResponse Api::plugin_config(const Call& call) {
  const auto id = plugin_id(call.match);
  if (!id) return error_response(call.request, id.error());
  auto config = plugins_.config_or_defaults(*id);
  if (!config) return error_response(call.request, config.error());
  return ok(call.request,
            {{"plugin", *id}, {"configured", plugins_.configured(*id)}, {"config", *config}});
}

HttpResponse Api::put_plugin_config(const Call& call) {
  const auto id = plugin_id(call.match);
  if (!id) return error_response(call.request, id.error());
  const auto body = json::parse(call.request.body(), nullptr, false);
  if (!body.is_object()) {
    return error_response(
        call.request,
        make_error(ErrorCode::kBadRequest, "the body must be the plugin's config, a JSON object"));
  }
  auto saved = plugins_.set_config(*id, body);
  if (!saved) return error_response(call.request, saved.error());
  return ok(call.request, {{"plugin", *id}, {"configured", true}, {"config", *saved}});
}

HttpResponse Api::delete_plugin_config(const Call& call) {
  const auto id = plugin_id(call.match);
  if (!id) return error_response(call.request, id.error());
  if (auto deleted = plugins_.delete_config(*id); !deleted) {
    return error_response(call.request, deleted.error());
  }
  return ok(call.request, {{"plugin", *id}, {"configured", false}});
}

}  // namespace gpuvisor
