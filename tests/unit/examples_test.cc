// Every shipped example configuration loads: the docs cannot drift from the loader.
#include <gtest/gtest.h>

#include <filesystem>

#include "config/config_loader.h"

namespace gpuvisor {
namespace {

TEST(Examples, EveryExampleConfigLoads) {
  int loaded = 0;
  for (const auto& entry : std::filesystem::directory_iterator(GPUVISOR_EXAMPLES_DIR)) {
    if (entry.path().extension() != ".yaml") continue;
    const auto config = load_config_file(entry.path().string());
    ASSERT_TRUE(config.ok()) << config.error().message;
    EXPECT_FALSE(config->services.empty()) << entry.path();
    ++loaded;
  }
  EXPECT_GE(loaded, 4);
}

}  // namespace
}  // namespace gpuvisor
