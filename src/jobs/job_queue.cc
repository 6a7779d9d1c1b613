#include "jobs/job_queue.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/post.hpp>
#include <chrono>

#include "core/duration.h"

namespace gpuvisor {

namespace asio = boost::asio;
using nlohmann::json;

namespace {

// A retention sweep by count alone runs this often.
constexpr Millis kHourly{3'600'000};

}  // namespace

json to_json(const Job& j) {
  return {{"id", j.id},
          {"plugin", j.plugin},
          {"state", to_string(j.state)},
          {"input", j.input},
          {"created_ms", j.created_ms},
          {"started_ms", j.started_ms},
          {"finished_ms", j.finished_ms},
          {"result", j.result},
          {"error", j.error},
          {"attempts", j.attempts},
          {"progress", j.progress},
          {"worker_pid", j.worker_pid > 0 ? json(j.worker_pid) : json(nullptr)}};
}

JobQueue::JobQueue(asio::any_io_executor executor, Clock& clock, JobStore& store,
                   const PluginRegistry& plugins, Supervisor& supervisor, EventBus& events,
                   WorkerRegistry& workers, Options options)
    : executor_(std::move(executor)),
      clock_(clock),
      store_(store),
      plugins_(plugins),
      supervisor_(supervisor),
      events_(events),
      workers_(workers),
      options_(std::move(options)) {}

JobQueue::~JobQueue() {
  *alive_ = false;
  for (auto& [id, r] : running_) r.control->cancel();
}

void JobQueue::publish(const Job& job, const char* type) {
  json data = {{"id", job.id}, {"plugin", job.plugin}, {"state", to_string(job.state)}};
  if (!job.error.empty()) data["error"] = job.error;
  events_.publish(type, data);
}

Status JobQueue::recover() {
  auto jobs = store_.unfinished();
  if (!jobs) return jobs.error();
  for (auto& job : *jobs) {
    if (plugins_.find(job.plugin) == nullptr) {
      job.state = JobState::kFailed;
      job.error = "plugin " + job.plugin + " is no longer configured";
    } else if (job.state == JobState::kRunning && job.attempts >= kMaxAttempts) {
      job.state = JobState::kFailed;
      job.error = "interrupted by a daemon restart, " + std::to_string(job.attempts) +
                  " times; not started again";
    } else {
      if (job.state == JobState::kRunning) {
        job.error = "interrupted by a daemon restart; queued again";
        job.state = JobState::kPending;
      }
      pending_[job.plugin].push_back(job);
      store_.update(job);
      continue;
    }
    job.finished_ms = clock_.unix_ms();
    store_.update(job);
    publish(job, "job.failed");
  }
  for (auto& [plugin, queue] : pending_) {
    if (!queue.empty()) {
      spdlog::info("jobs: {} pending for {} after restart", queue.size(), plugin);
    }
  }
  std::vector<std::string> plugins;
  for (const auto& [plugin, queue] : pending_) plugins.push_back(plugin);
  for (const auto& p : plugins) pump(p);
  return {};
}

void JobQueue::start_retention() {
  const bool by_age = options_.retention.count() > 0;
  if (!by_age && options_.retention_count <= 0) return;
  store_.purge(
      by_age ? clock_.unix_ms() - options_.retention.count() : 0,
      options_.retention_count > 0 ? options_.retention_count : -1,
      [this, alive = std::weak_ptr<bool>(alive_)](Result<int64_t> purged) {
        if (alive.expired()) return;
        if (!purged) {
          spdlog::error("jobs: purging old jobs: {}", purged.error().message);
        } else if (*purged > 0) {
          spdlog::info("jobs: {} finished jobs deleted (retention {}, at most {})", *purged,
                       format_duration(options_.retention), options_.retention_count);
          events_.publish("jobs.purged", {{"count", *purged},
                                          {"retention", format_duration(options_.retention)},
                                          {"retention_count", options_.retention_count}});
        }
      });
  // Often enough that nothing outlives its retention by more than half of it, at most hourly.
  const Millis every =
      by_age ? std::clamp(options_.retention / 2, Millis(50), Millis(3'600'000)) : kHourly;
  if (!retention_timer_) retention_timer_ = clock_.make_timer();
  retention_timer_->arm_after(every, [this] { start_retention(); });
}

void JobQueue::prune(std::optional<Millis> older_than, std::optional<int64_t> keep,
                     std::function<void(Result<int64_t>)> done) {
  int64_t cut = 0;     // finished before this go (0: none by age)
  int64_t count = -1;  // past the newest this many go (-1: none by count)
  if (older_than || keep) {
    if (older_than) cut = clock_.unix_ms() - older_than->count();
    if (keep) count = *keep;
  } else {
    if (options_.retention.count() > 0) cut = clock_.unix_ms() - options_.retention.count();
    if (options_.retention_count > 0) count = options_.retention_count;
    if (cut == 0 && count < 0) {
      done(make_error(ErrorCode::kBadRequest,
                      "nothing to prune by: the configured retention keeps every job "
                      "(give older_than or keep)"));
      return;
    }
  }
  store_.purge(
      cut, count,
      [this, alive = std::weak_ptr<bool>(alive_), done = std::move(done)](Result<int64_t> purged) {
        if (alive.expired()) return;
        if (purged && *purged > 0) {
          events_.publish("jobs.purged", {{"count", *purged}, {"pruned", true}});
        }
        done(std::move(purged));
      });
}

void JobQueue::submit(const std::string& plugin, json input,
                      std::function<void(Result<Job>)> done) {
  const auto* p = plugins_.find(plugin);
  if (!valid_plugin_id(plugin) || p == nullptr) {
    asio::post(executor_, [done = std::move(done), plugin] {
      done(make_error(ErrorCode::kNotFound, "no plugin '" + plugin + "'"));
    });
    return;
  }
  Job job;
  job.plugin = plugin;
  job.input = std::move(input);
  job.created_ms = clock_.unix_ms();
  store_.insert(std::move(job), [this, alive = std::weak_ptr<bool>(alive_),
                                 done = std::move(done)](Result<Job> stored) {
    if (alive.expired()) return;
    if (stored) {
      publish(*stored, "job.queued");
      pending_[stored->plugin].push_back(*stored);
      pump(stored->plugin);
    }
    done(std::move(stored));
  });
}

void JobQueue::cancel(int64_t id, std::function<void(Result<Job>)> done) {
  if (auto r = running_.find(id); r != running_.end()) {
    const bool was_cancelled = std::exchange(r->second.cancelled, true);
    wait_for_end(r->second, std::move(done));
    if (was_cancelled) return;  // a second cancel joins the first
    if (!r->second.sent && !r->second.service.empty()) {
      // Still waiting for its service: nothing of the job runs yet, so it ends now (the hold,
      // when it comes, finds the job gone and is given back).
      finish(id, JobState::kCancelled, nullptr, "cancelled before it started");
      return;
    }
    r->second.control->cancel();  // send_http sees it and finishes the job as cancelled
    // A worker's job: its worker goes, and its exit finishes the job. One still waiting for a
    // worker is finished at once, which erases r: nothing below may use it.
    const std::string plugin = r->second.job.plugin;
    if (auto pool = pools_.find(plugin); pool != pools_.end()) pool->second->cancel(id);
    return;
  }
  auto job = store_.get(id);
  if (!job) {
    asio::post(executor_, [done = std::move(done), e = job.error()] { done(e); });
    return;
  }
  if (is_final(job->state)) {
    asio::post(executor_, [done = std::move(done), j = *job] {
      done(make_error(ErrorCode::kConflict,
                      "job " + std::to_string(j.id) + " already " + to_string(j.state)));
    });
    return;
  }
  auto& queue = pending_[job->plugin];
  std::erase_if(queue, [id](const Job& j) { return j.id == id; });
  job->state = JobState::kCancelled;
  job->finished_ms = clock_.unix_ms();
  store_.update(*job, [this, alive = std::weak_ptr<bool>(alive_), j = *job,
                       done = std::move(done)](const Status& written) {
    if (alive.expired()) return;
    if (!written) {
      done(written.error());
      return;
    }
    publish(j, "job.cancelled");
    done(j);
  });
}

void JobQueue::wait_for_end(Running& running, std::function<void(Result<Job>)> done) {
  auto wait = std::make_shared<CancelWait>(CancelWait{std::move(done), clock_.make_timer()});
  running.cancels.push_back(wait);
  // The timer lives in wait: a weak reference, or the two would keep each other alive.
  wait->timer->arm_after(
      options_.cancel_timeout, [this, weak = std::weak_ptr<CancelWait>(wait), id = running.job.id,
                                after = options_.cancel_timeout] {
        const auto waiting = weak.lock();
        if (!waiting) return;
        answer(waiting,
               make_error(ErrorCode::kTimeout,
                          "job " + std::to_string(id) + " is still stopping after " +
                              format_duration(after) +
                              " (its worker has not ended yet); it ends cancelled once it has"));
      });
}

void JobQueue::answer(const std::shared_ptr<CancelWait>& wait, Result<Job> result) {
  if (std::exchange(wait->answered, true)) return;
  wait->timer->cancel();
  // Posted: the answer never runs inside the queue's own bookkeeping.
  asio::post(executor_,
             [wait, result = std::move(result)]() mutable { wait->done(std::move(result)); });
}

void JobQueue::shutdown(Millis grace, std::function<void()> done) {
  stopping_ = true;
  bridges_.clear();
  for (auto& [id, r] : running_) {
    for (const auto& wait : r.cancels) {
      answer(wait, make_error(ErrorCode::kUnavailable,
                              "the daemon is shutting down; job " + std::to_string(id) +
                                  " stays running in the store and runs again when it starts"));
    }
    r.cancels.clear();
  }
  if (retention_timer_) retention_timer_->cancel();
  auto left = std::make_shared<size_t>(pools_.size() + 1);
  auto one_done = [left, done = std::move(done)] {
    if (--*left == 0) done();
  };
  for (auto& [plugin, pool] : pools_) pool->stop_all(grace, one_done);
  one_done();
}

void JobQueue::pump(const std::string& plugin) {
  if (stopping_) return;
  const auto* p = plugins_.find(plugin);
  if (p == nullptr) return;
  auto& queue = pending_[plugin];
  while (!queue.empty() && running_count_[plugin] < p->concurrency) {
    Job job = std::move(queue.front());
    queue.pop_front();
    start(std::move(job));
  }
}

void JobQueue::start(Job job) {
  ++running_count_[job.plugin];
  job.state = JobState::kRunning;
  job.started_ms = clock_.unix_ms();
  ++job.attempts;
  const int64_t id = job.id;
  // The job goes to its service or worker only once this attempt is on disk: a daemon killed
  // under it then always finds the run counted, so a job never runs more often than its
  // attempts say (and kMaxAttempts holds).
  store_.update(job, [this, alive = std::weak_ptr<bool>(alive_), job](const Status& written) {
    if (alive.expired()) return;
    if (!written) spdlog::error("job {}: {}", job.id, written.error().message);
    publish(job, "job.started");
    const auto r = running_.find(job.id);
    if (r == running_.end()) return;
    if (r->second.cancelled) {
      finish(job.id, JobState::kCancelled, nullptr, "cancelled before it started");
      return;
    }
    run(this, alive_, job.id);
  });
  Running running;
  running.job = std::move(job);
  running_[id] = std::move(running);
}

void JobQueue::run(JobQueue* self, std::shared_ptr<bool> alive, int64_t id) {
  auto& r = self->running_.at(id);
  const auto* plugin = self->plugins_.find(r.job.plugin);
  r.service = plugin->service;
  const auto go = [self, id, mode = plugin->mode] {
    if (mode == PluginMode::kWorker) {
      self->send_worker(id);
    } else {
      self->send_http(id);
    }
  };
  if (r.service.empty()) {
    r.sent = true;
    go();
    return;
  }
  // The service first: started (evicting per the planner) if it is not running, then kept
  // busy for the job, so no plan evicts it under the job.
  const std::string service = r.service;
  // Draining, the bridge from the job before would keep it from ever going idle.
  if (self->supervisor_.draining(service)) self->bridges_.erase(r.job.plugin);
  self->supervisor_.ensure_held(
      service, plugin->queue_timeout, "running job " + std::to_string(id),
      [self, alive, id, service, go, plugin = r.job.plugin](Result<Hold> hold) {
        if (!*alive) return;
        self->bridges_.erase(plugin);  // this job holds the service now, or never will
        const auto it = self->running_.find(id);
        if (it == self->running_.end()) return;  // cancelled meanwhile: the hold goes back
        auto& running = it->second;
        if (running.cancelled) {
          self->finish(id, JobState::kCancelled, nullptr, "cancelled before it started");
          return;
        }
        if (!hold) {
          self->finish(id, JobState::kFailed, nullptr,
                       "service " + service + ": " + hold.error().message);
          return;
        }
        running.hold = std::move(*hold);
        running.sent = true;
        if (const auto view = self->supervisor_.get(service); view && view->pid > 0) {
          self->ran_by(id, view->pid);
        }
        go();
      });
}

void JobQueue::send_http(int64_t id) {
  auto& r = running_.at(id);
  const auto* p = plugins_.find(r.job.plugin);
  asio::co_spawn(
      executor_,
      http_request(p->http_method, p->http_url, r.job.input.dump(), p->http_timeout, r.control),
      [this, alive = alive_, id](std::exception_ptr, HttpOutcome out) {
        if (!*alive) return;
        if (running_.at(id).cancelled) {
          finish(id, JobState::kCancelled, nullptr, "cancelled while running");
        } else if (!out.error.empty()) {
          finish(id, JobState::kFailed, nullptr, "request failed: " + out.error);
        } else if (out.status < 200 || out.status >= 300) {
          finish(id, JobState::kFailed, nullptr,
                 "HTTP " + std::to_string(out.status) + ": " + out.body.substr(0, 500));
        } else {
          auto result = json::parse(out.body, nullptr, false);
          finish(id, JobState::kCompleted,
                 result.is_discarded() ? json(out.body) : std::move(result), "");
        }
      });
}

WorkerPool& JobQueue::pool(const PluginManifest& plugin) {
  auto& pool = pools_[plugin.id];
  if (pool) return *pool;
  std::string remote;
  if (const auto view = supervisor_.get(plugin.service);
      view && view->spec->runtime == RuntimeKind::kRemote) {
    remote = plugin.service;
  }
  const std::weak_ptr<bool> alive = alive_;
  WorkerPool::Environment env{executor_,
                              clock_,
                              options_.log_dir + "/worker-" + plugin.id + ".log",
                              options_.conda,
                              events_,
                              workers_,
                              [this, id = plugin.id] {
                                auto config = plugins_.config_or_defaults(id);
                                return config ? *config : json::object();
                              },
                              remote,
                              options_.cgroup_parent};
  WorkerPool::JobEvents hooks{[this, alive](int64_t job, pid_t pid) {
                                if (!alive.expired()) ran_by(job, pid);
                              },
                              [this, alive](int64_t job, const json& m) {
                                if (!alive.expired()) on_worker_message(job, m);
                              },
                              [this, alive](int64_t job, const std::string& why) {
                                if (alive.expired() || running_.count(job) == 0) return;
                                const bool cancelled = running_.at(job).cancelled;
                                finish(job, cancelled ? JobState::kCancelled : JobState::kFailed,
                                       nullptr, cancelled ? "cancelled while running" : why);
                              }};
  pool = std::make_unique<WorkerPool>(plugin, std::move(env), std::move(hooks));
  return *pool;
}

void JobQueue::ran_by(int64_t id, pid_t pid) {
  const auto it = running_.find(id);
  if (it == running_.end()) return;
  it->second.job.worker_pid = pid;
  store_.update(it->second.job);
}

void JobQueue::send_worker(int64_t id) {
  const Job& job = running_.at(id).job;
  pool(*plugins_.find(job.plugin)).execute(id, job.input);
}

void JobQueue::reload(const std::string& plugin) {
  const auto it = pools_.find(plugin);
  if (it == pools_.end()) return;
  auto config = plugins_.config_or_defaults(plugin);
  it->second->reload(config ? *config : json::object());
}

std::optional<Millis> JobQueue::evict_worker(const std::string& id, const std::string& why) {
  const WorkerInfo* worker = workers_.find(id);
  if (worker == nullptr) return std::nullopt;
  const auto it = pools_.find(worker->plugin);
  return it == pools_.end() ? std::nullopt : it->second->evict(id, why);
}

void JobQueue::on_worker_message(int64_t id, const json& m) {
  const auto current = running_.find(id);
  if (current == running_.end()) return;  // about a job that is already over
  const std::string type = m.value("type", "");
  const std::string plugin = current->second.job.plugin;
  if (type == "stream_chunk") {
    events_.publish("job.chunk",
                    {{"id", id}, {"plugin", plugin}, {"data", m.value("data", json())}});
  } else if (type == "progress") {
    const json progress = m.value("progress", json());
    if (!progress.is_number()) return;  // a worker's mistake must not end the daemon
    auto& job = current->second.job;
    job.progress = progress.get<double>();
    store_.update(job);
    events_.publish("job.progress", {{"id", id}, {"plugin", plugin}, {"progress", job.progress}});
  } else if (type == "result") {
    finish(id, JobState::kCompleted, m.value("result", json()), "");
  } else if (type == "error") {
    const json message = m.value("message", json("error"));
    finish(id, JobState::kFailed, nullptr,
           "worker: " + (message.is_string() ? message.get<std::string>() : message.dump()));
  }
}

void JobQueue::finish(int64_t id, JobState state, json result, std::string error) {
  // Stopping: what was running is left as it is in the store; the next daemon runs it again.
  if (stopping_) return;
  auto it = running_.find(id);
  if (it == running_.end()) return;
  Job job = std::move(it->second.job);
  auto cancels = std::move(it->second.cancels);
  Hold bridge = std::move(it->second.hold);
  running_.erase(it);
  job.state = state;
  job.finished_ms = clock_.unix_ms();
  job.result = std::move(result);
  job.error = std::move(error);
  if (state == JobState::kCompleted) job.progress = 1;
  --running_count_[job.plugin];
  const char* type = state == JobState::kCompleted   ? "job.completed"
                     : state == JobState::kCancelled ? "job.cancelled"
                                                     : "job.failed";
  // Told once it is on disk: whoever hears it and asks gets the same answer.
  store_.update(job, [this, alive = std::weak_ptr<bool>(alive_), job, type,
                      cancels = std::move(cancels)](const Status& written) {
    if (alive.expired()) return;
    if (!written) spdlog::error("job {}: {}", job.id, written.error().message);
    publish(job, type);
    for (const auto& wait : cancels) answer(wait, job);
  });
  // A bridge to this job, if it ended before it took the service over, bridges to nothing.
  bridges_.erase(job.plugin);
  // The next in line goes now: a failed or cancelled job never strands those behind it.
  const size_t waiting = pending_[job.plugin].size();
  pump(job.plugin);
  if (pending_[job.plugin].size() < waiting && bridge.active() &&
      !supervisor_.draining(bridge.service())) {
    bridges_[job.plugin] = std::move(bridge);
  }
}

}  // namespace gpuvisor
