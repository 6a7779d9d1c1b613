// Running jobs on plugins: FIFO per plugin, up to the plugin's concurrency at once, durable from
// the moment a submission is acknowledged (JobStore). An http plugin's job ensures the plugin's
// service (evicting per the planner), keeps it busy while the request runs, then releases it.
// Every change is an event: job.queued, job.started, job.completed, job.failed, job.cancelled.
#pragma once

#include <boost/asio/any_io_executor.hpp>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>

#include "core/clock.h"
#include "events/event_bus.h"
#include "jobs/job_store.h"
#include "jobs/worker_pool.h"
#include "plugins/registry.h"
#include "resources/worker_registry.h"
#include "runtime/oneshot.h"
#include "supervisor/supervisor.h"

namespace gpuvisor {

class JobQueue {
 public:
  struct Options {
    std::string log_dir;  // where workers' stderr goes (<log_dir>/worker-<plugin>.log)
    std::string conda;    // the executable for workers with a conda_env; empty: from PATH
    Millis retention{0};  // finished jobs older than this are deleted; 0: kept forever
    // Where each worker gets a cgroup of its own (CgroupParent::dir()); empty: none.
    std::string cgroup_parent{};
    int64_t retention_count = 0;  // finished jobs past the newest this many go; 0: no limit
    // How long a cancel waits for a running job to end: beyond a worker's stop grace (5 s,
    // then SIGKILL), within the CLI's wait for the answer.
    Millis cancel_timeout{15'000};
  };
  // clock: the retention sweeps, cancel waits, and the workers' backoff and idle timeout.
  JobQueue(boost::asio::any_io_executor executor, Clock& clock, JobStore& store,
           const PluginRegistry& plugins, Supervisor& supervisor, EventBus& events,
           WorkerRegistry& workers, Options options);
  ~JobQueue();

  // Picks up what a previous daemon left: pending jobs queue again in their order; a job that
  // was running was interrupted, and runs again unless that was its second start already.
  Status recover();
  // Deletes finished jobs past the retention now, then every so often (jobs.purged events).
  void start_retention();
  // Deletes now the finished jobs older than older_than (0s: every one) and those past the
  // newest keep (0: every one); with neither, by the configured retention. done gets how many
  // went.
  void prune(std::optional<Millis> older_than, std::optional<int64_t> keep,
             std::function<void(Result<int64_t>)> done);

  // done gets the job once it is on disk, or why it was refused (an unknown plugin).
  void submit(const std::string& plugin, nlohmann::json input,
              std::function<void(Result<Job>)> done);
  // A pending job (or one still waiting for its service) is cancelled at once; a running one
  // has its request closed or its worker stopped. done gets the job once it has ended (as
  // cancelled, or as it ended if that came first) and is on disk: by then no worker is working
  // on it any more. One that has not ended within cancel_timeout gets a kTimeout error saying
  // it is still stopping.
  void cancel(int64_t id, std::function<void(Result<Job>)> done);
  // The daemon is stopping: no job starts any more; workers are asked to stop (SIGKILL after
  // grace) and done runs once they are gone. Jobs that were running stay so in the store, to
  // run again under the next daemon.
  void shutdown(Millis grace, std::function<void()> done);
  // The plugin's config was saved or deleted: its live workers reload it.
  void reload(const std::string& plugin);
  // Stops an idle worker so a placement gets its GPU memory (WorkerPool::evict).
  std::optional<Millis> evict_worker(const std::string& id, const std::string& why);

  static constexpr int kMaxAttempts = 2;  // a job interrupted by a daemon crash runs once more

 private:
  // A cancel waiting for its job to end; answered once, by the end or by its timer.
  struct CancelWait {
    std::function<void(Result<Job>)> done;
    std::unique_ptr<Timer> timer;
    bool answered = false;
  };
  struct Running {
    Job job;
    bool sent = false;  // gone to its service or worker: ending it takes their doing
    std::vector<std::shared_ptr<CancelWait>> cancels;
    std::shared_ptr<StreamControl> control = std::make_shared<StreamControl>();
    bool cancelled = false;
    std::string service{};  // held busy for the job, when it has one
    Hold hold;              // the service kept busy for the job
  };
  void pump(const std::string& plugin);
  void start(Job job);
  void finish(int64_t id, JobState state, nlohmann::json result, std::string error);
  void wait_for_end(Running& running, std::function<void(Result<Job>)> done);
  void answer(const std::shared_ptr<CancelWait>& wait, Result<Job> result);
  void publish(const Job& job, const char* type);
  static void run(JobQueue* self, std::shared_ptr<bool> alive, int64_t id);
  void send_http(int64_t id);
  void send_worker(int64_t id);
  WorkerPool& pool(const PluginManifest& plugin);
  void ran_by(int64_t id, pid_t pid);  // records the process that runs the job
  void on_worker_message(int64_t id, const nlohmann::json& message);

  boost::asio::any_io_executor executor_;
  Clock& clock_;
  JobStore& store_;
  const PluginRegistry& plugins_;
  Supervisor& supervisor_;
  EventBus& events_;
  WorkerRegistry& workers_;
  Options options_;
  std::map<std::string, std::unique_ptr<WorkerPool>> pools_;  // by plugin
  std::map<std::string, std::deque<Job>> pending_;            // per plugin, FIFO
  std::map<std::string, unsigned> running_count_;
  // A finished job's hold on its service, kept until the next job of its plugin has its own:
  // the service stays busy between them, so a queued placement does not take the gap (jobs
  // collate as proxied requests do), unless the service drains for it.
  std::map<std::string, Hold> bridges_;
  std::map<int64_t, Running> running_;
  std::unique_ptr<Timer> retention_timer_;
  bool stopping_ = false;
  std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);
};

nlohmann::json to_json(const Job& job);

}  // namespace gpuvisor
