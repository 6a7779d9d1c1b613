#include "plugins/schema_traps.h"

#include <algorithm>
#include <functional>
#include <regex>
#include <set>
#include <vector>

#include "plugins/re2_pattern.h"

namespace gpuvisor {

namespace {

using nlohmann::json;
using Pointer = json::json_pointer;
using Visit = std::function<std::optional<std::string>(const json& schema, const Pointer& at)>;

constexpr int kMaxDepth = 64;

// Calls visit on schema and on every schema inside it, depth first, never inside a keyword whose
// value is data ('default' may hold anything); the first problem ends the walk.
std::optional<std::string> walk(const json& schema, const Pointer& at, const Visit& visit,
                                int depth = 0) {
  static const std::set<std::string> kData = {"enum", "const", "default", "examples"};
  // Keywords whose members are each a schema, whatever their names.
  static const std::set<std::string> kSchemaMaps = {"properties", "patternProperties",
                                                    "definitions", "$defs", "dependencies"};
  if (depth > kMaxDepth) {
    return (at.empty() ? "the schema" : at.to_string()) + " is nested more than " +
           std::to_string(kMaxDepth) + " levels deep";
  }
  if (schema.is_array()) {
    for (size_t i = 0; i < schema.size(); ++i) {
      if (auto bad = walk(schema[i], at / i, visit, depth + 1)) return bad;
    }
    return std::nullopt;
  }
  if (!schema.is_object()) return std::nullopt;
  if (auto bad = visit(schema, at)) return bad;
  for (const auto& [key, value] : schema.items()) {
    if (kData.count(key) != 0) continue;
    const Pointer here = at / key;
    if (kSchemaMaps.count(key) != 0 && value.is_object()) {
      for (const auto& [name, sub] : value.items()) {
        if (auto bad = walk(sub, here / name, visit, depth + 1)) return bad;
      }
    } else if (auto bad = walk(value, here, visit, depth + 1)) {
      return bad;
    }
  }
  return std::nullopt;
}

// patternProperties names are still valijson's, through std::regex.
std::optional<std::string> regex_problem(const std::string& pattern) {
  try {
    std::regex compiled(pattern);  // the engine and syntax valijson uses
  } catch (const std::regex_error& e) {
    return e.what();
  }
  return std::nullopt;
}

std::optional<std::string> keyword_trap(const json& schema, const Pointer& at) {
  if (const auto p = schema.find("pattern"); p != schema.end() && p->is_string()) {
    if (auto why = re2_problem(p->get<std::string>())) {
      return (at / "pattern").to_string() + " is not a valid regular expression (RE2: " + *why +
             ")";
    }
  }
  if (const auto m = schema.find("multipleOf");
      m != schema.end() && !(m->is_number() && m->get<double>() > 0)) {
    return (at / "multipleOf").to_string() + " must be a number greater than 0, got " + m->dump();
  }
  if (const auto pp = schema.find("patternProperties"); pp != schema.end() && pp->is_object()) {
    for (const auto& [name, sub] : pp->items()) {
      if (auto why = regex_problem(name)) {
        return (at / "patternProperties" / name).to_string() +
               ": the name is not a valid regular expression (" + *why + ")";
      }
    }
  }
  return std::nullopt;
}

// Where a local '$ref' ("#", "#/definitions/x") points, and the schema there; nullopt when it
// names none (valijson then refuses it itself).
// valijson skips empty reference tokens ("#/" is the root, "#//a" is "#/a"); so does this, or
// a cycle through one would pass here and recurse for ever there.
std::string as_valijson_reads(std::string_view fragment) {
  if (fragment.empty() || fragment.front() != '/') return std::string(fragment);
  std::string out;
  while (!fragment.empty()) {
    const auto next = fragment.find('/', 1);
    const std::string_view token = fragment.substr(1, next == fragment.npos ? next : next - 1);
    if (!token.empty()) (out += '/') += token;
    if (next == fragment.npos) break;
    fragment.remove_prefix(next);
  }
  return out;
}

std::optional<std::pair<Pointer, const json*>> resolve(const json& root, const std::string& ref) {
  try {
    Pointer to(as_valijson_reads(std::string_view(ref).substr(1)));
    const json* target = &root.at(to);
    return std::make_pair(std::move(to), target);
  } catch (const json::exception&) {
    return std::nullopt;
  }
}

// Follows every local '$ref' inside node; open holds the schemas on the way here (compared by
// address, so two spellings of one pointer are one schema), done those already cleared.
std::optional<std::string> ref_cycle(const json& root, const json& node, const Pointer& at,
                                     std::vector<const json*>& open, std::set<const json*>& done) {
  if (done.count(&node) != 0) return std::nullopt;
  if (open.size() > kMaxDepth) {
    return at.to_string() + ": '$ref's lead on more than " + std::to_string(kMaxDepth) +
           " levels deep";
  }
  open.push_back(&node);
  auto found = walk(node, at, [&](const json& schema, const Pointer& at_ref) {
    const auto ref = schema.find("$ref");
    if (ref == schema.end() || !ref->is_string()) return std::optional<std::string>();
    const std::string here = (at_ref / "$ref").to_string();
    const std::string to = ref->get<std::string>();
    if (to.empty() || to.front() != '#') {
      // With nothing to fetch other documents by, valijson resolves a relative one against
      // itself for ever.
      return std::optional<std::string>(here + ": '" + to +
                                        "' is not within the schema; only references that "
                                        "start with '#' are supported");
    }
    if (to.find('%') != std::string::npos) {
      // valijson decodes them (to bytes that need not be UTF-8); this check would not.
      return std::optional<std::string>(here + ": '" + to + "': percent escapes are not supported");
    }
    const auto target = resolve(root, to);
    if (!target) return std::optional<std::string>();
    if (std::find(open.begin(), open.end(), target->second) != open.end()) {
      return std::optional<std::string>(here + ": '" + to +
                                        "' leads back to itself; recursive schemas are not "
                                        "supported");
    }
    return ref_cycle(root, *target->second, target->first, open, done);
  });
  open.pop_back();
  if (!found) done.insert(&node);
  return found;
}

}  // namespace

std::vector<Pointer> pattern_keywords(const json& schema) {
  std::vector<Pointer> found;
  std::set<std::string> seen;    // subschemas with a pattern, as pointers
  std::set<std::string> walked;  // where a walk began: the root and each '$ref' target
  std::vector<Pointer> todo{Pointer()};
  while (!todo.empty()) {
    const Pointer from = todo.back();
    todo.pop_back();
    if (!walked.insert(from.to_string()).second) continue;
    (void)walk(schema.at(from), from, [&](const json& sub, const Pointer& at) {
      // A 'pattern' that is not a string stays valijson's to refuse, as it always was.
      const auto p = sub.find("pattern");
      if (p != sub.end() && p->is_string() && seen.insert(at.to_string()).second) {
        found.push_back(at);
      }
      const auto ref = sub.find("$ref");
      if (ref != sub.end() && ref->is_string() && ref->get<std::string>().rfind('#', 0) == 0) {
        if (auto target = resolve(schema, ref->get<std::string>())) todo.push_back(target->first);
      }
      return std::optional<std::string>();
    });
  }
  return found;
}

std::optional<std::string> find_schema_trap(const nlohmann::json& schema) {
  if (auto bad = walk(schema, Pointer(), keyword_trap)) return bad;
  std::vector<const json*> open;
  std::set<const json*> done;
  return ref_cycle(schema, schema, Pointer(), open, done);
}

}  // namespace gpuvisor
