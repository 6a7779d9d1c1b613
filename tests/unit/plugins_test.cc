// Plugin manifests, JSON-Schema configs and the registry, on real files in a temp directory.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "config/yaml_json.h"
#include "lib/temp_dir.h"
#include "plugins/registry.h"
#include "plugins/schema.h"

namespace gpuvisor {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

const char* kTtsYaml = R"(name: cosyvoice
category: tts
title: CosyVoice
version: "2.0"
mode: http
service: cosyvoice
http: {url: "http://127.0.0.1:50000/v1/tts"}
config_schema:
  type: object
  required: [voice]
  properties:
    voice: {type: string, enum: [alice, bob]}
    speed: {type: number, minimum: 0.5, maximum: 2, default: 1.0}
    output:
      type: object
      properties:
        format: {type: string, default: wav}
)";

const json kWorker = {{"name", "whisper"},
                      {"category", "asr"},
                      {"mode", "worker"},
                      {"cloud", true},
                      {"worker", {{"command", {"/usr/bin/python3", "worker.py"}}}}};

PluginRegistry load(const std::string& dir, std::vector<json> inline_manifests = {kWorker}) {
  auto r = PluginRegistry::load({dir,
                                 std::move(inline_manifests),
                                 {{"tts", "Text to speech"}, {"llm", "Language models"}},
                                 {"cosyvoice"},
                                 dir + "/state"});
  EXPECT_TRUE(r.ok()) << r.error().message;
  return r.ok() ? std::move(*r) : PluginRegistry();
}

TEST(PluginManifest, BadManifestsNameEveryProblemAndWhere) {
  const auto r = parse_manifest(json{{"name", "a_b"},
                                     {"mode", "grpc"},
                                     {"colour", "red"},
                                     {"concurrency", 0},
                                     {"config_schema", {{"type", 7}}}},
                                "x.yaml");
  ASSERT_FALSE(r.ok());
  const std::string& m = r.error().message;
  EXPECT_NE(std::string::npos, m.find("x.yaml: unknown key 'colour'")) << m;
  EXPECT_NE(std::string::npos, m.find("x.yaml: 'category' is required")) << m;
  EXPECT_NE(std::string::npos, m.find("x.yaml: 'name' must be letters, digits, '-' or '.'")) << m;
  EXPECT_NE(std::string::npos, m.find("x.yaml: 'mode' must be http or worker, got 'grpc'")) << m;
  EXPECT_NE(std::string::npos, m.find("x.yaml: 'concurrency' must be an integer from 1 to 1024"))
      << m;
  EXPECT_NE(std::string::npos, m.find("x.yaml: 'config_schema': invalid config schema")) << m;
  const auto http = parse_manifest(json{{"name", "n"}, {"category", "c"}, {"mode", "http"}}, "y");
  ASSERT_FALSE(http.ok());
  EXPECT_NE(std::string::npos, http.error().message.find("mode http needs 'http: {url:"));
  // A method that is not a string threw out of the loader (a manifest could end the daemon).
  for (const json& method : {json(5), json("FETCH")}) {
    const auto bad =
        parse_manifest(json{{"name", "n"},
                            {"category", "c"},
                            {"mode", "http"},
                            {"http", {{"url", "http://127.0.0.1:1/x"}, {"method", method}}}},
                       "m");
    ASSERT_FALSE(bad.ok());
    EXPECT_EQ("m: 'http.method' must be one of GET, POST, PUT, PATCH, DELETE, got " + method.dump(),
              bad.error().message);
  }
  const auto worker =
      parse_manifest(json{{"name", "n"}, {"category", "c"}, {"mode", "worker"}}, "z");
  ASSERT_FALSE(worker.ok());
  EXPECT_NE(std::string::npos, worker.error().message.find("mode worker needs 'worker: {command:"));
}

