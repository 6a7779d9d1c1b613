// The seam between the supervisor and the ways a service can run. A Runtime starts or adopts an
// Instance; an Instance reports its exit and stops its whole tree. Processes and Docker containers
// are the backends; external and remote follow behind the same two classes.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "core/duration.h"
#include "core/result.h"
#include "core/service_spec.h"
#include "runtime/exit_info.h"

namespace gpuvisor {

// What the daemon persists about a running instance so that a restarted daemon can adopt it.
struct InstanceRecord {
  std::string service;
  pid_t pid = 0;               // docker: the container's first process, 0 until it runs
  uint64_t start_time = 0;     // /proc start time: proves pid is still this process
  std::string cgroup;          // cgroup directory holding the tree, or empty
  bool from_pid_file = false;  // started by someone else, adopted through pid_file
  int64_t started_unix_ms = 0;
  RuntimeKind runtime = RuntimeKind::kProcess;
  std::string container{};  // docker: the container's name; remote: the instance id
  int restarts = 0;         // the supervisor's: automatic restarts in a row up to this instance
  bool asleep = false;      // put to sleep by its hook: adopted asleep, never probed as ready
};

// "pid 123" or "container 3f2a…" for messages.
std::string describe(const InstanceRecord& record);

class Instance {
 public:
  virtual ~Instance() = default;

  virtual const InstanceRecord& record() const = 0;
  // True once the main process has exited (its tree may still have members).
  virtual bool exited() const = 0;
  // False while the backend is still bringing it up (a container being created and started):
  // readiness is not checked before, so a health check never answers for something else.
  virtual bool launched() const { return true; }
  // Someone asked for it (an ensure): backends that end idle instances start counting again.
  virtual void touch() {}
  // Every live process of the instance: main process and descendants.
  virtual std::vector<pid_t> pids() const = 0;
  // Looks for new descendants (only needed where no cgroup holds the tree).
  virtual void refresh() = 0;
  // SIGTERM to the whole tree, SIGKILL after grace (zero: at once). done runs once, on the
  // executor, after every process of the tree is gone. Calling again with a shorter grace
  // escalates; every done given is called.
  virtual void stop(Millis grace, std::function<void(StopOutcome)> done) = 0;
};

struct LaunchOptions {
  std::string log_path;
  std::vector<std::pair<std::string, std::string>> extra_env;
  std::vector<unsigned> gpus{};  // the planner's choice (extra_env says it too); empty: none
};

// Called once, on the executor, when the main process exits.
using ExitCallback = std::function<void(ExitInfo)>;

class Runtime {
 public:
  virtual ~Runtime() = default;

  virtual Result<std::shared_ptr<Instance>> start(const ServiceSpec& spec,
                                                  const LaunchOptions& options,
                                                  ExitCallback on_exit) = 0;
  // Takes over an instance from a record; fails, touching nothing, when the PID is gone or
  // now belongs to another process. spec: the service as configured now, or null for one
  // that is no longer in the config.
  virtual Result<std::shared_ptr<Instance>> adopt(const InstanceRecord& record,
                                                  const ServiceSpec* spec,
                                                  ExitCallback on_exit) = 0;
  // A record whose main process is gone: ends what is left of its tree, where that can be
  // proven to be ours (its cgroup), and never signals the recorded PID.
  virtual void discard(const InstanceRecord& record) = 0;
  // Ends what an earlier daemon on this state directory left running that none of records
  // names: a tree in a cgroup it created whose record was never written (killed between the
  // start and the save) or was lost. Returns a line for each, for the daemon's warnings.
  virtual std::vector<std::string> reclaim(const std::vector<InstanceRecord>& /*records*/) {
    return {};
  }
  // Finds an instance of spec that someone else started (for processes: its pid_file), so
  // that ensure adopts it instead of starting a second one. NotFound when there is none.
  virtual Result<std::shared_ptr<Instance>> adopt_existing(const ServiceSpec& spec,
                                                           ExitCallback on_exit) = 0;
  // What the backend tracks about the service beyond its state (a remote machine and its
  // cost so far), as JSON for the API; null when nothing.
  virtual nlohmann::json details(const ServiceSpec&) const { return nullptr; }
};

}  // namespace gpuvisor
