#include "config/yaml_json.h"

#include <yaml-cpp/eventhandler.h>

#include <cstdio>
#include <sstream>

namespace gpuvisor {

using nlohmann::json;

namespace {

// The length of the UTF-8 sequence at s[i], or 0 where there is none: no overlong forms, no
// surrogates, nothing past U+10FFFF (as strict as nlohmann::json's dump).
size_t utf8_length(std::string_view s, size_t i) {
  const auto byte = [&](size_t k) { return static_cast<unsigned char>(s[k]); };
  const unsigned char c = byte(i);
  if (c < 0x80) return 1;
  size_t n = 0;
  unsigned char lo = 0x80, hi = 0xBF;  // the range of the byte after the first
  if (c >= 0xC2 && c <= 0xDF) {
    n = 2;
  } else if (c >= 0xE0 && c <= 0xEF) {
    n = 3;
    if (c == 0xE0) lo = 0xA0;
    if (c == 0xED) hi = 0x9F;
  } else if (c >= 0xF0 && c <= 0xF4) {
    n = 4;
    if (c == 0xF0) lo = 0x90;
    if (c == 0xF4) hi = 0x8F;
  } else {
    return 0;
  }
  if (s.size() - i < n) return 0;
  if (byte(i + 1) < lo || byte(i + 1) > hi) return 0;
  for (size_t k = 2; k < n; ++k) {
    if (byte(i + k) < 0x80 || byte(i + k) > 0xBF) return 0;
  }
  return n;
}

// Counts documents, and stops at one that starts where the one before it did: yaml-cpp made no
// progress, and would make none for ever.
class ProgressCheck : public YAML::EventHandler {
 public:
  void OnDocumentStart(const YAML::Mark& mark) override {
    if (started_ && mark.pos == last_.pos) {
      throw YAML::ParserException(mark, "unexpected character where a value should start");
    }
    started_ = true;
    last_ = mark;
  }
  void OnDocumentEnd() override {}
  void OnNull(const YAML::Mark&, YAML::anchor_t) override {}
  void OnAlias(const YAML::Mark&, YAML::anchor_t) override {}
  void OnScalar(const YAML::Mark&, const std::string&, YAML::anchor_t,
                const std::string&) override {}
  void OnSequenceStart(const YAML::Mark&, const std::string&, YAML::anchor_t,
                       YAML::EmitterStyle::value) override {}
  void OnSequenceEnd() override {}
  void OnMapStart(const YAML::Mark&, const std::string&, YAML::anchor_t,
                  YAML::EmitterStyle::value) override {}
  void OnMapEnd() override {}

 private:
  bool started_ = false;
  YAML::Mark last_;
};

}  // namespace

void check_utf8(std::string_view text) {
  YAML::Mark mark;  // line and column (in characters) of i, both from 0 as yaml-cpp counts
  for (size_t i = 0; i < text.size();) {
    const size_t n = utf8_length(text, i);
    const auto byte = static_cast<unsigned char>(text[i]);
    // YAML's printable set leaves out the C0 controls but tab, LF and CR, and DEL; yaml-cpp
    // takes them, and reads "\0N" as a lone 0x85 byte, which is not UTF-8.
    const bool control =
        n == 1 && ((byte < 0x20 && byte != '\t' && byte != '\n' && byte != '\r') || byte == 0x7F);
    if (n == 0 || control) {
      mark.pos = static_cast<int>(i);
      char hex[8];
      std::snprintf(hex, sizeof hex, "0x%02X", byte);
      const char* what = control ? "a control character is not allowed" : "not valid UTF-8";
      throw YAML::ParserException(mark, std::string(what) + " (byte " + hex + ")");
    }
    if (text[i] == '\n') {
      ++mark.line;
      mark.column = 0;
    } else {
      ++mark.column;
    }
    i += n;
  }
}

std::vector<YAML::Node> load_all_documents(const std::string& text) {
  std::istringstream in(text);
  YAML::Parser parser(in);
  ProgressCheck check;
  while (parser.HandleNextDocument(check)) {
  }
  return YAML::LoadAll(text);
}

json yaml_to_json(const YAML::Node& node) {
  switch (node.Type()) {
    case YAML::NodeType::Map: {
      json out = json::object();
      for (const auto& kv : node) out[kv.first.as<std::string>()] = yaml_to_json(kv.second);
      return out;
    }
    case YAML::NodeType::Sequence: {
      json out = json::array();
      for (const auto& item : node) out.push_back(yaml_to_json(item));
      return out;
    }
    case YAML::NodeType::Scalar: {
      const std::string& s = node.Scalar();
      if (node.Tag() == "!") return s;  // quoted: a string, whatever it looks like
      if (s == "true" || s == "True" || s == "TRUE") return true;
      if (s == "false" || s == "False" || s == "FALSE") return false;
      if (s == "null" || s == "~" || s.empty()) return nullptr;
      // Numbers as JSON would read them; anything else stays text.
      const auto number = json::parse(s, nullptr, false);
      if (number.is_number()) return number;
      return s;
    }
    default:
      return nullptr;
  }
}

json yaml_text_to_json(const std::string& text) {
  check_utf8(text);
  return yaml_to_json(YAML::Load(text));
}

}  // namespace gpuvisor