TEST(PluginManifest, QueueTimeoutBoundsAJobsWaitForItsService) {
  json m = kWorker;
  EXPECT_EQ(Millis(600'000), parse_manifest(m, "w")->queue_timeout);  // ten minutes by default
  m["queue_timeout"] = "45s";
  EXPECT_EQ(Millis(45'000), parse_manifest(m, "w")->queue_timeout);
  for (const json& bad : {json("soon"), json(30), json("0s")}) {
    m["queue_timeout"] = bad;
    const auto r = parse_manifest(m, "w");
    ASSERT_FALSE(r.ok());
    EXPECT_EQ("w: 'queue_timeout' must be a duration such as 30s or 10m, got " + bad.dump(),
              r.error().message);
  }
}

// Found by fuzz/manifest_fuzz: a Latin-1 title loaded, and then every dump of the plugin threw.
TEST(PluginManifest, YamlThatIsNotUtf8IsASyntaxError) {
  try {
    (void)yaml_text_to_json("name: x\ntitle: Caf\xe9\n");
    ADD_FAILURE() << "no exception";
  } catch (const YAML::ParserException& e) {
    EXPECT_EQ(e.mark.line, 1);
    EXPECT_EQ(e.mark.column, 10);
    EXPECT_EQ(e.msg, "not valid UTF-8 (byte 0xE9)");
  }
  EXPECT_EQ(yaml_text_to_json("title: Caf\xc3\xa9\n")["title"], "Caf\xc3\xa9");
}

TEST(PluginSchema, EveryViolationHasItsPath) {
  const json schema = {{"type", "object"},
                       {"required", {"voice"}},
                       {"properties",
                        {{"speed", {{"type", "number"}, {"maximum", 2}}},
                         {"tags", {{"type", "array"}, {"items", {{"type", "string"}}}}}}}};
  const auto v = validate(schema, json{{"speed", 9}, {"tags", {"a", 3}}});
  std::vector<std::string> paths;
  for (const auto& x : v) paths.push_back(x.path);
  EXPECT_NE(paths.end(), std::find(paths.begin(), paths.end(), "/speed"));
  EXPECT_NE(paths.end(), std::find(paths.begin(), paths.end(), "/tags/1"));
  EXPECT_NE(paths.end(), std::find(paths.begin(), paths.end(), ""));  // voice is missing
  EXPECT_TRUE(validate(schema, json{{"voice", "x"}, {"speed", 1}}).empty());
  EXPECT_FALSE(validate(schema, json{{"voice", "x"}, {"speed", "1"}}).empty());  // no coercion
}

// Found by manifest_fuzz: valijson compiles a 'pattern' only when a value reaches it, and a bad
// one threw out of the validation and ended the daemon.
TEST(PluginSchema, WhatValijsonWouldFailOnIsRefusedWhenTheSchemaIsChecked) {
  const json bad = json::parse(R"({"type":"object","properties":{
      "voice":{"type":"string","pattern":"[a"}}})");
  const auto checked = check_schema(bad);
  ASSERT_FALSE(checked.ok());
  EXPECT_EQ(0u, checked.error().message.rfind("invalid config schema: /properties/voice/pattern "
                                              "is not a valid regular expression (",
                                              0))
      << checked.error().message;
  const auto v = validate(bad, json{{"voice", "alice"}});
  ASSERT_EQ(1u, v.size());
  EXPECT_EQ(checked.error().message, v[0].message);

  const json names = json::parse(R"({"type":"object","patternProperties":{"(x":{}}})");
  ASSERT_FALSE(check_schema(names).ok());
  EXPECT_NE(std::string::npos, check_schema(names).error().message.find(
                                   "/patternProperties/(x: the name is not a valid regular"));

  // Found by manifest_fuzz too: valijson divides by an integer multipleOf.
  const json zero = json::parse(R"({"properties":{"n":{"type":"integer","multipleOf":0}}})");
  ASSERT_FALSE(check_schema(zero).ok());
  EXPECT_EQ(
      "invalid config schema: /properties/n/multipleOf must be a number greater than 0, "
      "got 0",
      check_schema(zero).error().message);
  EXPECT_EQ(1u, validate(zero, json{{"n", 3}}).size());
  EXPECT_TRUE(check_schema(json::parse(R"({"multipleOf":0.5})")).ok());

  // valijson's parser recursed until the stack ran out on a '$ref' that leads back.
  for (const char* cyclic :
       {R"({"$ref":"#"})", R"({"allOf":[{"$ref":"#"}]})", R"({"allOf":[{"$ref":"#/"}]})",
        R"({"properties":{"a":{"$ref":"#//properties//a"}}})",
        R"({"properties":{"a":{"$ref":"#/properties/a"}}})",
        R"({"$ref":"#/definitions/x","definitions":{"x":{"$ref":"#/definitions/y"},
                                 "y":{"items":{"$ref":"#/definitions/x"}}}})"}) {
    const auto refused = check_schema(json::parse(cyclic));
    ASSERT_FALSE(refused.ok()) << cyclic;
    EXPECT_NE(std::string::npos, refused.error().message.find(
                                     "leads back to itself; recursive schemas are not supported"))
        << refused.error().message;
  }
  EXPECT_EQ(
      "invalid config schema: /properties/a/$ref: '#/properties/a' leads back to itself; "
      "recursive schemas are not supported",
      check_schema(json::parse(R"({"properties":{"a":{"$ref":"#/properties/a"}}})"))
          .error()
          .message);
  EXPECT_EQ(
      "invalid config schema: /$ref: 'other.json' is not within the schema; only "
      "references that start with '#' are supported",
      check_schema(json::parse(R"({"$ref":"other.json"})")).error().message);
  EXPECT_EQ(
      "invalid config schema: /$ref: '#/definitions/a%20b': percent escapes are not "
      "supported",
      check_schema(json::parse(R"({"$ref":"#/definitions/a%20b"})")).error().message);
  // References that end somewhere are fine, and checked like any schema.
  const json shared = json::parse(R"({"definitions":{"rate":{"type":"number","minimum":0}},
      "properties":{"a":{"$ref":"#/definitions/rate"},"b":{"$ref":"#/definitions/rate"}}})");
  EXPECT_TRUE(check_schema(shared).ok()) << check_schema(shared).error().message;
  EXPECT_FALSE(validate(shared, json{{"a", -1}}).empty());
  std::string deep = "{}";
  for (int i = 0; i < 100; ++i) deep = R"({"items":)" + deep + "}";
  EXPECT_NE(std::string::npos, check_schema(json::parse(deep)).error().message.find("levels deep"));

  // A property called "pattern", or a default that holds one, is not a pattern.
  const json fine = json::parse(R"({"type":"object","properties":{
      "pattern":{"type":"string","pattern":"^[a-z]+$","default":"abc"},
      "opts":{"type":"object","default":{"pattern":"[a"}}}})");
  EXPECT_TRUE(check_schema(fine).ok()) << check_schema(fine).error().message;
  EXPECT_TRUE(validate(fine, json{{"pattern", "abc"}}).empty());
  EXPECT_FALSE(validate(fine, json{{"pattern", "ABC"}}).empty());
}

// 'pattern' goes through RE2 (plugins/re2_pattern.h): std::regex recursed once per character of
// the value, and a long one ended the daemon's stack.
TEST(PluginSchema, APatternMatchesAMegabyteValueInLinearTime) {
  const std::string long_a(1'000'000, 'a');
  const json alternation = json::parse(R"({"properties":{"v":{"type":"string",
      "pattern":"^(a|aa)*$"}}})");
  ASSERT_TRUE(check_schema(alternation).ok()) << check_schema(alternation).error().message;
  EXPECT_TRUE(validate(alternation, json{{"v", long_a}}).empty());
  EXPECT_EQ(1u, validate(alternation, json{{"v", long_a + "b"}}).size());
  // Exponential for a backtracking engine: no 'b' anywhere, so every split of the a's is tried.
  const json nested = json::parse(R"({"properties":{"v":{"type":"string","pattern":"(a*)*b"}}})");
  const auto refused = validate(nested, json{{"v", long_a}});
  ASSERT_EQ(1u, refused.size());
  EXPECT_EQ("/v", refused[0].path);
  EXPECT_EQ("Failed to match regex specified by 'pattern' constraint.", refused[0].message);
  EXPECT_TRUE(validate(nested, json{{"v", long_a + "b"}}).empty());
}

