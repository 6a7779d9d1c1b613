// The problem list, and the readers of single values that every section of the config uses.
#include <algorithm>
#include <cstdio>

#include "config/closest_match.h"
#include "config/loader.h"

namespace gpuvisor::config_detail {

std::string quote(std::string_view s) {
  return "'" + std::string(s) + "'";
}

std::string describe(const YAML::Node& node) {
  if (node.IsScalar()) return quote(node.Scalar());
  return node.IsSequence() ? "a list" : node.IsMap() ? "a map" : "nothing";
}

// A value left empty (`key:` alone) carries the mark of whatever follows it, often the next
// line; the key is where the user should look.
YAML::Mark value_mark(const Field& f) {
  return f.value.IsNull() ? f.key_node.Mark() : f.value.Mark();
}

std::string position(const YAML::Mark& mark) {
  return std::to_string(mark.line + 1) + ":" + std::to_string(mark.column + 1);
}

void Loader::report(const YAML::Mark& mark, const std::string& what) {
  const bool known = !mark.is_null();
  problems_.push_back({known ? mark.line + 1 : 0, known ? mark.column + 1 : 0, printable(what)});
}

std::string Loader::printable(const std::string& text) {
  std::string out;
  for (const char c : text) {
    const auto u = static_cast<unsigned char>(c);
    if (c == '\n') {
      out += "\\n";
    } else if (u < 0x20 || u == 0x7f) {
      char hex[8];
      std::snprintf(hex, sizeof hex, "\\x%02x", u);
      out += hex;
    } else {
      out += c;
    }
  }
  return out;
}

bool Loader::bad_value(const Field& f, const std::string& rest) {
  report(value_mark(f), quote(f.key) + rest);
  return false;
}

std::vector<std::string> Loader::render() {
  // Checks that run after a whole section (a missing 'command', a second health check) report
  // late; sorting puts every line back in document order.
  std::stable_sort(problems_.begin(), problems_.end(), [](const Problem& a, const Problem& b) {
    return std::pair(a.line, a.column) < std::pair(b.line, b.column);
  });
  std::vector<std::string> out;
  for (const auto& p : problems_) {
    std::string line = origin_;
    if (p.line > 0) line += ":" + std::to_string(p.line) + ":" + std::to_string(p.column);
    out.push_back(line + ": " + p.what);
  }
  return out;
}

void Loader::visit_map(const YAML::Node& map, std::string_view context, const Handlers& handlers,
                       const Handler& other, std::string_view duplicate_noun) {
  std::vector<std::pair<std::string, YAML::Mark>> seen;
  for (auto it = map.begin(); it != map.end(); ++it) {
    Field f{"", it->first, it->second};
    if (!f.key_node.IsScalar()) {
      report(f.key_node.Mark(), "keys must be strings, got " + describe(f.key_node));
      continue;
    }
    f.key = f.key_node.Scalar();
    // yaml-cpp keeps both entries of a repeated key; silently taking one would hide a mistake.
    auto first = std::find_if(seen.begin(), seen.end(), [&](auto& s) { return s.first == f.key; });
    if (first != seen.end()) {
      report(f.key_node.Mark(), "duplicate " + std::string(duplicate_noun) + " " + quote(f.key) +
                                    " (first declared at " + position(first->second) + ")");
      continue;
    }
    seen.emplace_back(f.key, f.key_node.Mark());
    auto handler =
        std::find_if(handlers.begin(), handlers.end(), [&](auto& h) { return h.first == f.key; });
    if (handler != handlers.end()) {
      handler->second(f);
    } else if (other) {
      other(f);
    } else {
      report_unknown_key(f, context, handlers);
    }
  }
}

void Loader::report_unknown_key(const Field& f, std::string_view context,
                                const Handlers& handlers) {
  std::string what = "unknown key " + quote(f.key) + " " + std::string(context);
  if (f.key == "<<") {
    what += ": YAML merge keys are not supported";  // yaml-cpp 0.7 does not implement them
  } else {
    std::vector<std::string> known;
    for (const auto& h : handlers) known.push_back(h.first);
    if (auto near = closest_match(f.key, known)) what += " (did you mean " + quote(*near) + "?)";
  }
  report(f.key_node.Mark(), std::move(what));
}

bool Loader::read_string(const Field& f, std::string& out) {
  if (!f.value.IsScalar()) return bad_value(f, " must be a string, got " + describe(f.value));
  out = f.value.Scalar();
  return true;
}

bool Loader::read_checked(const Field& f, std::string& out, bool (*valid)(std::string_view),
                          std::string_view expected) {
  std::string text;
  if (!read_string(f, text)) return false;
  if (!valid(text))
    return bad_value(f, " must be " + std::string(expected) + ", got " + quote(text));
  out = std::move(text);
  return true;
}

bool Loader::read_bool(const Field& f, bool& out) {
  // The YAML 1.1 spellings, as yaml-cpp's own conversion reads them.
  static const std::vector<std::string> kTrue = {"true", "True", "TRUE", "yes", "Yes",
                                                 "YES",  "on",   "On",   "ON"};
  static const std::vector<std::string> kFalse = {"false", "False", "FALSE", "no", "No",
                                                  "NO",    "off",   "Off",   "OFF"};
  const std::string t = f.value.IsScalar() ? f.value.Scalar() : "";
  const bool yes = std::find(kTrue.begin(), kTrue.end(), t) != kTrue.end();
  if (!yes && std::find(kFalse.begin(), kFalse.end(), t) == kFalse.end()) {
    return bad_value(f, " must be true or false, got " + describe(f.value));
  }
  out = yes;
  return true;
}

bool Loader::read_duration(const Field& f, Millis& out, bool positive) {
  const auto d = f.value.IsScalar() ? parse_duration(f.value.Scalar()) : std::nullopt;
  if (!d && f.value.IsScalar() && parse_integer(f.value.Scalar())) {
    const std::string& n = f.value.Scalar();  // the common slip: a bare number
    return bad_value(f,
                     ": bad duration '" + n + "' (a number needs a unit: " + n + "s, " + n + "ms)");
  }
  if (!d) {
    return bad_value(f, ": bad duration " + describe(f.value) + " (use e.g. 500ms, 10s, 5m)");
  }
  if (positive && d->count() <= 0) return bad_value(f, " must be greater than 0");
  out = *d;
  return true;
}

bool Loader::read_argv(const Field& f, std::vector<std::string>& out) {
  if (!f.value.IsSequence()) {
    return bad_value(f, " must be a list of strings, got " + describe(f.value));
  }
  std::vector<std::string> argv;
  for (const auto& item : f.value) {
    if (!item.IsScalar()) {
      report(item.IsNull() ? f.value.Mark() : item.Mark(),
             quote(f.key) + " must be a list of strings, got " + describe(item) + " in it");
      return false;
    }
    argv.push_back(item.Scalar());
  }
  if (argv.empty()) return bad_value(f, " must not be empty");
  if (argv.front().empty()) return bad_value(f, ": the program (first element) is empty");
  out = std::move(argv);
  return true;
}

void Loader::read_list(const Field& f, std::vector<std::string>& out,
                       bool (*valid)(std::string_view), std::string_view expected) {
  if (!f.value.IsSequence()) {
    bad_value(f, " must be a list of strings, got " + describe(f.value));
    return;
  }
  for (const auto& item : f.value) {
    if (!item.IsScalar() || !valid(item.Scalar())) {
      report(item.Mark(), "each of " + quote(f.key) + " must be " + std::string(expected) +
                              ", got " + describe(item));
      continue;
    }
    out.push_back(item.Scalar());
  }
}

Handler Loader::text(std::string& out) {
  return [this, &out](const Field& g) { read_string(g, out); };
}
Handler Loader::checked(std::string& out, bool (*valid)(std::string_view),
                        std::string_view expected) {
  return [this, &out, valid, expected](const Field& g) { read_checked(g, out, valid, expected); };
}
Handler Loader::flag(bool& out) {
  return [this, &out](const Field& g) { read_bool(g, out); };
}
Handler Loader::duration(Millis& out, bool positive) {
  return [this, &out, positive](const Field& g) { read_duration(g, out, positive); };
}

bool Loader::expect_map(const Field& f, std::string_view what) {
  if (f.value.IsMap()) return true;
  if (!f.value.IsNull())
    bad_value(f, " must be " + std::string(what) + ", got " + describe(f.value));
  return false;
}

}  // namespace gpuvisor::config_detail
