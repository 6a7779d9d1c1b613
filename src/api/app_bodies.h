// The bodies of the routes apps use (outside workers, leases, app events), read and checked
// before anything changes: each problem is an error naming the field and what it must be.
#pragma once

#include <nlohmann/json.hpp>
#include <string>

#include "core/result.h"
#include "resources/leases.h"
#include "resources/outside_workers.h"
#include "resources/worker_registry.h"

namespace gpuvisor {

// POST /api/v1/workers: {pid, worker_type, plugin_id?, plugin_name?, config?}.
Result<OutsideRegistration> parse_registration(const std::string& body);

// PATCH /api/v1/workers/{pid}: seed 001's update_worker_state fields (status, job_id,
// plugin_name, plugin_id, loaded_plugin_resource, config). Omitted: unchanged; null: cleared
// (status cannot be cleared).
Result<WorkerUpdate> parse_worker_update(const std::string& body);

// POST /api/v1/events: {type, data?}, published as the app gave it.
struct AppEvent {
  std::string type;
  nlohmann::json data = nlohmann::json::object();
};
Result<AppEvent> parse_app_event(const std::string& body);

// POST /api/v1/leases: {vram_mb, gpu?, ttl? ("10m", or seconds), pid?, holder?}.
Result<LeaseRequest> parse_lease(const std::string& body);

// A PID as a path segment: a positive decimal integer.
Result<pid_t> parse_pid(const std::string& text);

}  // namespace gpuvisor
