#include "plugins/manifest.h"

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <fstream>
#include <sstream>

#include "config/yaml_json.h"
#include "core/url.h"
#include "plugins/schema.h"

namespace gpuvisor {

using nlohmann::json;

const char* to_string(PluginMode mode) {
  return mode == PluginMode::kWorker ? "worker" : "http";
}

const char* to_string(WorkerRestart restart) {
  switch (restart) {
    case WorkerRestart::kNever:
      return "never";
    case WorkerRestart::kOnCancellation:
      return "on_cancellation";
    case WorkerRestart::kAlways:
      return "always";
  }
  return "?";
}

bool valid_plugin_id(const std::string& id) {
  if (id.empty() || id.size() > 128 || id.front() == '.' || id.front() == '-') return false;
  return std::all_of(id.begin(), id.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
           c == '-' || c == '.';
  });
}

namespace {

struct Checker {
  const json& m;
  std::string origin;
  std::vector<std::string> problems;

  void bad(const std::string& what) { problems.push_back(origin + ": " + what); }

  std::string text(const char* key, bool required) {
    if (!m.contains(key)) {
      if (required) bad(std::string("'") + key + "' is required");
      return "";
    }
    if (!m[key].is_string()) {
      bad(std::string("'") + key + "' must be a string, got " + m[key].dump());
      return "";
    }
    return m[key].get<std::string>();
  }
};

std::optional<Millis> duration_of(const json& v) {
  if (!v.is_string()) return std::nullopt;
  return parse_duration(v.get<std::string>());
}

void parse_worker(Checker& c, const json& worker, WorkerSpec& w) {
  const json command = worker.is_object() ? worker.value("command", json()) : json();
  const bool ok =
      command.is_array() && !command.empty() &&
      std::all_of(command.begin(), command.end(), [](const json& a) { return a.is_string(); }) &&
      !command.front().get<std::string>().empty();
  if (!ok) {
    c.bad("mode worker needs 'worker: {command: [program, arg, ...]}'");
    return;
  }
  w.command = command.get<std::vector<std::string>>();
  static const std::vector<std::string> kKnown = {
      "command", "conda_env", "restart", "backoff", "backoff_max", "restart_limit", "idle_timeout"};
  for (const auto& [key, value] : worker.items()) {
    if (std::find(kKnown.begin(), kKnown.end(), key) == kKnown.end()) {
      c.bad("unknown key 'worker." + key + "'");
    }
  }
  if (worker.contains("conda_env")) {
    if (worker["conda_env"].is_string() && !worker["conda_env"].get<std::string>().empty()) {
      w.conda_env = worker["conda_env"].get<std::string>();
    } else {
      c.bad("'worker.conda_env' must be an environment name, got " + worker["conda_env"].dump());
    }
  }
  if (worker.contains("restart")) {
    const json& r = worker["restart"];
    if (r == "never") {
      w.restart = WorkerRestart::kNever;
    } else if (r == "on_cancellation") {
      w.restart = WorkerRestart::kOnCancellation;
    } else if (r == "always") {
      w.restart = WorkerRestart::kAlways;
    } else {
      c.bad("'worker.restart' must be never, on_cancellation or always, got " + r.dump());
    }
  }
  const auto duration = [&](const char* key, Millis& out, bool zero_ok) {
    if (!worker.contains(key)) return;
    const auto d = duration_of(worker[key]);
    if (!d || d->count() < (zero_ok ? 0 : 1)) {
      c.bad(std::string("'worker.") + key + "' must be a duration such as 500ms, 5s or 10m, got " +
            worker[key].dump());
    } else {
      out = *d;
    }
  };
  duration("backoff", w.backoff, false);
  duration("backoff_max", w.backoff_max, false);
  duration("idle_timeout", w.idle_timeout, true);
  if (w.backoff_max < w.backoff) {
    c.bad("'worker.backoff_max' must not be shorter than 'worker.backoff'");
  }
  if (worker.contains("restart_limit")) {
    const json& l = worker["restart_limit"];
    if (l.is_number_unsigned() && l.get<unsigned>() <= 1000) {
      w.restart_limit = l.get<unsigned>();
    } else {
      c.bad("'worker.restart_limit' must be an integer from 0 to 1000, got " + l.dump());
    }
  }
}

void check_known_keys(Checker& c) {
  static const std::vector<std::string> kKnown = {
      "name",    "category",    "title", "description", "version",       "mode",         "cloud",
      "service", "concurrency", "http",  "worker",      "config_schema", "queue_timeout"};
  for (const auto& [key, value] : c.m.items()) {
    if (std::find(kKnown.begin(), kKnown.end(), key) == kKnown.end()) {
      c.bad("unknown key '" + key + "'");
    }
  }
}

// The plugin's name and category, the id made of them, and its descriptive texts.
void parse_identity(Checker& c, PluginManifest& p) {
  p.name = c.text("name", true);
  p.category = c.text("category", true);
  p.title = c.text("title", false);
  p.description = c.text("description", false);
  p.version = c.text("version", false);
  p.service = c.text("service", false);
  if (!p.name.empty() && (!valid_plugin_id(p.name) || p.name.find('_') != std::string::npos)) {
    c.bad(
        "'name' must be letters, digits, '-' or '.' (no '_', which joins category and name), "
        "got '" +
        p.name + "'");
  }
  if (!p.category.empty() && !valid_plugin_id(p.category)) {
    c.bad("'category' must be letters, digits, '_', '-' or '.', got '" + p.category + "'");
  }
  p.id = p.category + "_" + p.name;
  if (p.title.empty()) p.title = p.name;
}

void parse_http(Checker& c, const json& http, PluginManifest& p) {
  if (!http.is_object() || !http.contains("url") || !http["url"].is_string() ||
      http["url"].get<std::string>().rfind("http://", 0) != 0) {
    c.bad(
        "mode http needs 'http: {url: http://host:port/endpoint}' (the job's input is the "
        "body)");
    return;
  }
  p.http_url = http["url"].get<std::string>();
  const json method = http.value("method", json("POST"));
  if (method.is_string() && is_http_method(method.get<std::string>())) {
    p.http_method = method.get<std::string>();
  } else {
    c.bad("'http.method' must be one of GET, POST, PUT, PATCH, DELETE, got " + method.dump());
  }
  if (http.contains("timeout")) {
    const auto t = http["timeout"].is_string() ? parse_duration(http["timeout"].get<std::string>())
                                               : std::nullopt;
    if (!t || t->count() <= 0) {
      c.bad("'http.timeout' must be a duration such as 30s or 10m, got " + http["timeout"].dump());
    } else {
      p.http_timeout = *t;
    }
  }
}

}  // namespace

