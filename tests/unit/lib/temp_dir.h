// A new, empty directory per call under the test temp dir (TEST_TMPDIR): kept after a failure
// for a look, gone with the build tree.
#pragma once

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <string>

namespace gpuvisor {

inline std::string fresh_dir(const std::string& tag) {
  static int counter = 0;
  const auto dir = std::filesystem::path(::testing::TempDir()) /
                   ("gv-" + tag + "-" + std::to_string(getpid()) + "-" + std::to_string(++counter));
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  return dir.string();
}

}  // namespace gpuvisor