TEST(PluginSchema, APatternSearchesAndLooksAtStringsOnly) {
  const json schema = json::parse(R"({"properties":{"v":{"pattern":"b+c"}}})");
  EXPECT_TRUE(validate(schema, json{{"v", "xxbbcxx"}}).empty());  // unanchored, like JSON Schema
  EXPECT_FALSE(validate(schema, json{{"v", "bx"}}).empty());
  EXPECT_TRUE(validate(schema, json{{"v", 7}}).empty());
  // valijson reads a '$ref' target as a schema wherever it is, even inside data: RE2 there too.
  const json via_ref = json::parse(R"({"properties":{"v":{"$ref":"#/properties/w/default"},
      "w":{"default":{"type":"string","pattern":"(a*)*b"}}}})");
  ASSERT_TRUE(check_schema(via_ref).ok()) << check_schema(via_ref).error().message;
  EXPECT_EQ(1u, validate(via_ref, json{{"v", std::string(1'000'000, 'a')}}).size());
  EXPECT_TRUE(validate(via_ref, json{{"v", "ab"}}).empty());
  // A pattern that is not a string is refused, as valijson always did, not moved and lost.
  const auto odd = check_schema(json::parse(R"({"pattern":{"pattern":"a"}})"));
  ASSERT_FALSE(odd.ok());
  EXPECT_EQ(0u, odd.error().message.rfind("invalid config schema: ", 0)) << odd.error().message;
}