Result<PluginManifest> parse_manifest(const json& m, const std::string& origin) {
  if (!m.is_object()) {
    return make_error(ErrorCode::kBadRequest, origin + ": a plugin manifest must be a map");
  }
  Checker c{m, origin, {}};
  check_known_keys(c);
  PluginManifest p;
  p.origin = origin;
  parse_identity(c, p);
  const std::string mode = c.text("mode", true);
  if (mode == "worker") {
    p.mode = PluginMode::kWorker;
  } else if (mode == "http") {
    p.mode = PluginMode::kHttp;
  } else if (!mode.empty()) {
    c.bad("'mode' must be http or worker, got '" + mode + "'");
  }
  if (m.contains("cloud")) {
    if (m["cloud"].is_boolean()) {
      p.cloud = m["cloud"].get<bool>();
    } else {
      c.bad("'cloud' must be true or false, got " + m["cloud"].dump());
    }
  }
  if (m.contains("concurrency")) {
    if (m["concurrency"].is_number_unsigned() && m["concurrency"].get<unsigned>() >= 1 &&
        m["concurrency"].get<unsigned>() <= 1024) {
      p.concurrency = m["concurrency"].get<unsigned>();
    } else {
      c.bad("'concurrency' must be an integer from 1 to 1024, got " + m["concurrency"].dump());
    }
  }
  if (m.contains("queue_timeout")) {
    const json& t = m["queue_timeout"];
    const auto d = t.is_string() ? parse_duration(t.get<std::string>()) : std::nullopt;
    if (!d || d->count() <= 0) {
      c.bad("'queue_timeout' must be a duration such as 30s or 10m, got " + t.dump());
    } else {
      p.queue_timeout = *d;
    }
  }
  if (p.mode == PluginMode::kHttp && mode == "http") parse_http(c, m.value("http", json()), p);
  if (p.mode == PluginMode::kWorker && mode == "worker")
    parse_worker(c, m.value("worker", json()), p.worker);
  if (m.contains("config_schema")) {
    p.config_schema = m["config_schema"];
    if (auto checked = check_schema(p.config_schema); !checked) {
      // An inline manifest's origin is only its index: the id says which plugin it is.
      const bool named = !p.name.empty() && !p.category.empty();
      c.bad("'config_schema'" + (named ? " of plugin " + p.id : std::string()) + ": " +
            checked.error().message);
    }
  }
  if (!c.problems.empty()) {
    std::string message;
    for (const auto& problem : c.problems) message += (message.empty() ? "" : "\n") + problem;
    return make_error(ErrorCode::kBadRequest, message);
  }
  return p;
}

Result<PluginManifest> load_manifest_file(const std::string& path) {
  std::ifstream in(path);
  if (!in) return make_error(ErrorCode::kNotFound, path + ": cannot be read");
  std::stringstream text;
  text << in.rdbuf();
  json manifest;
  if (path.size() >= 5 && path.compare(path.size() - 5, 5, ".json") == 0) {
    manifest = json::parse(text.str(), nullptr, false);
    if (manifest.is_discarded())
      return make_error(ErrorCode::kBadRequest, path + ": not valid JSON");
  } else {
    try {
      manifest = yaml_text_to_json(text.str());
    } catch (const YAML::Exception& e) {
      return make_error(ErrorCode::kBadRequest, path + ":" + std::to_string(e.mark.line + 1) + ":" +
                                                    std::to_string(e.mark.column + 1) +
                                                    ": YAML syntax error: " + e.msg);
    }
  }
  return parse_manifest(manifest, path);
}

}  // namespace gpuvisor
