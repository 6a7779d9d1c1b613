// The one owner of all service state (DESIGN.md). Every method runs on the daemon's strand;
// completions come back through callbacks posted to it, never from inside the call.
//
// The rules of each service's lifecycle are a pure reducer (supervisor/lifecycle.h); this class
// interprets it: it feeds it inputs (calls, exits, probe results, timers) and carries out its
// effects through Runtime, Prober, Clock and EventBus. Placement across services lives here too.
#pragma once

#include <boost/asio/any_io_executor.hpp>
#include <chrono>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "core/clock.h"
#include "core/ownership.h"
#include "core/result.h"
#include "core/service_spec.h"
#include "core/service_state.h"
#include "events/event_bus.h"
#include "gpu/inventory.h"
#include "planner/planner.h"
#include "runtime/log_tail.h"
#include "runtime/runtime.h"
#include "supervisor/hold.h"
#include "supervisor/lifecycle.h"
#include "supervisor/probe.h"
#include "supervisor/state_store.h"

namespace gpuvisor {

// A read-only snapshot of one service, for the API and the CLI.
struct ServiceView {
  const ServiceSpec* spec = nullptr;
  ServiceState state = ServiceState::kStopped;
  std::string reason;
  int64_t since_unix_ms = 0;
  uint64_t generation = 0;
  pid_t pid = 0;                     // main process, 0 when none
  int64_t started_unix_ms = 0;       // of the current instance
  std::string container;             // docker: the container's name, when one runs
  bool adopted = false;              // instance taken over from a previous daemon or a pid_file
  int restarts = 0;                  // automatic restarts in a row
  std::string last_exit;             // "exited with status 3", or empty
  std::string last_probe;            // detail of the last failed health check, or empty
  std::vector<unsigned> gpus;        // the GPUs it was placed on, if the planner placed it
  uint64_t measured_vram_bytes = 0;  // the most it was seen holding (per GPU)
  uint64_t residual_vram_bytes = 0;  // what it kept after its last sleep (per GPU), once settled
  double reload_seconds = 0;         // its last cold start, spawn to healthy; 0: not yet seen
  double wake_seconds = 0;           // its last wake, hook to healthy; 0: not yet seen
  nlohmann::json details;            // what its runtime tracks beyond state (remote: cost)
};

// One service waiting in the admission queue.
struct QueueEntry {
  std::string service;
  std::vector<std::string> waiting_for;  // the busy services in its way
  std::vector<std::string> draining;     // those of them taking no new work until it is placed
  int priority = 0;
  int64_t since_unix_ms = 0;
  int64_t waited_ms = 0;
};

class Supervisor {
 public:
  using Done = std::function<void(Result<ServiceView>)>;

  // Every wait (probes, start-up deadline, backoff, idle_ttl, VRAM release) is a clock timer.
  Supervisor(boost::asio::any_io_executor executor, Clock& clock, const Config& config,
             Runtime& runtime, Prober& prober, StateStore& store, EventBus& events);
  ~Supervisor();
  Supervisor(const Supervisor&) = delete;
  Supervisor& operator=(const Supervisor&) = delete;

  // Opens the log tails and adopts what a previous daemon left running (instance records,
  // then pid files). Call once, before serving requests.
  void start();

