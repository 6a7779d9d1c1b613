// How a child process ended, and how a stop of its tree went: what every owner of a child
// process (services, plugin workers, hooks) reports, so that one ending reads the same wherever
// it is shown.
#pragma once

#include <string>

namespace gpuvisor {

struct ExitInfo {
  bool known = false;    // false for adopted processes: only their parent can read the status
  int code = 0;          // exit status, when exited normally
  int signal = 0;        // terminating signal, or 0
  std::string detail{};  // when set, says it all: "container x does not exist: ...", "OOM-killed"
  bool planned = false;  // ended on purpose by its backend (idle, budget): stopped, not failed
  // Its engine (dockerd) could not be reached: the start, or the knowledge that it still runs,
  // failed with the engine, not with the service. The supervisor retries without spending the
  // restart budget.
  bool engine_unreachable = false;

  bool success() const { return known && signal == 0 && code == 0 && detail.empty(); }
  // The one wording of an exit, read by people, tests and docs alike: "exited with status 3",
  // "killed by signal 9 (Killed)", "exited (status unknown: not a child of this daemon)".
  std::string describe() const;
};

struct StopOutcome {
  bool killed = false;  // SIGKILL was needed (grace ran out, or grace was zero)
  std::string how{};    // when set, what the stop did instead ("put to sleep ...")
};

}  // namespace gpuvisor
