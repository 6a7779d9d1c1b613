#include "plugins/schema_traps.h"

#include <algorithm>
#include <functional>
#include <regex>
#include <set>
#include <vector>

namespace gpuvisor {

namespace {

using nlohmann::json;
using Visit = std::function<std::optional<std::string>(const json& schema, const std::string& at)>;

constexpr int kMaxDepth = 64;

std::string pointer_token(const std::string& key) {
  std::string out;
  for (const char c : key) out += c == '~' ? "~0" : c == '/' ? "~1" : std::string(1, c);
  return out;
}

// Calls visit on schema and on every schema inside it, depth first, never inside a keyword whose
// value is data ('default' may hold anything); the first problem ends the walk.
std::optional<std::string> walk(const json& schema, const std::string& at, const Visit& visit,
                                int depth = 0) {
  static const std::set<std::string> kData = {"enum", "const", "default", "examples"};
  // Keywords whose members are each a schema, whatever their names.
  static const std::set<std::string> kSchemaMaps = {"properties", "patternProperties",
                                                    "definitions", "$defs", "dependencies"};
  if (depth > kMaxDepth) {
    return (at.empty() ? "the schema" : at) + " is nested more than " + std::to_string(kMaxDepth) +
           " levels deep";
  }
  if (schema.is_array()) {
    for (size_t i = 0; i < schema.size(); ++i) {
      if (auto bad = walk(schema[i], at + "/" + std::to_string(i), visit, depth + 1)) return bad;
    }
    return std::nullopt;
  }
  if (!schema.is_object()) return std::nullopt;
  if (auto bad = visit(schema, at)) return bad;
  for (const auto& [key, value] : schema.items()) {
    if (kData.count(key) != 0) continue;
    const std::string here = at + "/" + pointer_token(key);
    if (kSchemaMaps.count(key) != 0 && value.is_object()) {
      for (const auto& [name, sub] : value.items()) {
        if (auto bad = walk(sub, here + "/" + pointer_token(name), visit, depth + 1)) return bad;
      }
    } else if (auto bad = walk(value, here, visit, depth + 1)) {
      return bad;
    }
  }
  return std::nullopt;
}

std::optional<std::string> regex_problem(const std::string& pattern) {
  try {
    std::regex compiled(pattern);  // the engine and syntax valijson uses
  } catch (const std::regex_error& e) {
    return e.what();
  }
  return std::nullopt;
}

std::optional<std::string> keyword_trap(const json& schema, const std::string& at) {
  if (const auto p = schema.find("pattern"); p != schema.end() && p->is_string()) {
    if (auto why = regex_problem(p->get<std::string>())) {
      return at + "/pattern is not a valid regular expression (" + *why + ")";
    }
  }
  if (const auto m = schema.find("multipleOf");
      m != schema.end() && !(m->is_number() && m->get<double>() > 0)) {
    return at + "/multipleOf must be a number greater than 0, got " + m->dump();
  }
  if (const auto pp = schema.find("patternProperties"); pp != schema.end() && pp->is_object()) {
    for (const auto& [name, sub] : pp->items()) {
      if (auto why = regex_problem(name)) {
        return at + "/patternProperties/" + pointer_token(name) +
               ": the name is not a valid regular expression (" + *why + ")";
      }
    }
  }
  return std::nullopt;
}

// The schema a local '$ref' ("#", "#/definitions/x") names; null when it names none (valijson
// then refuses it itself).
const json* resolve(const json& root, const std::string& ref) {
  if (ref.empty() || ref.front() != '#') return nullptr;
  try {
    return &root.at(json::json_pointer(ref.substr(1)));
  } catch (const json::exception&) {
    return nullptr;
  }
}

// Follows every local '$ref' inside node; open holds the schemas on the way here (compared by
// address, so two spellings of one pointer are one schema), done those already cleared.
std::optional<std::string> ref_cycle(const json& root, const json& node, const std::string& at,
                                     std::vector<const json*>& open, std::set<const json*>& done) {
  if (done.count(&node) != 0) return std::nullopt;
  if (open.size() > kMaxDepth) {
    return at + ": '$ref's lead on more than " + std::to_string(kMaxDepth) + " levels deep";
  }
  open.push_back(&node);
  auto found = walk(node, at, [&](const json& schema, const std::string& here) {
    const auto ref = schema.find("$ref");
    if (ref == schema.end() || !ref->is_string()) return std::optional<std::string>();
    const std::string to = ref->get<std::string>();
    if (to.empty() || to.front() != '#') {
      // With nothing to fetch other documents by, valijson resolves a relative one against
      // itself for ever.
      return std::optional<std::string>(here + "/$ref: '" + to +
                                        "' is not within the schema; only references that "
                                        "start with '#' are supported");
    }
    if (to.find('%') != std::string::npos) {
      // valijson decodes them (to bytes that need not be UTF-8); this check would not.
      return std::optional<std::string>(here + "/$ref: '" + to +
                                        "': percent escapes are not supported");
    }
    const json* target = resolve(root, to);
    if (target == nullptr) return std::optional<std::string>();
    if (std::find(open.begin(), open.end(), target) != open.end()) {
      return std::optional<std::string>(here + "/$ref: '" + to +
                                        "' leads back to itself; recursive schemas are not "
                                        "supported");
    }
    return ref_cycle(root, *target, to.substr(1), open, done);
  });
  open.pop_back();
  if (!found) done.insert(&node);
  return found;
}

}  // namespace

std::optional<std::string> find_schema_trap(const nlohmann::json& schema) {
  if (auto bad = walk(schema, "", keyword_trap)) return bad;
  std::vector<const json*> open;
  std::set<const json*> done;
  return ref_cycle(schema, schema, "", open, done);
}

}  // namespace gpuvisor
