#include "api/plugin_routes.h"

#include "api/responses.h"

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

HttpResponse method_not_allowed(const HttpRequest& request, const std::string& allowed) {
  HttpResponse response =
      error_response(request, make_error(ErrorCode::kMethodNotAllowed,
                                         std::string(request.method_string()) +
                                             " is not allowed here (allowed: " + allowed + ")"));
  response.set(http::field::allow, allowed);
  return response;
}

HttpResponse config_response(PluginRegistry& plugins, const HttpRequest& request,
                             const std::string& id) {
  const auto ok = [&](const json& body) { return json_response(request, http::status::ok, body); };
  switch (request.method()) {
    case http::verb::get: {
      auto config = plugins.config_or_defaults(id);
      if (!config) return error_response(request, config.error());
      return ok({{"plugin", id}, {"configured", plugins.configured(id)}, {"config", *config}});
    }
    case http::verb::put: {
      const auto body = json::parse(request.body(), nullptr, false);
      if (!body.is_object()) {
        return error_response(request, make_error(ErrorCode::kBadRequest,
                                                  "the body must be the plugin's config, a JSON "
                                                  "object"));
      }
      auto saved = plugins.set_config(id, body);
      if (!saved) return error_response(request, saved.error());
      return ok({{"plugin", id}, {"configured", true}, {"config", *saved}});
    }
    case http::verb::delete_: {
      if (auto deleted = plugins.delete_config(id); !deleted) {
        return error_response(request, deleted.error());
      }
      return ok({{"plugin", id}, {"configured", false}});
    }
    default:
      return method_not_allowed(request, "GET, PUT, DELETE");
  }
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

HttpResponse plugin_response(PluginRegistry& plugins, const Supervisor& supervisor,
                             const HttpRequest& request, const RequestParts& parts) {
  const auto& seg = parts.segments;  // api v1 plugins ...
  const bool get = request.method() == http::verb::get;
  const auto ok = [&](const json& body) { return json_response(request, http::status::ok, body); };
  if (seg.size() == 3) {
    if (!get) return method_not_allowed(request, "GET");
    auto filter = filter_from(parts);
    if (!filter) return error_response(request, filter.error());
    json list = json::array();
    for (const auto* p : plugins.list(*filter))
      list.push_back(plugin_json(plugins, *p, supervisor));
    json categories = json::object();
    for (const auto& [id, name] : plugins.categories()) categories[id] = name;
    return ok({{"plugins", list}, {"categories", categories}});
  }
  if (seg.size() == 4 && seg[3] == "stats") {
    if (!get) return method_not_allowed(request, "GET");
    return ok(plugins.stats([&](const std::string& s) { return running(supervisor, s); }));
  }
  const std::string& id = seg[3];
  if (!valid_plugin_id(id)) {
    return error_response(request,
                          make_error(ErrorCode::kBadRequest,
                                     "invalid plugin id '" + id +
                                         "' (letters, digits, '_', '-', '.'; no path separators)"));
  }
  if (seg.size() == 4) {
    if (!get) return method_not_allowed(request, "GET");
    const auto* p = plugins.find(id);
    if (p == nullptr) {
      return error_response(request, make_error(ErrorCode::kNotFound, "no plugin '" + id + "'"));
    }
    return ok(plugin_json(plugins, *p, supervisor));
  }
  if (seg.size() == 5 && seg[4] == "config") return config_response(plugins, request, id);
  return error_response(
      request, make_error(ErrorCode::kNotFound, "no route " + std::string(request.target())));
}

}  // namespace gpuvisor
