// The worker processes of one worker-mode plugin: up to its concurrency of them, each running
// one job at a time. A worker starts when a job needs one (or to replace one, per the plugin's
// restart policy), is initialised with the plugin's config and registered in the
// WorkerRegistry, so its processes count as ours in the GPU views. Ends that gpuvisor did not
// ask for are paced by a growing backoff and bounded by a limit (WorkerSpec). Every start, end
// and replacement is an event: worker.started, worker.exited, worker.restarted,
// worker.gave_up.
#pragma once

#include <boost/asio/any_io_executor.hpp>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>

#include "core/clock.h"
#include "events/event_bus.h"
#include "jobs/worker.h"
#include "plugins/manifest.h"
#include "resources/worker_registry.h"

namespace gpuvisor {

class WorkerPool {
 public:
  // What the job queue hears about a job given to the pool.
  struct JobEvents {
    // A worker took it (its PID).
    std::function<void(int64_t job, pid_t pid)> taken;
    // stream_chunk, progress, result or error, for that job.
    std::function<void(int64_t job, const nlohmann::json& message)> message;
    // It will get no answer: its worker ended, could not start, or the pool gave up.
    std::function<void(int64_t job, const std::string& why)> lost;
  };
  struct Environment {
    boost::asio::any_io_executor executor;
    Clock& clock;          // the restart backoff and the idle timeout
    std::string log_path;  // the workers' stderr
    std::string conda;     // executable for worker.conda_env; empty: conda from PATH
    EventBus& events;
    WorkerRegistry& registry;
    std::function<nlohmann::json()> config;  // the plugin's config, as a worker is initialised
    std::string remote;                      // the remote service its jobs use, if any
    // Each worker's tree goes in a cgroup of its own under this directory; empty: no cgroups.
    std::string cgroup_parent{};
  };

  WorkerPool(const PluginManifest& plugin, Environment env, JobEvents jobs);
  ~WorkerPool();
  WorkerPool(const WorkerPool&) = delete;
  WorkerPool& operator=(const WorkerPool&) = delete;

  // Runs the job on a free worker, starting one if there is room (after any backoff), or
  // once a busy one is done.
  void execute(int64_t job, nlohmann::json input);
  // A job still waiting is dropped (lost); a running one has its worker stopped.
  void cancel(int64_t job);
  // Stops an idle worker to free its GPU memory for `why` (a placement): "stop", then SIGTERM
  // to its tree at once and SIGKILL after the returned grace. It is not replaced. nullopt: no
  // such worker here, or it is not idle.
  std::optional<Millis> evict(const std::string& id, const std::string& why);
  // The plugin's config changed: live workers get "reload", and a reached limit is cleared.
  void reload(const nlohmann::json& config);
  size_t size() const { return members_.size(); }
  // The daemon is stopping: every worker gets "stop" and SIGTERM, SIGKILL after grace; no new
  // one starts. done runs once all have exited. Their jobs are not reported lost: the store
  // keeps them running, and the next daemon runs them again.
  void stop_all(Millis grace, std::function<void()> done);

 private:
  enum class Ending { kNone, kCancel, kAsked, kEvicted };
  struct Member {
    std::shared_ptr<Worker> worker;
    bool ready = false;
    bool sent = false;  // the job's execute went out
    int64_t job = 0;    // 0: idle
    nlohmann::json input;
    Ending ending = Ending::kNone;
    std::string evicted_for{};  // the placement an eviction made room for
    std::unique_ptr<Timer> idle;
  };

  Status spawn(const std::string& replaces);
  bool may_start_now();  // else a timer calls dispatch() when the backoff is over
  void ended_unasked(const std::string& how);
  void assign(const std::string& id, int64_t job, nlohmann::json input);
  void dispatch();
  void on_message(const std::string& id, const nlohmann::json& message);
  void on_exit(const std::string& id, const std::string& how);
  void became_idle(const std::string& id);
  void set_status(const std::string& id, const char* status, int64_t job);
  Millis backoff() const;
  nlohmann::json about(const std::string& id) const;

  PluginManifest plugin_;
  Environment env_;
  JobEvents jobs_;
  std::map<std::string, Member> members_;  // by registry id, worker-<plugin>-<n>
  std::deque<std::pair<int64_t, nlohmann::json>> waiting_;
  uint64_t seq_ = 0;
  unsigned ends_in_a_row_ = 0;  // ends not asked for since the last completed job
  SteadyTime not_before_{};
  std::unique_ptr<Timer> backoff_timer_;
  unsigned replacements_due_ = 0;
  std::string replaces_;           // the worker the next replacement stands in for
  std::function<void()> stopped_;  // stop_all's done, once the last worker is gone
  bool stopping_ = false;
  std::string gave_up_;  // why jobs fail at once, when the restart limit was reached
  std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);
};

}  // namespace gpuvisor
