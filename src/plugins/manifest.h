// A plugin: a named, categorised unit of work with a JSON-Schema config and a way to run jobs
// (an HTTP request to its service, or a long-lived worker process). Declared by a manifest, a
// YAML or JSON file in the plugins directory, or inline in the config.
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "core/duration.h"
#include "core/result.h"

namespace gpuvisor {

enum class PluginMode { kHttp, kWorker };
const char* to_string(PluginMode mode);

// When a worker that ended is replaced by a new one at once (warm for the next job), rather
// than when a job next needs one: never; after it was stopped to cancel a job; after any end
// gpuvisor did not ask for (a crash) or a cancellation.
enum class WorkerRestart { kNever, kOnCancellation, kAlways };
const char* to_string(WorkerRestart restart);

struct WorkerSpec {
  std::vector<std::string> command;  // JSON lines on stdin/stdout
  std::string conda_env;             // runs the command in this conda environment
  WorkerRestart restart = WorkerRestart::kOnCancellation;
  // A start after a worker ended unasked waits backoff, doubled per end in a row up to
  // backoff_max; a completed job resets the count. After restart_limit ends in a row the
  // plugin's jobs fail at once, saying why, until its config is saved again.
  Millis backoff{Millis(1000)};
  Millis backoff_max{Millis(60'000)};
  unsigned restart_limit = 5;
  Millis idle_timeout{Millis(0)};  // an idle worker is stopped after this; 0: kept
};

struct PluginManifest {
  std::string id;  // category_name: unique, and the name of its config file
  std::string name;
  std::string category;
  std::string title;
  std::string description;
  std::string version;
  PluginMode mode = PluginMode::kHttp;
  bool cloud = false;        // runs on rented machines rather than this one
  std::string service;       // the service a job needs (ensured for the job), or empty
  unsigned concurrency = 1;  // jobs at once
  // How long a job waits for its service to be ready (queued behind busy services, evicting,
  // starting) before it fails saying what it waited for.
  Millis queue_timeout{Millis(600'000)};
  // mode http: the request a job becomes (the job's input is the body, its reply the result).
  std::string http_method = "POST";
  std::string http_url;
  Millis http_timeout{Millis(600'000)};
  // mode worker: the worker processes, up to concurrency of them.
  WorkerSpec worker;
  nlohmann::json config_schema = nlohmann::json::object();
  std::string origin;  // file (or "config") it came from, for messages
};

// Reads one manifest; every problem is reported, each with where it is ("cosyvoice.yaml:
// 'mode' must be http or worker, got 'grpc'"). The schema itself is checked too.
Result<PluginManifest> parse_manifest(const nlohmann::json& manifest, const std::string& origin);

// A manifest file, YAML or JSON (by extension; .yml/.yaml/.json).
Result<PluginManifest> load_manifest_file(const std::string& path);

// A plugin id as it may appear in a URL or a file name: letters, digits, '_', '-', '.', not
// starting with '.', no path separator. "../x" and "a/b" are refused.
bool valid_plugin_id(const std::string& id);

}  // namespace gpuvisor
