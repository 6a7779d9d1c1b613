// Plugins through the real daemon: manifests from a directory and from the config, the REST
// routes, and the CLI; configs validated against their schemas and kept across restarts.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "testkit/daemon.h"

namespace gpuvisor::itest {
namespace {

const char* kManifest = R"(name: cosyvoice
category: tts
title: CosyVoice
mode: http
service: voice
http: {url: "http://127.0.0.1:50000/v1/tts"}
config_schema:
  type: object
  required: [voice]
  properties:
    voice: {type: string, enum: [alice, bob]}
    speed: {type: number, minimum: 0.5, maximum: 2, default: 1.0}
)";

std::string config_yaml(const std::string& dir, int port) {
  return "plugins:\n  dir: " + dir +
         "/manifests\n  categories: {tts: Text to speech}\n  manifests:\n"
         "    - {name: whisper, category: asr, mode: worker, cloud: true,\n"
         "       worker: {command: [$TESTSVC]}}\n"
         "services:\n  voice:\n    command: [$TESTSVC, --port, \"" +
         std::to_string(port) + "\"]\n    health: {tcp: \"127.0.0.1:" + std::to_string(port) +
         "\"}\n";
}

TEST(Plugins, ListShowConfigureAndStatsOverTheApiAndCli) {
  const std::string dir = make_temp_dir("plugins");
  std::filesystem::create_directories(dir + "/manifests");
  std::ofstream(dir + "/manifests/cosyvoice.yaml") << kManifest;
  const std::string yaml = config_yaml(dir, free_port());
  {
    Daemon d(yaml, dir);
    ASSERT_TRUE(d.start()) << d.stderr_text();

    auto list = nlohmann::json::parse(d.call("GET", "/api/v1/plugins")->body);
    ASSERT_EQ(2u, list["plugins"].size()) << list.dump();
    EXPECT_EQ("Text to speech", list["categories"]["tts"]);
    auto cloud = nlohmann::json::parse(d.call("GET", "/api/v1/plugins?location=cloud")->body);
    ASSERT_EQ(1u, cloud["plugins"].size());
    EXPECT_EQ("asr_whisper", cloud["plugins"][0]["id"]);
    EXPECT_EQ(400, d.call("GET", "/api/v1/plugins?mode=grpc")->status);

    const auto table = d.cli({"plugins"});
    EXPECT_EQ(0, table.exit_code) << table.err;
    EXPECT_NE(std::string::npos, table.out.find("tts_cosyvoice")) << table.out;
    EXPECT_NE(std::string::npos, table.out.find("asr_whisper")) << table.out;

    // Unconfigured: the schema's defaults.
    auto shown = d.cli({"plugin", "config", "tts_cosyvoice"});
    EXPECT_EQ(0, shown.exit_code) << shown.err;
    EXPECT_EQ(nlohmann::json({{"speed", 1.0}}), nlohmann::json::parse(shown.out));

    // A config that breaks the schema: every violation, with its path; nothing saved.
    std::ofstream(dir + "/bad.json") << R"({"voice": "carol", "speed": 9})";
    const auto bad = d.cli({"plugin", "config", "tts_cosyvoice", "--set", dir + "/bad.json"});
    EXPECT_EQ(1, bad.exit_code);
    EXPECT_NE(std::string::npos, bad.err.find("config for tts_cosyvoice does not match its "
                                              "schema:"))
        << bad.err;
    EXPECT_NE(std::string::npos, bad.err.find("/voice: ")) << bad.err;
    EXPECT_NE(std::string::npos, bad.err.find("/speed: ")) << bad.err;
    auto api_bad = d.call("PUT", "/api/v1/plugins/tts_cosyvoice/config");  // no body
    EXPECT_EQ(400, api_bad->status);
    EXPECT_FALSE(
        nlohmann::json::parse(d.call("GET", "/api/v1/plugins/tts_cosyvoice")->body)["configured"]
            .get<bool>());

    std::ofstream(dir + "/good.json") << R"({"voice": "bob"})";
    const auto good = d.cli({"plugin", "config", "tts_cosyvoice", "--set", dir + "/good.json"});
    ASSERT_EQ(0, good.exit_code) << good.err;
    EXPECT_EQ(nlohmann::json({{"voice", "bob"}, {"speed", 1.0}}), nlohmann::json::parse(good.out));

    // Ids that try to leave the config directory are refused.
    const auto escape = d.call("GET", "/api/v1/plugins/..%2Fx/config");
    EXPECT_EQ(400, escape->status) << escape->body;
    EXPECT_NE(std::string::npos, escape->body.find("invalid plugin id")) << escape->body;

    ASSERT_EQ(0, d.cli({"ensure", "voice"}).exit_code);
    const auto stats = nlohmann::json::parse(d.call("GET", "/api/v1/plugins/stats")->body);
    EXPECT_EQ(2, stats["total"]);
    EXPECT_EQ(1, stats["configured"]);
    EXPECT_EQ(1, stats["cloud"]);
    EXPECT_EQ(1, stats["with_active_resources"]);
    EXPECT_EQ(1, stats["categories"]["tts"]["configured"]);
    EXPECT_EQ(0, d.terminate());
  }
  // Kept across a restart.
  Daemon again(yaml, dir);
  ASSERT_TRUE(again.start()) << again.stderr_text();
  const auto kept = again.cli({"plugin", "config", "tts_cosyvoice"});
  EXPECT_EQ(nlohmann::json({{"voice", "bob"}, {"speed", 1.0}}), nlohmann::json::parse(kept.out));
  ASSERT_EQ(0, again.cli({"plugin", "config", "tts_cosyvoice", "--delete"}).exit_code);
  EXPECT_FALSE(std::filesystem::exists(dir + "/state/plugins/tts_cosyvoice.json"));
}

TEST(Plugins, ABadManifestStopsTheDaemonWithEveryProblem) {
  const std::string dir = make_temp_dir("plugins-bad");
  std::filesystem::create_directories(dir + "/manifests");
  std::ofstream(dir + "/manifests/x.yaml") << "name: x\ncategory: y\nmode: grpc\n";
  Daemon d(config_yaml(dir, free_port()), dir);
  EXPECT_FALSE(d.start());
  EXPECT_EQ(2, d.wait_exit());
  EXPECT_NE(std::string::npos,
            d.stderr_text().find(dir + "/manifests/x.yaml: 'mode' must be http or worker, got "
                                       "'grpc'"))
      << d.stderr_text();
}

}  // namespace
}  // namespace gpuvisor::itest
