// SPDX-License-Identifier: Apache-2.0
// Running as a system service: `gpuvisor check` on broken and shipped configs.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "testkit/daemon.h"

namespace gpuvisor::itest {
namespace {

bool contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

TEST(CheckCommand, ABrokenConfigGivesEveryErrorWithItsPositionAndExitsOne) {
  const std::string dir = make_temp_dir("check");
  const std::string path = dir + "/gpuvisor.yaml";
  std::ofstream(path) << "daemon:\n  listen: nowhere\nservices:\n  web:\n    command: [x]\n"
                         "    vram_mb: lots\n  api:\n    comand: [y]\n";
  const CliResult r = run_gpuvisor({"check", "--config", path}, dir);
  EXPECT_EQ(1, r.exit_code) << r.err;
  EXPECT_TRUE(contains(r.err, path + ":2:11: 'listen' must be HOST:PORT")) << r.err;
  EXPECT_TRUE(contains(r.err, path + ":6:14: 'vram_mb' must be an integer, got 'lots'")) << r.err;
  EXPECT_TRUE(contains(r.err, path + ":8:5: unknown key 'comand'")) << r.err;
  EXPECT_TRUE(contains(r.err, path + ": 4 errors")) << r.err;  // api's missing 'command' too
  EXPECT_EQ("", r.out);
  // Nothing was started or written beside the config.
  EXPECT_FALSE(std::filesystem::exists(dir + "/state"));
}

TEST(CheckCommand, EveryExampleIsValid) {
  const std::string dir = make_temp_dir("check");
  std::vector<std::string> files;
  for (const auto& e : std::filesystem::directory_iterator(GPUVISOR_SOURCE_DIR "/examples")) {
    if (e.path().extension() == ".yaml") files.push_back(e.path().string());
  }
  ASSERT_GE(files.size(), 4u);
  for (const auto& file : files) {
    const CliResult r = run_gpuvisor({"check", "--config", file}, dir);
    EXPECT_EQ(0, r.exit_code) << file << ":\n" << r.err;
    EXPECT_TRUE(contains(r.out, "ok: ")) << r.out;
  }
}

TEST(CheckCommand, WithoutConfigTheEmbeddedDemoAndBadArgumentsExitTwo) {
  const std::string dir = make_temp_dir("check");
  const CliResult demo = run_gpuvisor({"check"}, dir);
  EXPECT_EQ(0, demo.exit_code) << demo.err;
  EXPECT_TRUE(contains(demo.out, "plugins in the embedded demo config")) << demo.out;
  const CliResult bad = run_gpuvisor({"check", "--config"}, dir);
  EXPECT_EQ(2, bad.exit_code);
  EXPECT_FALSE(bad.err.empty());
  EXPECT_EQ(2, run_gpuvisor({"check", "extra"}, dir).exit_code);
}

}  // namespace
}  // namespace gpuvisor::itest
