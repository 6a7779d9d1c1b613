// ServiceSpec: one service as declared in the config file, after validation. Plain values only;
// the config layer builds these and every other layer reads them.
#pragma once

#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "core/duration.h"

namespace gpuvisor {

enum class RuntimeKind { kProcess, kDocker, kExternal, kRemote };

enum class RestartPolicy {
  kNo,         // an exit or a failed liveness probe leaves the service in error
  kOnFailure,  // restart after a non-zero exit, a signal, or a failed liveness probe
  kAlways,     // restart after any exit that gpuvisor did not ask for
};

const char* to_string(RuntimeKind kind);
struct ServiceSpec;
// How the service runs, as reported: process, conda_env or docker.
const char* execution_mode(const ServiceSpec& spec);
const char* to_string(RestartPolicy policy);

// How readiness and liveness are checked. Exactly one of http / tcp / exec is set, or none:
// then a service is ready as soon as its process runs.
struct HealthSpec {
  std::string http;               // URL; 2xx or 3xx means healthy
  std::string tcp;                // "host:port"; an accepted connection means healthy
  std::vector<std::string> exec;  // argv; exit status 0 means healthy
  Millis interval{Millis(5000)};  // liveness probe period while ready
  Millis timeout{Millis(2000)};   // one probe attempt, readiness or liveness
  int failure_threshold = 3;      // consecutive liveness failures before the service is dead
  // Readiness checks: every tenth of the time spent starting so far, at least 1 ms, at most
  // this (at most 2 ms while the connection is refused: supervisor/readiness.h).
  Millis startup_poll_cap{Millis(100)};

