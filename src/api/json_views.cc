#include "api/json_views.h"

namespace gpuvisor {

namespace http = boost::beast::http;

nlohmann::json to_json(const ServiceView& v) {
  const ServiceSpec& s = *v.spec;
  nlohmann::json health = nlohmann::json::object();
  if (!s.health.http.empty()) health["http"] = s.health.http;
  if (!s.health.tcp.empty()) health["tcp"] = s.health.tcp;
  if (!s.health.exec.empty()) health["exec"] = s.health.exec;
  return {
      {"name", s.name},
      {"description", s.description},
      {"runtime", to_string(s.runtime)},
      {"mode", execution_mode(s)},
      {"container", v.container.empty() ? nlohmann::json(nullptr) : nlohmann::json(v.container)},
      {"state", to_string(v.state)},
      {"reason", v.reason},
      {"since_ms", v.since_unix_ms},
      {"generation", v.generation},
      {"pid", v.pid},
      {"started_ms", v.started_unix_ms},
      {"adopted", v.adopted},
      {"restarts", v.restarts},
      {"last_exit", v.last_exit},
      {"last_health_check", v.last_probe},
      {"priority", s.priority},
      {"vram_mb", s.vram_mb},
      {"gpu", v.gpus.empty() ? nlohmann::json(nullptr) : nlohmann::json(v.gpus.front())},
      {"gpus", v.gpus},
      {"gpu_count", s.gpu_count},
      {"measured_vram_bytes", v.measured_vram_bytes},
      {"residual_vram_bytes", v.residual_vram_bytes},
      {"reload_seconds", v.reload_seconds},
      {"wake_seconds", v.wake_seconds},
      {"sleeps", !s.sleep.empty()},
      {"phases", s.phases},
      {"autostart", s.autostart},
      {"restart_policy", to_string(s.restart)},
      {"health", health},
      {"remote", v.details.is_object() ? v.details : nlohmann::json(nullptr)},
  };
}

nlohmann::json error_json(const Error& error) {
  nlohmann::json body = {{"code", to_string(error.code)}, {"message", error.message}};
  if (!error.context.empty()) body["log_tail"] = error.context;
  if (error.detail.is_object()) {
    for (const auto& [k, v] : error.detail.items()) body[k] = v;
  }
  return {{"error", body}};
}

http::status http_status(ErrorCode code) {
  switch (code) {
    case ErrorCode::kBadRequest:
      return http::status::bad_request;
    case ErrorCode::kNotFound:
      return http::status::not_found;
    case ErrorCode::kConflict:
      return http::status::conflict;
    case ErrorCode::kTimeout:
      return http::status::gateway_timeout;
    case ErrorCode::kUnavailable:
      return http::status::service_unavailable;
    case ErrorCode::kFailed:
      return http::status::internal_server_error;
    case ErrorCode::kUnauthorized:
      return http::status::unauthorized;
    case ErrorCode::kMethodNotAllowed:
      return http::status::method_not_allowed;
    case ErrorCode::kTooLarge:
      return http::status::payload_too_large;
    case ErrorCode::kBadGateway:
      return http::status::bad_gateway;
    case ErrorCode::kForbidden:
      return http::status::forbidden;
  }
  return http::status::internal_server_error;
}

}  // namespace gpuvisor
