#include "plugins/schema.h"

#include <memory>
#include <valijson/adapters/nlohmann_json_adapter.hpp>
#include <valijson/schema.hpp>
#include <valijson/schema_parser.hpp>
#include <valijson/validation_results.hpp>
#include <valijson/validator.hpp>

#include "plugins/re2_pattern.h"
#include "plugins/schema_traps.h"

namespace gpuvisor {

namespace {

// valijson's context ["<root>", "[voice]", "[0]"] as a JSON pointer "/voice/0".
std::string pointer(const std::vector<std::string>& context) {
  std::string out;
  for (const auto& part : context) {
    if (part == "<root>") continue;
    std::string p = part;
    if (p.size() >= 2 && p.front() == '[' && p.back() == ']') p = p.substr(1, p.size() - 2);
    if (p.size() >= 2 && p.front() == '"' && p.back() == '"') p = p.substr(1, p.size() - 2);
    out += "/" + p;
  }
  return out;
}

// valijson repeats each failure on every enclosing level ("Failed to validate against schema
// associated with property name 'x'."); the innermost one says what is wrong.
bool summary(const std::string& description) {
  return description.rfind("Failed to validate against schema associated with", 0) == 0 ||
         description.rfind("Failed to validate item #", 0) == 0 ||
         description.rfind("Failed to validate against child schema", 0) == 0;
}

// valijson's Schema can be neither copied nor moved.
Result<std::unique_ptr<valijson::Schema>> parse(const nlohmann::json& schema) {
  if (!schema.is_object()) {
    return make_error(ErrorCode::kBadRequest, "the config schema must be a JSON object");
  }
  if (auto bad = find_schema_trap(schema)) {
    return make_error(ErrorCode::kBadRequest, "invalid config schema: " + *bad);
  }
  // valijson never sees a 'pattern' keyword, so never its std::regex (re2_pattern.h).
  nlohmann::json for_valijson = schema;
  for (const auto& at : pattern_keywords(schema)) {
    auto& sub = for_valijson.at(at);
    sub[kRe2PatternKey] = std::move(sub["pattern"]);
    sub.erase("pattern");
  }
  auto parsed = std::make_unique<valijson::Schema>();
  try {
    valijson::SchemaParser parser;
    add_re2_pattern(parser);
    valijson::adapters::NlohmannJsonAdapter adapter(for_valijson);
    parser.populateSchema(adapter, *parsed);
  } catch (const std::exception& e) {
    return make_error(ErrorCode::kBadRequest, std::string("invalid config schema: ") + e.what());
  }
  return parsed;
}

}  // namespace

Status check_schema(const nlohmann::json& schema) {
  auto parsed = parse(schema);
  if (!parsed) return parsed.error();
  return {};
}

std::vector<SchemaViolation> validate(const nlohmann::json& schema, const nlohmann::json& value) {
  auto parsed = parse(schema);
  if (!parsed) return {{"", parsed.error().message}};
  valijson::Validator validator;  // strong types: "1" is not a number
  valijson::ValidationResults results;
  valijson::adapters::NlohmannJsonAdapter adapter(value);
  try {
    if (validator.validate(**parsed, adapter, &results)) return {};
  } catch (const std::exception& e) {
    // What the checks above did not foresee is this schema's fault, not the daemon's end.
    return {{"", std::string("the config schema cannot be applied: ") + e.what()}};
  }
  std::vector<SchemaViolation> out;
  valijson::ValidationResults::Error error;
  while (results.popError(error)) {
    if (!summary(error.description)) out.push_back({pointer(error.context), error.description});
  }
  if (out.empty()) out.push_back({"", "does not match the config schema"});
  return out;
}

nlohmann::json apply_defaults(const nlohmann::json& schema, nlohmann::json value) {
  if (!schema.is_object() || !value.is_object() || !schema.contains("properties") ||
      !schema["properties"].is_object()) {
    return value;
  }
  for (const auto& [key, sub] : schema["properties"].items()) {
    if (!sub.is_object()) continue;
    if (!value.contains(key) && sub.contains("default")) {
      value[key] = sub["default"];
    } else if (!value.contains(key) && sub.contains("type") && sub["type"] == "object" &&
               sub.contains("properties")) {
      // An object with defaults inside gets them even when the object itself was left out.
      auto filled = apply_defaults(sub, nlohmann::json::object());
      if (!filled.empty()) value[key] = std::move(filled);
    }
    if (value.contains(key) && value[key].is_object()) {
      value[key] = apply_defaults(sub, std::move(value[key]));
    }
  }
  return value;
}

}  // namespace gpuvisor
