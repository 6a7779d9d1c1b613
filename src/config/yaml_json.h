// YAML to JSON, for what the config carries through untouched (inline plugin manifests and
// their JSON Schemas) and for YAML plugin manifests. Scalars are typed as YAML 1.2's core schema
// would type them (true/false, numbers, null); a quoted scalar is always a string.
#pragma once

#include <yaml-cpp/yaml.h>

#include <nlohmann/json.hpp>
#include <string>

namespace gpuvisor {

nlohmann::json yaml_to_json(const YAML::Node& node);
// Throws YAML::Exception on a syntax error, with its mark.
nlohmann::json yaml_text_to_json(const std::string& text);

}  // namespace gpuvisor