TEST(PluginSchema, APatternRe2CannotCompileIsAManifestErrorWithWhereAndWhy) {
  const json backreference = json::parse(R"({"properties":{"voice":{"pattern":"(a)\\1"}}})");
  const auto checked = check_schema(backreference);
  ASSERT_FALSE(checked.ok());
  EXPECT_EQ(
      "invalid config schema: /properties/voice/pattern is not a valid regular expression "
      "(RE2: invalid escape sequence: \\1)",
      checked.error().message);
  const auto manifest = parse_manifest(json{{"name", "cosyvoice"},
                                            {"category", "tts"},
                                            {"mode", "http"},
                                            {"http", {{"url", "http://127.0.0.1:1/tts"}}},
                                            {"config_schema", backreference}},
                                       "plugins.manifests[0]");
  ASSERT_FALSE(manifest.ok());
  EXPECT_EQ(
      "plugins.manifests[0]: 'config_schema' of plugin tts_cosyvoice: " + checked.error().message,
      manifest.error().message);
}

// Found by manifest_fuzz: a "type" that is a list (valid JSON Schema) threw in apply_defaults.
TEST(PluginSchema, DefaultsLeaveAPropertyWithATypeListAlone) {
  const json schema = json::parse(R"({"type":"object","properties":{
      "name":{"type":["string","null"]},
      "speed":{"type":["number","null"],"default":1}}})");
  ASSERT_TRUE(check_schema(schema).ok());
  EXPECT_EQ(json::parse(R"({"speed":1})"), apply_defaults(schema, json::object()));
}

TEST(PluginSchema, DefaultsAreFilledInAtEveryLevel) {
  const json schema = json::parse(R"({"type":"object","properties":{
      "speed":{"type":"number","default":1.0},
      "output":{"type":"object","properties":{"format":{"type":"string","default":"wav"}}}}})");
  EXPECT_EQ(apply_defaults(schema, json::object()),
            json::parse(R"({"speed":1.0,"output":{"format":"wav"}})"));
  EXPECT_EQ(apply_defaults(schema, json::parse(R"({"speed":2,"output":{"format":"mp3"}})")),
            json::parse(R"({"speed":2,"output":{"format":"mp3"}})"));
}

TEST(PluginRegistry, LoadsDirectoryAndInlineManifestsAndFilters) {
  const auto dir = fresh_dir("load");
  std::ofstream(dir + "/cosyvoice.yaml") << kTtsYaml;
  std::ofstream(dir + "/notes.txt") << "not a manifest";
  auto r = load(dir);
  ASSERT_EQ(2u, r.all().size());
  const auto* tts = r.find("tts_cosyvoice");
  ASSERT_NE(nullptr, tts);
  EXPECT_EQ("CosyVoice", tts->title);
  EXPECT_EQ("http://127.0.0.1:50000/v1/tts", tts->http_url);
  EXPECT_EQ(PluginMode::kWorker, r.find("asr_whisper")->mode);
  PluginFilter f;
  f.category = "tts";
  EXPECT_EQ(1u, r.list(f).size());
  f = {};
  f.cloud = true;
  ASSERT_EQ(1u, r.list(f).size());
  EXPECT_EQ("asr_whisper", r.list(f)[0]->id);
  f = {};
  f.mode = PluginMode::kHttp;
  EXPECT_EQ("tts_cosyvoice", r.list(f)[0]->id);
  const auto categories = r.categories();
  EXPECT_EQ("Text to speech", categories.at("tts"));
  EXPECT_EQ("asr", categories.at("asr"));  // no display name given: its id
  EXPECT_EQ(1u, categories.count("llm"));  // declared, still empty
}

TEST(PluginRegistry, BadManifestsAndUnknownServicesFailTheLoadNamingEach) {
  const auto dir = fresh_dir("bad");
  std::ofstream(dir + "/a.yaml") << "name: [unclosed";
  std::ofstream(dir + "/b.json") << "{not json";
  std::ofstream(dir + "/c.yaml") << "name: x\ncategory: y\nmode: http\nservice: nope\n"
                                    "http: {url: \"http://127.0.0.1:1/go\"}\n";
  auto dup = kWorker;
  const auto r = PluginRegistry::load({dir, {kWorker, dup}, {}, {"cosyvoice"}, ""});
  ASSERT_FALSE(r.ok());
  const std::string& m = r.error().message;
  EXPECT_NE(std::string::npos, m.find(dir + "/a.yaml:1:1: YAML syntax error")) << m;
  EXPECT_NE(std::string::npos, m.find(dir + "/b.json: not valid JSON")) << m;
  EXPECT_NE(std::string::npos, m.find(dir + "/c.yaml: service 'nope' is not in the config")) << m;
  EXPECT_NE(std::string::npos, m.find("plugins.manifests[1]: plugin asr_whisper is already "
                                      "declared in plugins.manifests[0]"))
      << m;
}

