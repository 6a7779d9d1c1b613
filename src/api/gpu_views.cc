#include "api/gpu_views.h"

namespace gpuvisor {

namespace {

nlohmann::json device_json(const GpuDevice& d) {
  nlohmann::json j{{"index", d.index},
                   {"uuid", d.uuid},
                   {"name", d.name},
                   {"total_bytes", d.total_bytes},
                   {"used_bytes", d.used_bytes},
                   {"free_bytes", d.free_bytes},
                   {"util_gpu_percent", nullptr},
                   {"util_memory_percent", nullptr}};
  if (d.util_gpu_percent) j["util_gpu_percent"] = *d.util_gpu_percent;
  if (d.util_memory_percent) j["util_memory_percent"] = *d.util_memory_percent;
  return j;
}

}  // namespace

nlohmann::json gpus_json(const GpuSnapshot& snapshot) {
  nlohmann::json list = nlohmann::json::array();
  for (const auto& d : snapshot.devices) list.push_back(device_json(d));
  return {{"gpus", list}, {"time_ms", snapshot.taken_unix_ms}};
}

nlohmann::json plan_json(const Plan& plan) {
  std::vector<std::string> victims, sleepers;  // in the plan's order, as plan.decided says them
  for (const auto& e : plan.evict) {
    victims.push_back(e.name);
    if (e.sleep) sleepers.push_back(e.name);
  }
  return {{"ok", plan.ok},
          {"gpu", plan.ok ? nlohmann::json(plan.gpus.front()) : nlohmann::json(nullptr)},
          {"gpus", plan.gpus},
          {"evict", victims},
          {"sleep", sleepers},
          {"wake", plan.wake},
          {"already_running", plan.already_running},
          {"reason", plan.reason}};
}

nlohmann::json processes_json(const std::vector<GpuStatus>& gpus) {
  nlohmann::json list = nlohmann::json::array();
  for (const auto& g : gpus) {
    for (const auto& h : g.app) list.push_back(to_json(h, g.device.index));
    for (const auto& h : g.external) list.push_back(to_json(h, g.device.index));
  }
  return {{"processes", list}};
}

nlohmann::json resources_json(const std::vector<GpuStatus>& gpus,
                              const std::optional<SystemMemory>& memory,
                              unsigned external_busy_percent) {
  nlohmann::json list = nlohmann::json::array();
  for (const auto& g : gpus) {
    nlohmann::json app = nlohmann::json::array();
    nlohmann::json external = nlohmann::json::array();
    for (const auto& h : g.app) app.push_back(to_json(h, g.device.index));
    for (const auto& h : g.external) external.push_back(to_json(h, g.device.index));
    nlohmann::json j = device_json(g.device);
    j["state"] = to_string(g.state);
    j["app_bytes"] = g.app_bytes;
    j["external_bytes"] = g.external_bytes;
    j["app"] = app;
    j["external"] = external;
    list.push_back(j);
  }
  nlohmann::json mem = nullptr;
  if (memory) {
    mem = {{"total_bytes", memory->total_bytes}, {"available_bytes", memory->available_bytes}};
  }
  return {{"gpus", list}, {"memory", mem}, {"external_busy_percent", external_busy_percent}};
}

nlohmann::json worker_json(const WorkerInfo& w, const std::vector<pid_t>& pids) {
  using nlohmann::json;
  const auto optional = [](const auto& value) { return value ? json(*value) : json(nullptr); };
  return {{"id", w.id},
          {"type", w.type},
          {"outside", w.outside},
          {"plugin", w.plugin.empty() ? json(nullptr) : json(w.plugin)},
          {"plugin_name", optional(w.plugin_name)},
          {"status", w.status},
          {"pid", w.pid},
          {"pids", pids},
          {"job", optional(w.job)},
          {"loaded_resource", optional(w.loaded_resource)},
          {"config", w.config},
          {"gpu", optional(w.gpu)},
          {"container", optional(w.container)},
          {"conda_env", optional(w.conda_env)},
          {"remote", optional(w.remote)}};
}

nlohmann::json workers_json(const WorkerRegistry& workers) {
  nlohmann::json out = nlohmann::json::array();
  for (const WorkerInfo* w : workers.all())
    out.push_back(worker_json(*w, workers.related_pids(w->id)));
  return {{"workers", out}};
}

}  // namespace gpuvisor
