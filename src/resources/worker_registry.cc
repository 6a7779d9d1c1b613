#include "resources/worker_registry.h"

#include <algorithm>

#include "runtime/proc.h"

namespace gpuvisor {

namespace {

template <typename T>
void apply(const Change<T>& change, std::optional<T>& field) {
  if (change) field = *change;
}

}  // namespace

ProcessTable ProcessTable::system() {
  return {[](pid_t pid) -> std::optional<uint64_t> {
            const auto st = read_proc_stat(pid);
            if (!st || st->state == 'Z') return std::nullopt;
            return st->start_time;
          },
          [](pid_t pid) {
            std::vector<pid_t> out;
            for (const auto& st : list_service_tree(pid)) out.push_back(st.pid);
            return out;
          }};
}

Status WorkerRegistry::add(WorkerInfo worker) {
  if (worker.id.empty()) return make_error(ErrorCode::kBadRequest, "a worker needs an id");
  if (worker.type.empty()) {
    return make_error(ErrorCode::kBadRequest, "worker '" + worker.id + "' needs a type");
  }
  if (workers_.count(worker.id) != 0) {
    return make_error(ErrorCode::kConflict, "worker '" + worker.id + "' is already registered");
  }
  if (worker.pid < 0) {
    return make_error(ErrorCode::kBadRequest,
                      "worker '" + worker.id + "': bad pid " + std::to_string(worker.pid));
  }
  if (worker.pid > 0) {
    const auto start = processes_.start_time(worker.pid);
    if (!start) {
      return make_error(ErrorCode::kNotFound, "worker '" + worker.id + "': pid " +
                                                  std::to_string(worker.pid) + " is not running");
    }
    worker.start_time = *start;
  }
  const std::string id = worker.id;
  workers_.emplace(id, std::move(worker));
  return Status{};
}

Status WorkerRegistry::update(const std::string& id, const WorkerUpdate& update) {
  const auto it = workers_.find(id);
  if (it == workers_.end()) return make_error(ErrorCode::kNotFound, "no worker '" + id + "'");
  if (update.type && update.type->empty()) {
    return make_error(ErrorCode::kBadRequest, "worker '" + id + "': type cannot be empty");
  }
  WorkerInfo& w = it->second;
  if (update.type) w.type = *update.type;
  if (update.status) w.status = *update.status;
  apply(update.job, w.job);
  apply(update.loaded_resource, w.loaded_resource);
  apply(update.gpu, w.gpu);
  apply(update.container, w.container);
  if (update.plugin) w.plugin = update.plugin->value_or("");
  apply(update.plugin_name, w.plugin_name);
  if (update.config) w.config = *update.config;
  return Status{};
}

Status WorkerRegistry::remove(const std::string& id) {
  if (workers_.erase(id) == 0) return make_error(ErrorCode::kNotFound, "no worker '" + id + "'");
  return Status{};
}

const WorkerInfo* WorkerRegistry::find(const std::string& id) const {
  const auto it = workers_.find(id);
  return it == workers_.end() ? nullptr : &it->second;
}

const WorkerInfo* WorkerRegistry::find_main(pid_t pid) const {
  for (const auto& [id, w] : workers_) {
    if (w.pid == pid) return &w;
  }
  return nullptr;
}

const WorkerInfo* WorkerRegistry::find_by_pid(pid_t pid) const {
  for (const auto& [id, w] : workers_) {
    const auto pids = related_pids(id);
    if (std::find(pids.begin(), pids.end(), pid) != pids.end()) return &w;
  }
  return nullptr;
}

std::vector<const WorkerInfo*> WorkerRegistry::by_job(const std::string& job) const {
  std::vector<const WorkerInfo*> out;
  for (const auto& [id, w] : workers_) {
    if (w.job == job) out.push_back(&w);
  }
  return out;
}

std::vector<const WorkerInfo*> WorkerRegistry::by_type(const std::string& type) const {
  std::vector<const WorkerInfo*> out;
  for (const auto& [id, w] : workers_) {
    if (w.type == type) out.push_back(&w);
  }
  return out;
}

std::vector<const WorkerInfo*> WorkerRegistry::all() const {
  std::vector<const WorkerInfo*> out;
  for (const auto& [id, w] : workers_) out.push_back(&w);
  return out;
}

std::vector<pid_t> WorkerRegistry::related_pids(const std::string& id) const {
  const WorkerInfo* w = find(id);
  if (w == nullptr || w->pid <= 0) return {};
  // A PID that now names another process (reused) is not this worker's, nor its children.
  if (processes_.start_time(w->pid) != w->start_time) return {};
  std::vector<pid_t> out{w->pid};
  const auto children = processes_.descendants(w->pid);
  out.insert(out.end(), children.begin(), children.end());
  return out;
}

}  // namespace gpuvisor
