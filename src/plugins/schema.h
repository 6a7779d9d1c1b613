// JSON Schema (draft 7, through valijson) for plugin configs: every violation with its JSON path,
// and the schema's defaults filled in.
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "core/result.h"

namespace gpuvisor {

struct SchemaViolation {
  std::string path;  // JSON pointer-like: "/voice/speed", "" for the document
  std::string message;
};

// A schema that cannot be used (not an object, a $ref that cannot be resolved, ...).
Status check_schema(const nlohmann::json& schema);

// Every way value breaks schema; empty when it is valid.
std::vector<SchemaViolation> validate(const nlohmann::json& schema, const nlohmann::json& value);

// value with each missing property that has a "default" in schema's "properties" filled in,
// recursively into objects.
nlohmann::json apply_defaults(const nlohmann::json& schema, nlohmann::json value);

}  // namespace gpuvisor