  // Makes the service ready: done gets its view once healthy, or the reason it is not (with
  // its last log lines). timeout bounds this wait only; the start goes on without the caller.
  // NotFound for an unknown name; Conflict when a stop overtakes the ensure.
  void ensure(const std::string& name, Millis timeout, Done done);
  // Stops the whole process tree: SIGTERM, SIGKILL after stop_grace (force: at once). done runs
  // when nothing of it is left.
  void stop(const std::string& name, bool force, Done done);
  void restart(const std::string& name, Millis timeout, Done done);
  // Work in progress on a ready service (a job, a proxied request): it is busy, so no plan
  // evicts it, until every acquire has its release. Fails unless the service is ready or busy.
  // The token given back names the instance: a release for one that has since failed or been
  // stopped changes nothing.
  Result<uint64_t> acquire(const std::string& name, const std::string& why);
  void release(const std::string& name, uint64_t token);
  // Whether token (from acquire) still holds the service busy: false once that instance
  // failed or was stopped.
  bool held(const std::string& name, uint64_t token) const;
  // acquire, as a lease that releases itself (supervisor/hold.h).
  Result<Hold> hold(const std::string& name, const std::string& why);
  // ensure, then hold: done gets a Hold on the ready service, or why it is not ready.
  void ensure_held(const std::string& name, Millis timeout, const std::string& why,
                   std::function<void(Result<Hold>)> done);
  // Ensures every service whose phases include phase, none evicting another of them. done
  // gets their views once all are ready, or the first failure (NotFound: no such phase).
  void ensure_phase(int phase, Millis timeout,
                    std::function<void(Result<std::vector<ServiceView>>)> done);

  // Fails every waiter; with stop_services, stops the services this daemon started (not those
  // adopted through a pid_file) and calls done when all are gone.
  void shutdown(bool stop_services, std::function<void()> done);

  std::vector<ServiceView> list() const;
  Result<ServiceView> get(const std::string& name) const;
  std::shared_ptr<LogTail> logs(const std::string& name) const;
  // Every live process of every running service (main process and its tree), by PID: the
  // services' part of the ownership snapshot (resources/ownership.h). Not const: each instance
  // looks for descendants started since its last look.
  std::map<pid_t, std::string> service_pids();

  // Plans go through this inventory (none: services start without placement).
  void set_gpu_inventory(GpuInventory* inventory, bool preempt_busy_lower);
  // Plans see every holder of GPU memory that is ours through this (workers too, so an idle
  // one can be evicted and a busy one named); without it, only the services.
  void set_ownership(OwnershipSource* source) { owners_ = source; }
  // Records what each running service holds now (the planner trusts the larger of this and
  // vram_mb) and persists a new maximum.
  void observe(const GpuSnapshot& snapshot, const Ownership& owners);
  // The admission queue: services whose placement waits for busy ones, in the order they are
  // looked at (higher priority first, then first come).
  std::vector<QueueEntry> queue() const;
  // Whether the service takes no new work for now, so that one queued behind it for
  // daemon.queue_max_wait gets its turn: new ensures wait, and the proxy lets its hold go as
  // soon as the requests in flight are done.
  bool draining(const std::string& name) const;
  // Whether a queued placement waits for the service to go idle.
  bool awaited(const std::string& name) const;
  // What ensure would do now (dry run), or why it cannot; never changes anything.
  Result<Plan> plan(const std::string& name);
  // The GPU where bytes that nobody holds yet fit now without evicting anything (a VRAM
  // lease), or why not: Conflict naming what is in the way, Unavailable without NVML.
  Result<unsigned> fit_reservation(uint64_t bytes, std::optional<unsigned> gpu);

 private:
  struct Unit;
  struct Waiter;

  Unit* find(const std::string& name) const;
  Error not_found(const std::string& name) const;
  ServiceView view(const Unit& u) const;

  // The interpreter (supervisor_effects.cc): steps u's reducer and carries out its effects.
  void apply(Unit& u, const lifecycle::Input& in);
  void perform(Unit& u, const lifecycle::Effect& effect);
  void probe(Unit& u, const lifecycle::effect::Probe& p);
  void run_hook(Unit& u, const lifecycle::effect::RunHook& h);
  void read_vram(Unit& u, uint64_t generation);
  void drop_instance(Unit& u, const std::string& after);
  void note(Unit& u, const lifecycle::effect::Note& n);
  void persist_restart(Unit& u, const lifecycle::effect::PendingRestart& p);
  void finish_waiters(Unit& u, const std::vector<lifecycle::WaiterId>& ids,
                      const Result<ServiceView>& result);

