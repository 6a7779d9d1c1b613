// The processes that execute jobs (workers): who they are, what they run, and every PID that
// belongs to them, found again on each look (a worker's children come and go), so their GPU
// memory is counted as ours. The jobs layer registers and updates them.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "core/result.h"

namespace gpuvisor {

struct WorkerInfo {
  std::string id;                    // unique
  std::string type;                  // what kind of work it does (a plugin's category)
  pid_t pid = 0;                     // main process; 0 for a worker with no local process (remote)
  uint64_t start_time = 0;           // of pid, taken at registration: proves it later
  std::string plugin{};              // the plugin whose jobs it runs, if any
  std::string service{};             // that plugin's service, if any: its priority is the worker's
  std::string status = "idle";       // starting, idle, running, stopping
  std::optional<std::string> job{};  // the job it is running now
  std::optional<std::string> loaded_resource{};  // the model or file it has loaded, as it says
  std::optional<unsigned> gpu{};                 // the GPU it was given
  std::optional<std::string> container{};
  std::optional<std::string> conda_env{};
  std::optional<std::string> remote{};  // the remote resource (a remote service) its jobs use
  // Registered by an app over the API (outside_workers.h): gpuvisor neither started it nor
  // may stop it; it leaves the registry when its process exits.
  bool outside = false;
  std::optional<std::string> plugin_name{};  // as the app says it
  nlohmann::json config = nullptr;           // the plugin config it runs with, as the app says
};

// A field to leave alone (nullopt), to set (a value), or to clear (an empty inner optional).
template <typename T>
using Change = std::optional<std::optional<T>>;

struct WorkerUpdate {
  std::optional<std::string> type;
  std::optional<std::string> status;
  Change<std::string> job;
  Change<std::string> loaded_resource;
  Change<unsigned> gpu;
  Change<std::string> container;
  Change<std::string> plugin;
  Change<std::string> plugin_name;
  std::optional<nlohmann::json> config;  // null clears it
};

// What the registry needs to know about processes; the daemon wires /proc behind it.
struct ProcessTable {
  std::function<std::optional<uint64_t>(pid_t)> start_time;  // nullopt: not running
  std::function<std::vector<pid_t>(pid_t)> descendants;      // live, root excluded
  // This machine's, read from /proc (descendants: by parent chain and session).
  static ProcessTable system();
};

class WorkerRegistry {
 public:
  explicit WorkerRegistry(ProcessTable processes) : processes_(std::move(processes)) {}

  // BadRequest for an empty id or type, Conflict for a taken id, NotFound for a pid that is
  // not running. The pid's start time is recorded here.
  Status add(WorkerInfo worker);
  Status update(const std::string& id, const WorkerUpdate& update);
  Status remove(const std::string& id);

  const WorkerInfo* find(const std::string& id) const;
  // The worker whose main process is pid (not a descendant's).
  const WorkerInfo* find_main(pid_t pid) const;
  // The worker a PID belongs to: its main process or any live descendant.
  const WorkerInfo* find_by_pid(pid_t pid) const;
  std::vector<const WorkerInfo*> by_job(const std::string& job) const;
  std::vector<const WorkerInfo*> by_type(const std::string& type) const;
  std::vector<const WorkerInfo*> all() const;

  // The main process (while it is still the one registered) and its live descendants, read
  // now, never cached.
  std::vector<pid_t> related_pids(const std::string& id) const;

 private:
  ProcessTable processes_;
  std::map<std::string, WorkerInfo> workers_;
};

}  // namespace gpuvisor
