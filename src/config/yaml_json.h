// YAML to JSON, for what the config carries through untouched (inline plugin manifests and
// their JSON Schemas) and for YAML plugin manifests. Scalars are typed as YAML 1.2's core schema
// would type them (true/false, numbers, null); a quoted scalar is always a string.
#pragma once

#include <yaml-cpp/yaml.h>

#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <vector>

namespace gpuvisor {

nlohmann::json yaml_to_json(const YAML::Node& node);
// Throws YAML::Exception on a syntax error, with its mark.
nlohmann::json yaml_text_to_json(const std::string& text);

// yaml-cpp takes any bytes as text, but JSON (the API's replies, saved configs) takes only
// UTF-8, and dumping a string that is not throws far from where it came in. Throws
// YAML::ParserException at the first byte that is not part of valid UTF-8, or that is a control
// character YAML does not allow (all of C0 but tab, LF and CR; DEL).
void check_utf8(std::string_view text);

// YAML::LoadAll, which in yaml-cpp 0.7 never returns when a document starts with a token that
// cannot start a node (a lone ","): it makes an empty document of it without consuming it, again
// and again. Throws YAML::ParserException there instead, and on every other syntax error.
std::vector<YAML::Node> load_all_documents(const std::string& text);

}  // namespace gpuvisor