TEST(PluginRegistry, ConfigIsValidatedDefaultedAndSavedAtomically) {
  const auto dir = fresh_dir("config");
  std::ofstream(dir + "/cosyvoice.yaml") << kTtsYaml;
  auto r = load(dir);
  EXPECT_FALSE(r.configured("tts_cosyvoice"));
  // Unconfigured: the schema's defaults.
  EXPECT_EQ(json::parse(R"({"speed":1.0,"output":{"format":"wav"}})"),
            *r.config_or_defaults("tts_cosyvoice"));

  const auto saved = r.set_config("tts_cosyvoice", json{{"voice", "alice"}});
  ASSERT_TRUE(saved.ok()) << saved.error().message;
  EXPECT_EQ(json::parse(R"({"voice":"alice","speed":1.0,"output":{"format":"wav"}})"), *saved);
  EXPECT_TRUE(r.configured("tts_cosyvoice"));
  std::ifstream file(dir + "/state/tts_cosyvoice.json");
  EXPECT_EQ(*saved, json::parse(file));

  // Refused: every violation listed, the saved config untouched.
  const auto bad = r.set_config("tts_cosyvoice", json{{"voice", "carol"}, {"speed", 5}});
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(ErrorCode::kBadRequest, bad.error().code);
  EXPECT_NE(std::string::npos, bad.error().message.find("  /voice: ")) << bad.error().message;
  EXPECT_NE(std::string::npos, bad.error().message.find("  /speed: ")) << bad.error().message;
  EXPECT_EQ(2u, bad.error().detail["violations"].size()) << bad.error().detail.dump();
  EXPECT_EQ(*saved, *r.config("tts_cosyvoice"));
  EXPECT_FALSE(fs::exists(dir + "/state/tts_cosyvoice.json.tmp"));

  ASSERT_TRUE(r.delete_config("tts_cosyvoice").ok());
  EXPECT_FALSE(r.configured("tts_cosyvoice"));
  EXPECT_EQ(ErrorCode::kNotFound, r.delete_config("tts_cosyvoice").error().code);
}

TEST(PluginRegistry, IdsThatCouldLeaveTheDirectoryAreRefused) {
  const auto dir = fresh_dir("ids");
  auto r = load(dir);
  for (const std::string id : {"../x", "a/b", ".hidden", "", "..", "a\\b"}) {
    const auto res = r.set_config(id, json::object());
    ASSERT_FALSE(res.ok()) << id;
    EXPECT_EQ(ErrorCode::kBadRequest, res.error().code) << id;
    EXPECT_NE(std::string::npos, res.error().message.find("invalid plugin id")) << id;
  }
  EXPECT_EQ(ErrorCode::kNotFound, r.set_config("tts_nothing", json::object()).error().code);
  EXPECT_TRUE(fs::is_empty(dir + "/state"));
}

TEST(PluginRegistry, StatsCountWhatIsThere) {
  const auto dir = fresh_dir("stats");
  std::ofstream(dir + "/cosyvoice.yaml") << kTtsYaml;
  auto r = load(dir);
  ASSERT_TRUE(r.set_config("tts_cosyvoice", json{{"voice", "bob"}}).ok());
  const auto stats = r.stats([](const std::string& service) { return service == "cosyvoice"; });
  EXPECT_EQ(2, stats["total"]);
  EXPECT_EQ(1, stats["configured"]);
  EXPECT_EQ(1, stats["unconfigured"]);
  EXPECT_EQ(1, stats["local"]);
  EXPECT_EQ(1, stats["cloud"]);
  EXPECT_EQ(1, stats["with_active_resources"]);
  EXPECT_EQ(1, stats["categories"]["tts"]["total"]);
  EXPECT_EQ("Text to speech", stats["categories"]["tts"]["name"]);
  EXPECT_EQ(0, stats["categories"]["llm"]["total"]);
  EXPECT_EQ(1, stats["categories"]["asr"]["cloud"]);
}

}  // namespace
}  // namespace gpuvisor
