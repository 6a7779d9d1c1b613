// `gpuvisor serve`: wires the real implementations together (the one place that does) and runs
// the daemon until SIGTERM or SIGINT.
#pragma once

#include <string>

namespace gpuvisor {

struct ServeOptions {
  std::string config_path;  // empty: the embedded demo configuration
  std::string listen;       // overrides daemon.listen
  std::string state_dir;    // overrides daemon.state_dir
  std::string log_level = "info";
  bool no_cgroups = false;
};

// Returns the process exit code: 0 after a clean shutdown, 2 for a bad config or arguments,
// 1 when the daemon could not start.
int run_serve(const ServeOptions& options);

}  // namespace gpuvisor
