// Every shipped example configuration loads: the docs cannot drift from the loader.
#include <gtest/gtest.h>

#include <filesystem>
#include <set>

#include "config/config_loader.h"
#include "plugins/registry.h"

namespace gpuvisor {
namespace {

TEST(Examples, EveryExampleConfigLoadsAndEveryRuntimeHasOne) {
  int loaded = 0;
  std::set<std::string> runtimes;
  for (const auto& entry : std::filesystem::directory_iterator(GPUVISOR_EXAMPLES_DIR)) {
    if (entry.path().extension() != ".yaml") continue;
    const auto config = load_config_file(entry.path().string());
    ASSERT_TRUE(config.ok()) << config.error().message;
    EXPECT_FALSE(config->services.empty()) << entry.path();
    // Inline plugin manifests too (a plugins.dir of an example is the user's to fill).
    std::set<std::string> services;
    for (const auto& s : config->services) {
      services.insert(s.name);
      runtimes.insert(to_string(s.runtime));
    }
    const auto plugins = PluginRegistry::load(
        {"", config->plugins.manifests, config->plugins.categories, services, ""});
    EXPECT_TRUE(plugins.ok()) << entry.path() << ": " << plugins.error().message;
    ++loaded;
  }
  EXPECT_GE(loaded, 4);
  EXPECT_EQ((std::set<std::string>{"docker", "external", "process", "remote"}), runtimes);
}

}  // namespace
}  // namespace gpuvisor