  // Starts u: through the planner (evicting what must go, waiting for the VRAM) when there is
  // a GPU inventory and u declares vram_mb; directly otherwise.
  void begin_start(Unit& u, const std::string& why);
  void launch(Unit& u, const std::string& why, const std::vector<unsigned>& gpus);
  void start_placed(Unit& u, const std::string& why, const std::vector<unsigned>& gpus);
  // Placement, one service at a time so two plans never evict each other's services.
  void place_next();
  // Starts the placed service once NVML shows the victims gone and the memory free: checked
  // when a victim stops, and polled from 1 ms (at most every 4 ms) for the driver's lag.
  void await_memory();
  void victim_stopped();
  Ownership ownership();
  PlanInput plan_input(const GpuSnapshot& snapshot, const Ownership& owners) const;
  // Stops (or puts to sleep) each victim of a plan (services through the reducer, workers through
  // the ownership source); their PIDs go in gone, and the longest stop grace comes back.
  Millis evict(const std::vector<Eviction>& victims, const Ownership& owners,
               const std::string& requester, std::vector<pid_t>& gone);

  bool claim(Unit& u);
  void adopt(Unit& u, std::shared_ptr<Instance> instance, const std::string& why,
             std::optional<int> restarts = std::nullopt, bool asleep = false);
  // What an instance's processes hold now on the GPU where they hold the most (NVML); nothing
  // when VRAM cannot be read.
  std::optional<uint64_t> held_now(const Instance& instance) const;
  // Restarts a previous daemon was waiting out the backoff of when it went down.
  void resume_pending_restarts();
  // A pid_file that exists but names nothing adoptable (stale, reused PID) is worth a line.
  void note_not_adopted(Unit& u, const Error& why);
  // The instance's record with the unit's restart count, so that a restarted daemon keeps it.
  Status save_record(const Unit& u);
  ExitCallback exit_handler(const Unit& u);

  // Wraps a callback so it does nothing once the supervisor is gone.
  template <typename F>
  auto guarded(F f) const;

  boost::asio::any_io_executor executor_;
  Clock& clock_;
  const Config& config_;
  Runtime& runtime_;
  Prober& prober_;
  StateStore& store_;
  EventBus& events_;
  std::map<std::string, std::unique_ptr<Unit>> units_;
  uint64_t next_waiter_ = 1;
  bool shutting_down_ = false;
  GpuInventory* gpus_ = nullptr;
  OwnershipSource* owners_ = nullptr;
  bool preempt_busy_lower_ = false;
  std::deque<std::pair<std::string, std::string>> placement_queue_;  // name, why
  // The admission queue (supervisor_queue.cc): placements waiting for busy services.
  struct Parked {
    std::string name;
    std::string why;
    std::vector<std::string> waiting_for;
    SteadyTime since;
    int64_t since_unix_ms = 0;
  };
  std::deque<Parked> parked_;
  std::map<std::string, Parked> requeued_;  // taken from parked_ to be placed again
  std::unique_ptr<Timer> queue_timer_;
  bool queue_timer_armed_ = false;
  bool queue_look_posted_ = false;
  void park(Unit& u, const std::string& why, const Plan& plan);
  // A parked service that waited past daemon.queue_max_wait: its busy blockers drain.
  void drain_for(const Parked& p);
  // name left the queue (placed, refused, abandoned or no longer wanted): what drained for it
  // takes work again, and the ensures held back meanwhile go on.
  void end_drain(const std::string& name);
  // An ensure that came while its service drained, and waited past its own timeout.
  bool held_back_timed_out(Unit& u, lifecycle::WaiterId id, Millis after);
  void queue_may_move();
  void look_at_queue();
  void leave_queue(const std::string& name, bool placed);
  std::unique_ptr<Timer> placement_timer_;
  struct Placement {
    std::string name;
    std::vector<unsigned> gpus;
    std::vector<pid_t> gone;  // the victims' processes, which NVML must stop listing
    SteadyTime deadline;
    Millis interval{1};
    std::string why;
    int rounds = 1;  // of eviction: a sleep that freed less than hoped is followed by another
  };
  bool evictions_settling(const std::string& requester) const;
  std::optional<Placement> placement_;
  std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);
};

}  // namespace gpuvisor
