// Plugin manifests and their config schemas. The first byte picks the input's kind: a JSON or a
// YAML manifest read as load_manifest_file reads one, or a JSON schema and a JSON config
// ("SCHEMA\n---\nVALUE") as PluginRegistry::set_config takes them. A manifest that parses then
// gets the registry's treatment too: its defaults filled in, validated, saved as JSON.
#include <yaml-cpp/yaml.h>

#include <nlohmann/json.hpp>
#include <string>

#include "config/yaml_json.h"
#include "input.h"
#include "plugins/manifest.h"
#include "plugins/schema.h"

namespace {

using nlohmann::json;

void configure(const json& schema, const json& value) {
  const json filled = gpuvisor::apply_defaults(schema, value);
  for (const auto& v : gpuvisor::validate(schema, filled)) (void)json(v.path + v.message).dump();
  (void)filled.dump(2);
}

void manifest(const json& m) {
  const auto parsed = gpuvisor::parse_manifest(m, "fuzz.yaml");
  if (!parsed) {
    (void)json(parsed.error().message).dump();
    return;
  }
  (void)gpuvisor::valid_plugin_id(parsed->id);
  (void)parsed->config_schema.dump();
  configure(parsed->config_schema, json::object());
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const auto in = gpuvisor::fuzz::text(data + 1, size - 1);
  switch (data[0] % 3) {
    case 0: {
      const auto m = json::parse(in, nullptr, false);
      if (!m.is_discarded()) manifest(m);
      break;
    }
    case 1: {
      json m;
      try {
        m = gpuvisor::yaml_text_to_json(std::string(in));
      } catch (const YAML::Exception&) {
        break;  // a syntax error, reported with its mark
      }
      manifest(m);
      break;
    }
    default: {
      const auto [schema_text, value_text] = gpuvisor::fuzz::split(in, "\n---\n");
      const auto schema = json::parse(schema_text, nullptr, false);
      const auto value = json::parse(value_text, nullptr, false);
      if (schema.is_discarded() || value.is_discarded()) break;
      (void)gpuvisor::check_schema(schema);
      if (value.is_object()) configure(schema, value);
      break;
    }
  }
  return 0;
}
