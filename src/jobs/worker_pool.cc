#include "jobs/worker_pool.h"

#include <spdlog/spdlog.h>
#include <unistd.h>

#include <algorithm>
#include <boost/asio/post.hpp>

#include "core/service_spec.h"

namespace gpuvisor {

namespace asio = boost::asio;
using nlohmann::json;

namespace {

constexpr Millis kCancelGrace{5000};
constexpr Millis kIdleStopGrace{10'000};
// An eviction is someone waiting for the memory: no time to wind down first.
constexpr Millis kEvictGrace{5000};

}  // namespace

WorkerPool::WorkerPool(const PluginManifest& plugin, Environment env, JobEvents jobs)
    : plugin_(plugin),
      env_(std::move(env)),
      jobs_(std::move(jobs)),
      backoff_timer_(env_.clock.make_timer()) {}

WorkerPool::~WorkerPool() {
  *alive_ = false;
  for (auto& [id, m] : members_) {
    if (auto removed = env_.registry.remove(id); !removed)
      spdlog::debug("{}", removed.error().message);
  }
}

json WorkerPool::about(const std::string& id) const {
  json out = {{"plugin", plugin_.id}, {"worker", id}};
  if (const auto it = members_.find(id); it != members_.end())
    out["pid"] = it->second.worker->pid();
  return out;
}

Millis WorkerPool::backoff() const {
  if (ends_in_a_row_ == 0) return Millis(0);
  auto delay = plugin_.worker.backoff;
  for (unsigned i = 1; i < ends_in_a_row_ && delay < plugin_.worker.backoff_max; ++i) delay *= 2;
  return std::min(delay, plugin_.worker.backoff_max);
}

void WorkerPool::execute(int64_t job, json input) {
  waiting_.emplace_back(job, std::move(input));
  dispatch();
}

void WorkerPool::cancel(int64_t job) {
  if (const auto w = std::find_if(waiting_.begin(), waiting_.end(),
                                  [job](const auto& entry) { return entry.first == job; });
      w != waiting_.end()) {
    waiting_.erase(w);
    jobs_.lost(job, "cancelled before a worker took it");
    return;
  }
  for (auto& [id, m] : members_) {
    if (m.job != job || m.ending != Ending::kNone) continue;
    // The job is inside the worker's code: only ending the process stops it.
    m.ending = Ending::kCancel;
    set_status(id, "stopping", job);
    m.worker->stop(kCancelGrace);
    return;
  }
}

std::optional<Millis> WorkerPool::evict(const std::string& id, const std::string& why) {
  const auto it = members_.find(id);
  if (it == members_.end()) return std::nullopt;
  Member& m = it->second;
  if (m.job != 0 || m.ending != Ending::kNone || !m.ready) return std::nullopt;
  spdlog::info("{}: evicted for {}", id, why);
  m.ending = Ending::kEvicted;
  m.evicted_for = why;
  m.idle->cancel();
  set_status(id, "stopping", 0);
  m.worker->send({{"type", "stop"}});
  m.worker->stop(kEvictGrace);
  return kEvictGrace;
}

void WorkerPool::stop_all(Millis grace, std::function<void()> done) {
  stopping_ = true;
  waiting_.clear();
  replacements_due_ = 0;
  backoff_timer_->cancel();
  if (members_.empty()) {
    asio::post(env_.executor, std::move(done));
    return;
  }
  stopped_ = std::move(done);
  for (auto& [id, m] : members_) {
    m.ending = Ending::kAsked;
    m.idle->cancel();
    set_status(id, "stopping", m.job);
    m.worker->send({{"type", "stop"}});
    m.worker->stop(grace, grace);  // its own way out first, then SIGTERM, then SIGKILL
  }
}

void WorkerPool::reload(const json& config) {
  if (!gave_up_.empty())
    spdlog::info("plugin {}: config saved; its workers may start again", plugin_.id);
  gave_up_.clear();
  ends_in_a_row_ = 0;
  not_before_ = {};
  for (auto& [id, m] : members_) {
    if (m.ready && m.ending == Ending::kNone)
      m.worker->send({{"type", "reload"}, {"config", config}});
  }
  dispatch();
}

bool WorkerPool::may_start_now() {
  if (env_.clock.now() >= not_before_) return true;
  if (!backoff_timer_->armed()) backoff_timer_->arm_at(not_before_, [this] { dispatch(); });
  return false;
}

void WorkerPool::dispatch() {
  if (stopping_) return;
  while (!waiting_.empty()) {
    if (!gave_up_.empty()) {
      auto lost = std::move(waiting_);
      waiting_.clear();
      for (const auto& entry : lost) jobs_.lost(entry.first, gave_up_);
      return;
    }
    const auto free = std::find_if(members_.begin(), members_.end(), [](const auto& entry) {
      return entry.second.job == 0 && entry.second.ending == Ending::kNone;
    });
    if (free != members_.end()) {
      auto [job, input] = std::move(waiting_.front());
      waiting_.pop_front();
      assign(free->first, job, std::move(input));
      continue;
    }
    // A worker still ending holds its memory: the next starts once it is gone.
    if (members_.size() >= plugin_.concurrency || !may_start_now()) return;
    // A start for a job stands in for a replacement that was due.
    const std::string replaces = replacements_due_ > 0 ? replaces_ : "";
    if (replacements_due_ > 0) --replacements_due_;
    if (auto started = spawn(replaces); !started) {
      const int64_t job = waiting_.front().first;
      waiting_.pop_front();
      jobs_.lost(job, "cannot start the worker: " + started.error().message);
    }
  }
  while (replacements_due_ > 0 && gave_up_.empty() && members_.size() < plugin_.concurrency &&
         may_start_now()) {
    --replacements_due_;
    if (auto started = spawn(replaces_); !started) {
      spdlog::warn("plugin {}: cannot start a worker: {}", plugin_.id, started.error().message);
    }
  }
}

Status WorkerPool::spawn(const std::string& replaces) {
  const std::string id = "worker-" + plugin_.id + "-" + std::to_string(++seq_);
  const auto& spec = plugin_.worker;
  const auto argv =
      spec.conda_env.empty() ? spec.command : conda_run(env_.conda, spec.conda_env, spec.command);
  // Named for this daemon too: a leftover of an earlier one (reclaimed at start-up) can never
  // be mistaken for it.
  const std::string cgroup = env_.cgroup_parent.empty()
                                 ? ""
                                 : env_.cgroup_parent + "/" + id + "." + std::to_string(getpid());
  const std::weak_ptr<bool> alive = alive_;
  auto worker = Worker::start(
      env_.executor, argv, env_.log_path, cgroup,
      [this, alive, id](const json& m) {
        if (!alive.expired()) on_message(id, m);
      },
      [this, alive, id](const std::string& how) {
        if (!alive.expired()) on_exit(id, how);
      });
  if (!worker) {
    ended_unasked(worker.error().message);
    return worker.error();
  }
  Member& m = members_[id];
  m.worker = *worker;
  m.idle = env_.clock.make_timer();
  WorkerInfo info;
  info.id = id;
  info.type = plugin_.category;
  info.pid = m.worker->pid();
  info.plugin = plugin_.id;
  info.service = plugin_.service;
  info.status = "starting";
  if (!spec.conda_env.empty()) info.conda_env = spec.conda_env;
  if (!env_.remote.empty()) info.remote = env_.remote;
  // Its processes are ours in the GPU views from now on.
  if (auto added = env_.registry.add(info); !added)
    spdlog::warn("{}: {}", id, added.error().message);
  m.worker->send({{"type", "init"}, {"plugin", plugin_.id}, {"config", env_.config()}});
  json data = about(id);
  if (replaces.empty()) {
    env_.events.publish("worker.started", std::move(data));
  } else {
    data["replaces"] = replaces;
    data["ends_in_a_row"] = ends_in_a_row_;
    env_.events.publish("worker.restarted", std::move(data));
  }
  return {};
}

void WorkerPool::ended_unasked(const std::string& how) {
  ++ends_in_a_row_;
  if (ends_in_a_row_ > plugin_.worker.restart_limit) {
    gave_up_ = "the worker for " + plugin_.id + " ended " + std::to_string(ends_in_a_row_) +
               " times in a row (last: " + how +
               "); its jobs fail until its config is saved "
               "again or the daemon restarts";
    replacements_due_ = 0;
    spdlog::error("{}", gave_up_);
    env_.events.publish("worker.gave_up", {{"plugin", plugin_.id}, {"why", gave_up_}});
    return;
  }
  not_before_ = env_.clock.now() + backoff();
}

void WorkerPool::assign(const std::string& id, int64_t job, json input) {
  Member& m = members_.at(id);
  m.job = job;
  m.input = std::move(input);
  m.idle->cancel();
  set_status(id, "running", job);
  jobs_.taken(job, m.worker->pid());
  if (m.ready) {
    m.worker->send({{"type", "execute"}, {"job_id", job}, {"input", m.input}});
    m.sent = true;
  }
}

void WorkerPool::became_idle(const std::string& id) {
  set_status(id, "idle", 0);
  const Millis timeout = plugin_.worker.idle_timeout;
  if (timeout.count() <= 0) return;
  auto& timer = *members_.at(id).idle;
  timer.arm_after(timeout, [this, id] {
    const auto it = members_.find(id);
    if (it == members_.end() || it->second.job != 0 || it->second.ending != Ending::kNone) return;
    spdlog::info("{}: idle for {}, stopping it", id, format_duration(plugin_.worker.idle_timeout));
    it->second.ending = Ending::kAsked;
    set_status(id, "stopping", 0);
    it->second.worker->send({{"type", "stop"}});
    it->second.worker->stop(kIdleStopGrace, kIdleStopGrace);
  });
}

void WorkerPool::set_status(const std::string& id, const char* status, int64_t job) {
  WorkerUpdate update;
  update.status = status;
  update.job = job != 0 ? Change<std::string>(std::to_string(job))
                        : Change<std::string>(std::optional<std::string>());
  if (auto updated = env_.registry.update(id, update); !updated) {
    spdlog::debug("{}: {}", id, updated.error().message);
  }
}

void WorkerPool::on_message(const std::string& id, const json& message) {
  const auto it = members_.find(id);
  if (it == members_.end()) return;
  Member& m = it->second;
  const std::string type = message.value("type", "");
  if (type == "ready") {
    m.ready = true;
    if (m.ending != Ending::kNone) return;
    // A "ready" after a reload, mid-job, must not run the job a second time.
    if (m.job != 0 && !m.sent) {
      m.worker->send({{"type", "execute"}, {"job_id", m.job}, {"input", m.input}});
      m.sent = true;
    } else if (m.job == 0) {
      became_idle(id);
    }
    m.worker->send({{"type", "get_state"}});
    return;
  }
  if (type == "state") {
    if (message.contains("loaded_resource")) {
      const json& loaded = message["loaded_resource"];
      WorkerUpdate update;
      update.loaded_resource = loaded.is_string()
                                   ? Change<std::string>(loaded.get<std::string>())
                                   : Change<std::string>(std::optional<std::string>());
      if (auto updated = env_.registry.update(id, update); !updated) {
        spdlog::debug("{}: {}", id, updated.error().message);
      }
    }
    return;
  }
  // About a job: the one it runs now, unless it is being stopped to cancel that job.
  if (m.job == 0 || m.ending != Ending::kNone) return;
  if (message.contains("job_id") && message["job_id"] != m.job) return;
  const int64_t job = m.job;
  const bool done = type == "result" || type == "error";
  if (done) {
    m.job = 0;
    m.input = nullptr;
    m.sent = false;
    if (type == "result") {
      ends_in_a_row_ = 0;  // a success: the next crash starts the backoff over
      not_before_ = {};
    }
    became_idle(id);
    m.worker->send({{"type", "get_state"}});
  }
  jobs_.message(job, message);  // may hand the pool its next job at once
  if (done) dispatch();
}

void WorkerPool::on_exit(const std::string& id, const std::string& how) {
  const auto it = members_.find(id);
  if (it == members_.end()) return;
  const Member m = std::move(it->second);
  members_.erase(it);
  if (auto removed = env_.registry.remove(id); !removed) {
    spdlog::debug("{}: {}", id, removed.error().message);
  }
  const char* reason = m.ending == Ending::kAsked     ? "stopped"
                       : m.ending == Ending::kCancel  ? "cancelled"
                       : m.ending == Ending::kEvicted ? "evicted"
                                                      : "crashed";
  spdlog::info("{} {} ({})", id, how, reason);
  json exited = {{"plugin", plugin_.id},
                 {"worker", id},
                 {"pid", m.worker->pid()},
                 {"how", how},
                 {"reason", reason}};
  if (!m.evicted_for.empty()) exited["evicted_for"] = m.evicted_for;
  env_.events.publish("worker.exited", std::move(exited));
  const auto restart = plugin_.worker.restart;
  if (m.ending == Ending::kNone) ended_unasked(how);
  const bool replace = gave_up_.empty() &&
                       ((restart == WorkerRestart::kAlways && m.ending != Ending::kAsked &&
                         m.ending != Ending::kEvicted) ||
                        (restart == WorkerRestart::kOnCancellation && m.ending == Ending::kCancel));
  if (replace) {
    ++replacements_due_;
    replaces_ = id;
  }
  if (stopping_) {
    if (members_.empty() && stopped_) {
      auto done = std::move(stopped_);
      stopped_ = nullptr;
      done();
    }
    return;
  }
  if (m.job != 0) jobs_.lost(m.job, "the worker " + how);
  dispatch();
}

}  // namespace gpuvisor
