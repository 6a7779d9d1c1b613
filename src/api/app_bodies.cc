#include "api/app_bodies.h"

#include <algorithm>
#include <cctype>
#include <charconv>
#include <limits>
#include <set>

#include "core/duration.h"

namespace gpuvisor {

using nlohmann::json;

namespace {

Error bad(const std::string& what) {
  return make_error(ErrorCode::kBadRequest, what);
}

Result<json> object_body(const std::string& body, const std::string& what,
                         const std::set<std::string>& fields) {
  auto j = json::parse(body, nullptr, false);
  if (!j.is_object()) return bad("the body must be " + what + ", a JSON object");
  for (const auto& [key, value] : j.items()) {
    if (fields.count(key) == 0) {
      std::string known;
      for (const auto& f : fields) known += (known.empty() ? "" : ", ") + f;
      return bad("unknown field '" + key + "' (known: " + known + ")");
    }
  }
  return j;
}

// A string field: absent (nullopt), null (an empty inner optional, where allowed) or a string.
Result<Change<std::string>> text(const json& j, const std::string& key, bool nullable) {
  if (!j.contains(key)) return Change<std::string>();
  const json& v = j[key];
  if (v.is_null() && nullable) return Change<std::string>(std::optional<std::string>());
  if (!v.is_string() || v.get_ref<const std::string&>().empty()) {
    return bad("'" + key + "' must be a non-empty string" + (nullable ? " or null" : "") +
               ", got " + v.dump());
  }
  return Change<std::string>(v.get<std::string>());
}

// "config": absent (nullopt), or an object or null (a plugin's config, or none).
Result<std::optional<json>> config_field(const json& j) {
  if (!j.contains("config")) return std::optional<json>();
  const json& config = j["config"];
  if (!config.is_object() && !config.is_null()) {
    return bad("'config' must be an object or null, got " + config.dump());
  }
  return std::optional<json>(config);
}

Result<pid_t> pid_field(const json& j) {
  if (!j.contains("pid")) return bad("'pid' is required: the worker process's PID");
  const json& v = j["pid"];
  if (!v.is_number_integer() || v.get<int64_t>() <= 0 ||
      v.get<int64_t>() > std::numeric_limits<pid_t>::max()) {
    return bad("'pid' must be a positive integer, got " + v.dump());
  }
  return static_cast<pid_t>(v.get<int64_t>());
}

bool valid_event_type(const std::string& type) {
  return !type.empty() && type.size() <= 128 && std::all_of(type.begin(), type.end(), [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) != 0 || c == '.' || c == '_' || c == '-' ||
           c == ':';
  });
}

}  // namespace

Result<OutsideRegistration> parse_registration(const std::string& body) {
  auto j = object_body(body, "the worker to register",
                       {"pid", "worker_type", "plugin_id", "plugin_name", "config"});
  if (!j) return j.error();
  OutsideRegistration r;
  auto pid = pid_field(*j);
  if (!pid) return pid.error();
  r.pid = *pid;
  auto type = text(*j, "worker_type", false);
  if (!type) return type.error();
  if (!*type) return bad("'worker_type' is required (e.g. \"transcription\", \"llm\")");
  r.worker_type = ***type;
  auto plugin_id = text(*j, "plugin_id", true);
  if (!plugin_id) return plugin_id.error();
  if (*plugin_id) r.plugin_id = **plugin_id;
  auto plugin_name = text(*j, "plugin_name", true);
  if (!plugin_name) return plugin_name.error();
  if (*plugin_name) r.plugin_name = **plugin_name;
  auto config = config_field(*j);
  if (!config) return config.error();
  if (*config) r.config = **config;
  return r;
}

Result<WorkerUpdate> parse_worker_update(const std::string& body) {
  auto j = object_body(
      body, "the fields to change",
      {"status", "job_id", "plugin_name", "plugin_id", "loaded_plugin_resource", "config"});
  if (!j) return j.error();
  WorkerUpdate u;
  auto status = text(*j, "status", false);
  if (!status) return status.error();
  if (*status) u.status = **status;
  const std::pair<const char*, Change<std::string>*> fields[] = {
      {"job_id", &u.job},
      {"plugin_name", &u.plugin_name},
      {"plugin_id", &u.plugin},
      {"loaded_plugin_resource", &u.loaded_resource}};
  for (const auto& [key, field] : fields) {
    auto value = text(*j, key, true);
    if (!value) return value.error();
    *field = std::move(*value);
  }
  auto config = config_field(*j);
  if (!config) return config.error();
  u.config = *config;
  return u;
}

Result<AppEvent> parse_app_event(const std::string& body) {
  auto j = object_body(body, "the event", {"type", "data"});
  if (!j) return j.error();
  if (!j->contains("type")) return bad("'type' is required (e.g. \"transcription.progress\")");
  const json& type = (*j)["type"];
  if (!type.is_string() || !valid_event_type(type.get<std::string>())) {
    return bad("'type' must be 1 to 128 letters, digits, '.', '_', '-' or ':', got " + type.dump());
  }
  AppEvent e{type.get<std::string>()};
  if (j->contains("data")) e.data = (*j)["data"];
  return e;
}

Result<LeaseRequest> parse_lease(const std::string& body) {
  auto j = object_body(body, "the lease", {"vram_mb", "gpu", "ttl", "pid", "holder"});
  if (!j) return j.error();
  LeaseRequest r;
  constexpr int64_t kMaxMb = int64_t{1} << 30;  // a petabyte: more is a mistake
  const json& mb = j->value("vram_mb", json());
  if (!mb.is_number_integer() || mb.get<int64_t>() <= 0 || mb.get<int64_t>() > kMaxMb) {
    return bad("'vram_mb' must be a positive integer (MiB to reserve), got " + mb.dump());
  }
  r.bytes = static_cast<uint64_t>(mb.get<int64_t>()) << 20;
  if (const json& gpu = j->value("gpu", json()); !gpu.is_null()) {
    if (!gpu.is_number_integer() || gpu.get<int64_t>() < 0 || gpu.get<int64_t>() > 1024) {
      return bad("'gpu' must be a GPU index (0, 1, ...), got " + gpu.dump());
    }
    r.gpu = static_cast<unsigned>(gpu.get<int64_t>());
  }
  if (const json& ttl = j->value("ttl", json()); !ttl.is_null()) {
    std::optional<Millis> d;
    if (ttl.is_number() && ttl.get<double>() > 0 && ttl.get<double>() < 1e9) {
      d = Millis(static_cast<int64_t>(ttl.get<double>() * 1000));
    } else if (ttl.is_string()) {
      d = parse_duration(ttl.get<std::string>());
    }
    if (!d || d->count() <= 0) {
      return bad("'ttl' must be a duration such as \"30s\" or \"10m\", or seconds, got " +
                 ttl.dump());
    }
    r.ttl = d;
  }
  if (j->contains("pid") && !(*j)["pid"].is_null()) {
    auto pid = pid_field(*j);
    if (!pid) return pid.error();
    r.pid = *pid;
  }
  auto holder = text(*j, "holder", true);
  if (!holder) return holder.error();
  if (*holder && **holder) r.holder = ***holder;
  return r;
}

Result<pid_t> parse_pid(const std::string& text) {
  pid_t pid = 0;
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), pid);
  if (ec != std::errc() || end != text.data() + text.size() || pid <= 0) {
    return bad("'" + text + "' is not a PID (a positive integer)");
  }
  return pid;
}

}  // namespace gpuvisor
