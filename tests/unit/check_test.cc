// SPDX-License-Identifier: Apache-2.0
// `gpuvisor check`: every problem of a config and its plugins, each with where it is.
#include "app/check.h"

#include <gtest/gtest.h>

#include <fstream>

#include "lib/temp_dir.h"

namespace gpuvisor {
namespace {

std::string write(const std::string& path, const std::string& text) {
  std::ofstream(path) << text;
  return path;
}

TEST(Check, EveryProblemOfTheConfigAndItsPluginsWithItsPosition) {
  const auto dir = fresh_dir("check");
  const auto plugins = dir + "/plugins";
  std::filesystem::create_directories(plugins);
  write(plugins + "/broken.yaml", "name: [unclosed");
  const auto path =
      write(dir + "/gpuvisor.yaml",
            "daemon:\n  use_cgroups: sure\n"
            "services:\n  tts:\n    command: [x]\n    vram_mb: lots\n"
            "plugins:\n  dir: " +
                plugins +
                "\n  manifests:\n"
                "    - {name: speaker, category: tts, mode: sideways, service: tts}\n");
  const CheckReport report = check_config(path);
  EXPECT_EQ(report.errors,
            (std::vector<std::string>{
                path + ":2:16: 'use_cgroups' must be true or false, got 'sure'",
                path + ":6:14: 'vram_mb' must be an integer, got 'lots'",
                plugins + "/broken.yaml:1:1: YAML syntax error: end of sequence flow not found",
                path + ":10:7: 'mode' must be http or worker, got 'sideways'",
            }));
  EXPECT_EQ(0u, report.services);
}

TEST(Check, APluginOfAServiceWithProblemsIsNotSaidToNameNoService) {
  const auto dir = fresh_dir("check");
  const auto path =
      write(dir + "/gpuvisor.yaml",
            "services:\n  tts:\n    command: [x]\n    stop_grace: forever\n"
            "plugins:\n  manifests:\n    - {name: speaker, category: tts, mode: http, "
            "service: tts, http: {url: 'http://127.0.0.1:1/x'}}\n"
            "    - {name: other, category: tts, mode: http, service: nope, "
            "http: {url: 'http://127.0.0.1:1/x'}}\n");
  const CheckReport report = check_config(path);
  EXPECT_EQ(report.errors,
            (std::vector<std::string>{
                path + ":4:17: 'stop_grace': bad duration 'forever' (use e.g. 500ms, 10s, 5m)",
                path + ":8:7: service 'nope' is not in the config"}));
}

TEST(Check, AValidConfigIsCounted) {
  const auto dir = fresh_dir("check");
  const auto path = write(dir + "/gpuvisor.yaml",
                          "services:\n  a: {command: [x]}\n  b: {command: [y]}\n"
                          "plugins:\n  manifests:\n    - {name: speaker, category: tts, mode: "
                          "http, service: a, http: {url: 'http://127.0.0.1:1/x'}}\n");
  const CheckReport report = check_config(path);
  EXPECT_TRUE(report.errors.empty()) << report.errors.front();
  EXPECT_EQ(2u, report.services);
  EXPECT_EQ(1u, report.plugins);
  // Nothing written beside it: no plugin config directory, no state.
  EXPECT_EQ(1, std::distance(std::filesystem::directory_iterator(dir),
                             std::filesystem::directory_iterator()));
}

TEST(Check, TheEmbeddedDemoIsValid) {
  const CheckReport report = check_config("");
  EXPECT_TRUE(report.errors.empty()) << report.errors.front();
  EXPECT_GT(report.services, 0u);
  EXPECT_GT(report.plugins, 0u);
}

TEST(Check, AFileThatCannotBeReadIsOneError) {
  const auto path = fresh_dir("check") + "/missing.yaml";
  EXPECT_EQ(check_config(path).errors,
            (std::vector<std::string>{path + ": cannot read: No such file or directory"}));
}

}  // namespace
}  // namespace gpuvisor
