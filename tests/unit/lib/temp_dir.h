// A new, empty directory per call under the test temp dir (TEST_TMPDIR): kept after a failure
// for a look, gone with the build tree.
#pragma once

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
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

// The PID a child wrote into path; 0 when there is none yet.
inline pid_t read_pid(const std::string& path) {
  pid_t pid = 0;
  std::ifstream(path) >> pid;
  return pid;
}

}  // namespace gpuvisor
