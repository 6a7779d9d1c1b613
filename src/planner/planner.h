// Placement and eviction, as a pure function: a snapshot of the GPUs and the services in, a
// plan out (the GPUs to start on and the services to stop or put to sleep first), or a refusal
// that names what is in the way. No I/O and no clock, so every policy is tested in microseconds and
// can be simulated over long traces (bench/policy_sim.cc).
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace gpuvisor {

// recent_uses halves every this many seconds (the supervisor counts ensures so).
constexpr double kUseHalfLifeSeconds = 1800;

struct PlanDevice {
  unsigned index = 0;
  uint64_t total_bytes = 0;
  uint64_t free_bytes = 0;  // as NVML reports it now
};

struct PlanService {
  std::string name;   // as plans name it (a worker: "worker:<id>")
  std::string label;  // as refusals and reasons say it, when not the name ("worker w (plugin p)")
  int priority = 0;
  unsigned gpu_count = 1;   // how many GPUs it spans; need_bytes and held_bytes are per GPU
  uint64_t need_bytes = 0;  // max(configured vram_mb, measured while it last ran)
  bool running = false;     // holds, or is about to hold, memory: starting, ready or busy
  bool busy = false;        // doing work that an eviction would lose
  // Asleep: not running, yet it holds held_bytes (its residual) on its gpus.
  bool sleeping = false;
  std::vector<unsigned> gpus;  // where it runs or sleeps; empty: not placed
  uint64_t held_bytes = 0;     // what NVML shows it holding now (less while loading)
  int64_t last_used_ms = 0;    // higher is more recent
  // How much keeping it saves: recent use (a decayed count of ensures, halving every
  // kUseHalfLifeSeconds) times what a reload costs (its last start-up time). Unknown (0) for
  // either: it counts as nothing, and least recently used decides.
  double recent_uses = 0;
  double reload_seconds = 0;
  double wake_seconds = 0;            // its last wake, hook to healthy; 0: unknown
  uint64_t residual_bytes = 0;        // per GPU, what it kept at its last sleep; 0: unknown
  std::vector<unsigned> pinned_gpus;  // the config's placement rule: empty, any GPU
  bool keep = false;                  // never evicted: a member of a phase being ensured
  // Never evicted: an external server with no sleep hook, or a worker an app registered.
  bool unevictable = false;
  std::string unevictable_why{};  // what a refusal says of it; "external, no sleep hook" if empty
  // It has a sleep hook: evicting it may put it to sleep (its server keeps running, most of its
  // VRAM is freed), cheaper than a stop, so it goes first among services of the same priority.
  bool sleeps = false;
  // Placed moments ago for another request: only strictly higher priority may evict it, so two
  // requests that do not fit together never evict each other.
  bool starting_for_request = false;
};

struct PlanExternal {
  unsigned gpu = 0;
  pid_t pid = 0;
  std::string name;
  uint64_t bytes = 0;
};

struct PlanInput {
  std::vector<PlanDevice> devices;
  std::vector<PlanService> services;
  std::vector<PlanExternal> external;
  bool preempt_busy_lower = false;  // may evict busy services of strictly lower priority
  // Now, on the clock last_used_ms is read from; 0: unknown (the time since a service's last use
  // then counts only through its recent_uses).
  int64_t now_ms = 0;
};

struct Eviction {
  std::string name;
  bool sleep = false;  // put it to sleep; otherwise stop it
};

struct Plan {
  bool ok = false;
  std::vector<unsigned> gpus;   // where it starts (or wakes, or already runs)
  std::vector<Eviction> evict;  // stop or put to sleep these first, in this order
  bool already_running = false;
  bool wake = false;   // the target is asleep: the plan wakes it where it sleeps
  std::string reason;  // why it cannot be placed (when !ok), or what the plan does
  // Refused only because of busy services: it would fit once these go idle, so waiting cures
  // it. Empty when !ok for any other reason (a higher priority, too small a GPU, an outsider).
  std::vector<std::string> waiting_for{};
};

// Where to start `service` (gpu_count GPUs with need_bytes free on each) and what to stop or put
// to sleep first; a sleeping service wakes where it sleeps, needing what its residual lacks.
// Never evicts a service of higher priority than the requester, nor a busy one unless
// preempt_busy_lower allows it for strictly lower priority. Among what may go: lowest priority
// first; within a priority, the least wait saved per GiB^0.75 freed (uses x wake_seconds for a
// sleep, reload_seconds for a stop, their difference for stopping a sleeper; uses: recent_uses,
// but at most 2 per the time since the last use, in the half-life's time constant), then sleepers
// (stopped) before anything awake and what can be put to sleep before what must be stopped, then
// least recently used; put to sleep only where that frees enough; and no more than needed.
// Among sets of GPUs: the one whose victims have the lowest top priority, then add the least
// wait ahead, then are fewest, then throw away the fewest bytes, then the lowest GPUs.
Plan plan_ensure(const PlanInput& input, const std::string& service);

// Where memory no process holds yet can be reserved (a VRAM lease) without evicting anything:
// the GPU (pinned, or any) whose free memory, less what starting services will still take, fits
// bytes most tightly; gpus has that one GPU. Refused when none has room, naming everything that
// holds memory there.
Plan plan_reserve(const PlanInput& input, uint64_t bytes, std::optional<unsigned> pinned_gpu);

}  // namespace gpuvisor
