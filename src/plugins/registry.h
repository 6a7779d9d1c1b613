// Every plugin the daemon knows, from the plugins directory and the config, and each one's
// config: validated against its schema before it is saved, one JSON file per plugin in the
// state directory, written atomically.
#pragma once

#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "core/result.h"
#include "plugins/manifest.h"

namespace gpuvisor {

struct PluginFilter {
  std::string category;  // empty: any
  std::optional<PluginMode> mode;
  std::optional<bool> configured;
  std::optional<bool> cloud;  // true: cloud only; false: local only
};

class PluginRegistry {
 public:
  struct Sources {
    std::string dir;                                // *.yaml, *.yml, *.json manifests; empty: none
    std::vector<nlohmann::json> inline_manifests;   // from the config
    std::map<std::string, std::string> categories;  // id -> display name
    std::set<std::string> services;                 // a plugin's service must be one of these
    // Where configs are kept (state_dir/plugins), created by load; empty: none kept, nothing
    // created (`gpuvisor check`).
    std::string config_dir;
    // Where each inline manifest is ("PATH:LINE:COL"), to begin its errors with; where there is
    // none, "plugins.manifests[INDEX]".
    std::vector<std::string> inline_origins = {};
  };

  // Every manifest must load: all problems are reported at once, each with its file.
  static Result<PluginRegistry> load(const Sources& sources);
  PluginRegistry() = default;

  const std::vector<PluginManifest>& all() const { return plugins_; }
  const PluginManifest* find(const std::string& id) const;
  std::vector<const PluginManifest*> list(const PluginFilter& filter) const;
  // Categories in use and declared, with display names (a category's own id if none given).
  std::map<std::string, std::string> categories() const;

  bool configured(const std::string& id) const;
  // The saved config, or NotFound (with the defaults in the message's stead: see
  // config_or_defaults).
  Result<nlohmann::json> config(const std::string& id) const;
  // The saved config, or the schema's defaults when there is none.
  Result<nlohmann::json> config_or_defaults(const std::string& id) const;
  // Validates value (every violation, with its JSON path), fills in defaults, saves it
  // atomically, and returns what was saved. Nothing changes when it is refused.
  Result<nlohmann::json> set_config(const std::string& id, const nlohmann::json& value);
  Status delete_config(const std::string& id);
  // Called with the plugin's id after its config was saved or deleted (its workers reload).
  void on_config_change(std::function<void(const std::string& id)> hook) {
    on_change_ = std::move(hook);
  }

  // Counts for the registry: total, configured, unconfigured, local, cloud, with an active
  // resource (its service running), and the same per category.
  nlohmann::json stats(const std::function<bool(const std::string& service)>& active) const;

 private:
  Result<const PluginManifest*> checked(const std::string& id) const;
  std::string config_path(const std::string& id) const;

  std::vector<PluginManifest> plugins_;
  std::map<std::string, std::string> category_names_;
  std::string config_dir_;
  std::function<void(const std::string&)> on_change_;
};

}  // namespace gpuvisor