  bool empty() const { return http.empty() && tcp.empty() && exec.empty(); }
};

// A container service. With `image`, gpuvisor creates the container (named `container`, or
// gpuvisor-<service>) from this spec and owns it; without, `container` must already exist and is
// only started and stopped.
struct DockerSpec {
  std::string container;
  std::string image;
  std::vector<std::string> mounts;  // "/host:/in/container[:ro]"
  std::vector<std::string> ports;   // "8188:8188" or "127.0.0.1:8188:8188/tcp"
  std::string network = "host";     // host, none, bridge or a network's name
  bool init = true;                 // tini as PID 1, so SIGTERM reaches the server
  // GPUs given to a container gpuvisor creates: the planner's GPU (all of them while VRAM is
  // unknown), every GPU, or none (a CPU-only container, or an engine with no NVIDIA runtime).
  enum class Gpus { kPlaced, kAll, kNone } gpus = Gpus::kPlaced;
};

// An action on a server gpuvisor does not run: an HTTP request or a command.
struct HookSpec {
  std::string http;  // URL
  std::string method = "POST";
  std::string body;               // sent as JSON
  std::vector<std::string> exec;  // argv
  Millis timeout{Millis(30'000)};
  bool empty() const { return http.empty() && exec.empty(); }
};

// A server someone else runs (an Ollama, a vLLM, a system daemon). gpuvisor health-checks it,
// counts its VRAM as the service's, and frees that VRAM through the service's `sleep` hook
// instead of stopping it; without one it is never evicted.
struct ExternalSpec {
  std::string pid_file;  // its processes: the PID in this file and its descendants
  unsigned port = 0;     // or: the process listening on this TCP port, and its descendants
};

// A rented machine (a cloud GPU), driven through the provider's commands. provision prints one
// JSON object (instance_id, endpoint, ssh_host, ssh_port, status); status and terminate get the
// instance id as their last argument; status prints {"status": ...}.
struct RemoteSpec {
  // The mode it reports: remote_ssh, cloud_vm, cloud_container, cloud_serverless, cloud_gpu or
  // cloud_cpu. gpuvisor drives them all the same way, through the commands below.
  std::string kind = "cloud_gpu";
  std::string provider;
  std::string region;
  std::string gpu_type;
  unsigned gpu_count = 1;
  double cost_per_hour = 0;  // USD
  double budget = 0;         // USD spent on this service, ever; 0: no limit
  std::vector<std::string> provision;
  std::vector<std::string> status;
  std::vector<std::string> terminate;
  Millis command_timeout{Millis(600'000)};  // provisioning can take minutes
  Millis status_interval{Millis(30'000)};   // also how often cost is published
  Millis idle_timeout{Millis(0)};           // terminate after no ensure for this long; 0: never
};

// Serving the service's HTTP API through gpuvisor (/upstream/NAME/..., and /v1/... by model):
// a request starts it if needed, and it is kept busy while requests run.
struct ProxySpec {
  std::string url;                  // http://HOST:PORT of its API; empty: not proxied
  std::vector<std::string> models;  // names and aliases /v1 requests may use for it
  Millis wait{Millis(300'000)};     // longest a request waits for it to be ready, then 503
  unsigned concurrency = 0;         // requests at once; more wait their turn; 0: no limit
  // HOST:PORT gpuvisor listens on for this service alone, forwarding everything that arrives
  // (HTTP and WebSocket, any path) to url: the port users and apps already know, with the
  // service started on the first request. Empty: only /upstream and /v1.
  std::string listen;
};

struct ServiceSpec {
  std::string name;
  std::string description;
  RuntimeKind runtime = RuntimeKind::kProcess;

  // argv; with shell == true, command has one element that /bin/sh -c runs. For docker: the
  // container's command (empty: the image's).
  std::vector<std::string> command;
  // Runs command inside this conda environment (`conda run -n NAME`); still a process service.
  std::string conda_env;
  DockerSpec docker;
  ExternalSpec external;
  RemoteSpec remote;
  bool shell = false;
  std::map<std::string, std::string> env;
  std::string cwd;

  long long vram_mb = 0;  // per GPU, on each of the gpu_count GPUs it spans
  // Placement rule: only these GPU indexes (`gpu: 1` or `gpu: [0, 1]`); empty: any.
  std::vector<unsigned> pinned_gpus;
  unsigned gpu_count = 1;  // GPUs it spans (`gpus: N`; tensor parallel), each given vram_mb
  int priority = 0;        // higher = more important
  std::vector<int> phases;
  bool autostart = false;  // ensured when the daemon starts

  HealthSpec health;
  Millis startup_timeout{Millis(120'000)};
  Millis stop_grace{Millis(10'000)};

  RestartPolicy restart = RestartPolicy::kNo;
  Millis restart_backoff{Millis(1000)};  // first delay; doubles per attempt
  Millis restart_backoff_max{Millis(60'000)};
  int restart_limit = 5;                       // restarts in a row before staying in error
  Millis restart_reset_after{Millis(60'000)};  // ready this long: the restart count starts over

  std::string pid_file;  // adopt an instance someone else started, if its PID is alive

  // Frees most of its VRAM while the process keeps running (vLLM's /sleep, ComfyUI's /free,
  // Ollama's keep_alive 0): an eviction then puts it to sleep instead of stopping it, and the
  // next ensure runs `wake` and its health check instead of a cold start.
  HookSpec sleep;
  HookSpec wake;  // optional where the server loads again on its first request

  ProxySpec proxy;
  // Stopped after it has been ready this long with nothing using it (no ensure, no job, no
  // proxied request); 0: kept until stopped or evicted.
  Millis idle_ttl{Millis(0)};

  // Where in the config this service was declared ("gpuvisor.yaml:12:3"), for messages.
  std::string origin;
};

// Daemon-wide settings from the `daemon:` section; command-line flags override them.
struct DaemonSpec {
  std::string listen = "127.0.0.1:7733";
  std::string state_dir;              // empty: $XDG_STATE_HOME/gpuvisor or ~/.local/state/gpuvisor
  bool stop_services_on_exit = true;  // false: leave them running, the next daemon adopts them
  bool use_cgroups = true;            // false: /proc tracking only (docs/operations.md)
  size_t log_ring_lines = 1000;       // per service, in memory
  std::string nvml_library;           // empty: $GPUVISOR_NVML_LIBRARY, else libnvidia-ml.so.1
  // A GPU is external_busy when processes that are not ours hold at least this share of it.
  unsigned external_busy_percent = 45;
  // A plan may stop a busy service of strictly lower priority (its work is lost).
  bool preempt_busy_lower = false;
  // After evicting, how long (beyond the victims' stop_grace) NVML may take to show the memory
  // free before the ensure gives up.
  Millis vram_release_timeout{Millis(30'000)};
  std::string docker_host;  // empty: $DOCKER_HOST, else unix:///var/run/docker.sock
  std::string conda;        // the conda (or mamba) executable; empty: conda from PATH
  // How often the GPUs are looked at unasked (measured VRAM, gpu.conflict events); 0: never.
  Millis gpu_watch_interval{Millis(5000)};
  // Threads proxied connections run on (the rest of the daemon has one of its own); 0: two per
  // core, at most 16, so that one thread waiting for the kernel leaves its core to another.
  unsigned io_threads = 0;
  // A service queued this long while its blockers keep serving others gets its turn: they take
  // no new work until it is placed (supervisor_queue.cc); 0: they serve on until idle.
  Millis queue_max_wait{Millis(180'000)};
  // Finished jobs older than this are deleted from the job store; 0: kept forever.
  Millis job_retention{Millis(30LL * 24 * 3600 * 1000)};
  // At most this many finished jobs are kept, the most recently finished; 0: no limit.
  int64_t job_retention_count = 100'000;
};

// The `plugins:` section: where manifests are, and category display names.
struct PluginsSpec {
  std::string dir;                                // *.yaml, *.yml, *.json manifests
  std::map<std::string, std::string> categories;  // id -> display name
  std::vector<nlohmann::json> manifests;          // inline manifests, as JSON
  std::vector<std::string> manifest_origins;      // "PATH:LINE:COL" of each, for its errors
};

struct Config {
  std::string path;  // file it was read from, or "<embedded>"
  DaemonSpec daemon;
  PluginsSpec plugins;
  std::vector<ServiceSpec> services;  // in declaration order

  const ServiceSpec* find(const std::string& name) const {
    for (const auto& s : services) {
      if (s.name == name) return &s;
    }
    return nullptr;
  }
};

// argv run inside a conda environment (services and workers alike). --no-capture-output: the
// program's output reaches its log or its reader as it is written, not when it exits.
std::vector<std::string> conda_run(const std::string& conda, const std::string& env,
                                   const std::vector<std::string>& argv);

}  // namespace gpuvisor
