#include "plugins/registry.h"

#include <algorithm>
#include <filesystem>
#include <fstream>

#include "plugins/schema.h"
#include "runtime/atomic_file.h"

namespace gpuvisor {

namespace fs = std::filesystem;
using nlohmann::json;

Result<PluginRegistry> PluginRegistry::load(const Sources& sources) {
  PluginRegistry r;
  r.category_names_ = sources.categories;
  r.config_dir_ = sources.config_dir;
  std::vector<std::string> problems;
  std::vector<Result<PluginManifest>> loaded;
  if (!sources.dir.empty()) {
    std::error_code ec;
    if (!fs::is_directory(sources.dir, ec)) {
      problems.push_back(sources.dir + ": the plugins directory does not exist");
    } else {
      std::vector<fs::path> files;
      for (const auto& e : fs::directory_iterator(sources.dir, ec)) {
        const auto ext = e.path().extension().string();
        if (e.is_regular_file() && (ext == ".yaml" || ext == ".yml" || ext == ".json")) {
          files.push_back(e.path());
        }
      }
      std::sort(files.begin(), files.end());
      for (const auto& f : files) loaded.push_back(load_manifest_file(f.string()));
    }
  }
  for (size_t i = 0; i < sources.inline_manifests.size(); ++i) {
    const std::string origin = i < sources.inline_origins.size()
                                   ? sources.inline_origins[i]
                                   : "plugins.manifests[" + std::to_string(i) + "]";
    loaded.push_back(parse_manifest(sources.inline_manifests[i], origin));
  }
  std::map<std::string, std::string> seen;  // id -> origin
  for (auto& m : loaded) {
    if (!m) {
      problems.push_back(m.error().message);
      continue;
    }
    if (!m->service.empty() && sources.services.count(m->service) == 0) {
      problems.push_back(m->origin + ": service '" + m->service + "' is not in the config");
      continue;
    }
    if (const auto dup = seen.find(m->id); dup != seen.end()) {
      problems.push_back(m->origin + ": plugin " + m->id + " is already declared in " +
                         dup->second);
      continue;
    }
    seen[m->id] = m->origin;
    r.plugins_.push_back(std::move(*m));
  }
  if (!problems.empty()) {
    std::string message;
    for (const auto& p : problems) message += (message.empty() ? "" : "\n") + p;
    return make_error(ErrorCode::kBadRequest, message);
  }
  if (!r.config_dir_.empty()) {
    std::error_code ec;
    fs::create_directories(r.config_dir_, ec);
    if (ec) {
      return make_error(ErrorCode::kFailed, r.config_dir_ + ": cannot create: " + ec.message());
    }
  }
  return r;
}

const PluginManifest* PluginRegistry::find(const std::string& id) const {
  const auto it = std::find_if(plugins_.begin(), plugins_.end(),
                               [&](const PluginManifest& p) { return p.id == id; });
  return it == plugins_.end() ? nullptr : &*it;
}

Result<const PluginManifest*> PluginRegistry::checked(const std::string& id) const {
  if (!valid_plugin_id(id)) {
    return make_error(
        ErrorCode::kBadRequest,
        "invalid plugin id '" + id + "' (letters, digits, '_', '-', '.'; no path separators)");
  }
  const auto* p = find(id);
  if (p == nullptr) return make_error(ErrorCode::kNotFound, "no plugin '" + id + "'");
  return p;
}

std::vector<const PluginManifest*> PluginRegistry::list(const PluginFilter& f) const {
  std::vector<const PluginManifest*> out;
  for (const auto& p : plugins_) {
    if (!f.category.empty() && p.category != f.category) continue;
    if (f.mode && p.mode != *f.mode) continue;
    if (f.cloud && p.cloud != *f.cloud) continue;
    if (f.configured && configured(p.id) != *f.configured) continue;
    out.push_back(&p);
  }
  return out;
}

std::map<std::string, std::string> PluginRegistry::categories() const {
  auto out = category_names_;
  for (const auto& p : plugins_) out.emplace(p.category, p.category);
  return out;
}

std::string PluginRegistry::config_path(const std::string& id) const {
  return config_dir_ + "/" + id + ".json";
}

bool PluginRegistry::configured(const std::string& id) const {
  std::error_code ec;
  return !config_dir_.empty() && fs::exists(config_path(id), ec);
}

Result<json> PluginRegistry::config(const std::string& id) const {
  auto p = checked(id);
  if (!p) return p.error();
  std::ifstream in(config_path(id));
  if (!in) return make_error(ErrorCode::kNotFound, "plugin " + id + " is not configured");
  auto j = json::parse(in, nullptr, false);
  if (j.is_discarded()) {
    return make_error(ErrorCode::kFailed, config_path(id) +
                                              " is not valid JSON: set the config again, or "
                                              "delete it");
  }
  return j;
}

Result<json> PluginRegistry::config_or_defaults(const std::string& id) const {
  auto saved = config(id);
  if (saved || saved.error().code != ErrorCode::kNotFound || find(id) == nullptr) return saved;
  return apply_defaults((*checked(id))->config_schema, json::object());
}

Result<json> PluginRegistry::set_config(const std::string& id, const json& value) {
  auto p = checked(id);
  if (!p) return p.error();
  const json filled = apply_defaults((*p)->config_schema, value);
  const auto violations = validate((*p)->config_schema, filled);
  if (!violations.empty()) {
    std::string message = "config for " + id + " does not match its schema:";
    json list = json::array();
    for (const auto& v : violations) {
      message +=
          "\n  " + (v.path.empty() ? std::string("(the config)") : v.path) + ": " + v.message;
      list.push_back({{"path", v.path}, {"message", v.message}});
    }
    Error error = make_error(ErrorCode::kBadRequest, message);
    error.detail = {{"violations", list}};
    return error;
  }
  if (auto saved = write_file_atomically(config_path(id), filled.dump(2) + "\n"); !saved) {
    return saved.error();
  }
  if (on_change_) on_change_(id);
  return filled;
}

Status PluginRegistry::delete_config(const std::string& id) {
  auto p = checked(id);
  if (!p) return p.error();
  std::error_code ec;
  if (!fs::remove(config_path(id), ec)) {
    if (ec) return make_error(ErrorCode::kFailed, config_path(id) + ": " + ec.message());
    return make_error(ErrorCode::kNotFound, "plugin " + id + " is not configured");
  }
  if (on_change_) on_change_(id);
  return {};
}

json PluginRegistry::stats(const std::function<bool(const std::string&)>& active) const {
  const auto count = [&](const std::vector<const PluginManifest*>& ps) {
    json c = {{"total", 0}, {"configured", 0}, {"unconfigured", 0},
              {"local", 0}, {"cloud", 0},      {"with_active_resources", 0}};
    for (const auto* p : ps) {
      c["total"] = c["total"].get<int>() + 1;
      const char* conf = configured(p->id) ? "configured" : "unconfigured";
      c[conf] = c[conf].get<int>() + 1;
      const char* where = p->cloud ? "cloud" : "local";
      c[where] = c[where].get<int>() + 1;
      if (!p->service.empty() && active(p->service)) {
        c["with_active_resources"] = c["with_active_resources"].get<int>() + 1;
      }
    }
    return c;
  };
  json out = count(list({}));
  json per = json::object();
  for (const auto& [category, display] : categories()) {
    PluginFilter f;
    f.category = category;
    json c = count(list(f));
    c["name"] = display;
    per[category] = c;
  }
  out["categories"] = per;
  return out;
}

}  // namespace gpuvisor
