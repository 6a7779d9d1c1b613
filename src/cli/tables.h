// Plain-text tables for people; --json output bypasses these.
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace gpuvisor {

// Columns padded to the widest cell; the last column is never padded (it holds long reasons).
std::string render_table(const std::vector<std::string>& header,
                         const std::vector<std::vector<std::string>>& rows);

// "3s ago", "2m ago", "1h ago" from two Unix-millisecond times.
std::string ago(long long then_ms, long long now_ms);

// One line per event: state changes read "#7 web starting -> ready (reason)"; anything else
// shows its type and its fields, so new event kinds are readable without a CLI upgrade.
std::string format_event(const nlohmann::json& event);

// `gpuvisor gpus` from /api/v1/resources, `gpuvisor ps` from /api/v1/processes.
std::string render_gpus(const nlohmann::json& resources);
std::string render_processes(const nlohmann::json& processes);
// `gpuvisor leases` from /api/v1/leases: expiry as Unix time is for scripts; people get "in 9m".
std::string render_leases(const nlohmann::json& leases, int64_t now_unix_ms);
// GET /api/v1/queue as a table: who waits, for whom, for how long; or "nothing waits".
std::string render_queue(const nlohmann::json& queue);

}  // namespace gpuvisor
