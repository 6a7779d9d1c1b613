// Which processes are gpuvisor's, and whose: one snapshot, taken at one moment, that the
// planner, the GPU views, /metrics and conflict events all read, so they never disagree about
// a PID. A PID absent from it is external. Built by the resources layer (resources/ownership.h)
// from the supervisor's services and the worker registry; read here by layers below it through
// OwnershipSource.
#pragma once

#include <sys/types.h>

#include <map>
#include <optional>
#include <string>
#include <vector>

#include "core/duration.h"

namespace gpuvisor {

// kOutsideWorker: registered by an app (POST /api/v1/workers); its memory is ours to count but
// not to free.
// kLease: VRAM reserved before anyone allocates it (POST /api/v1/leases), with the PID that will
// use it, if one was given.
enum class HolderKind { kService, kWorker, kOutsideWorker, kLease };

// Whoever a set of our PIDs belongs to.
struct Holder {
  HolderKind kind = HolderKind::kService;
  std::string name;      // the service's name, or the worker's id
  std::string plugin{};  // a worker's plugin
  std::string type{};    // an outside worker's type, as its app says (transcription, llm)
  // A worker's: its plugin's service's priority, or 0 for a plugin with no service. A busy
  // worker (running a job) is never evicted; an idle one may be, like a service.
  int priority = 0;
  bool busy = false;
  // A lease's: what it reserves, where, and until when (Unix ms; 0: until released).
  uint64_t reserved_bytes = 0;
  unsigned gpu = 0;
  int64_t expires_unix_ms = 0;

  // As the API shows it: the service's name, "worker:<id>" or "lease:<id>".
  std::string owner() const;
  // As people read it in a refusal: the service's name, "worker <id> (plugin <p>)", or
  // "outside worker <pid> (<type>)", or "lease <id> (<holder>)".
  std::string label() const;
};

class Ownership {
 public:
  void add(Holder holder, const std::vector<pid_t>& pids);
  // nullptr: not ours.
  const Holder* find(pid_t pid) const;
  // The holder whose owner() is `owner`, and its PIDs.
  const Holder* find(const std::string& owner) const;
  std::vector<pid_t> pids_of(const std::string& owner) const;
  const std::vector<Holder>& holders() const { return holders_; }
  const std::map<pid_t, size_t>& pids() const { return by_pid_; }

 private:
  std::vector<Holder> holders_;
  std::map<pid_t, size_t> by_pid_;  // index into holders_; the first holder to claim a PID keeps it
};

// Where the supervisor gets the whole snapshot, workers included, and how it asks a holder
// that is not a service (an idle worker) to go. The daemon wires resources' tracker in.
class OwnershipSource {
 public:
  virtual ~OwnershipSource() = default;
  // Read now: descendants started since the last look count too.
  virtual Ownership snapshot() = 0;
  // Stops an idle worker to free its GPU memory for `why`: how long it may take to go (its
  // stop grace), or nullopt when it is gone or busy.
  virtual std::optional<Millis> evict(const Holder& holder, const std::string& why) = 0;
};

}  // namespace gpuvisor
