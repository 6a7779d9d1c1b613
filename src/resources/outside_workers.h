// Workers that gpuvisor did not start: an app's own job processes (the seeds' Python apps run
// their own), registered over the API so that their GPU memory counts as the app's, not as an
// external conflict, and the planner plans around it. Each registration proves its PID by the
// process's start time and holds a pidfd on it: the worker leaves the registry on its own when
// that process exits (worker.unregistered), and a reused PID can never be taken for it.
// gpuvisor never signals them: they are the app's to stop. The registrations are kept in the
// state directory, so a daemon that restarts (or was SIGKILLed) takes back those whose process
// still runs with the same start time.
#pragma once

#include <sys/types.h>

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>

#include "core/result.h"
#include "events/event_bus.h"
#include "resources/worker_registry.h"

namespace gpuvisor {

struct OutsideRegistration {
  pid_t pid = 0;
  std::string worker_type;
  std::optional<std::string> plugin_id{};
  std::optional<std::string> plugin_name{};
  nlohmann::json config = nullptr;
};

class OutsideWorkers {
 public:
  // Whose process a PID is: the daemon may only take a non-root user's own processes.
  struct Users {
    std::function<std::optional<uid_t>(pid_t)> owner;  // nullopt: no such process
    uid_t self = 0;
    static Users system();  // /proc/PID's owner, and geteuid()
  };

  // state_file: where registrations are kept (empty: nowhere).
  OutsideWorkers(boost::asio::any_io_executor executor, WorkerRegistry& registry, EventBus& events,
                 std::string state_file = "", Users users = Users::system());
  ~OutsideWorkers();
  OutsideWorkers(const OutsideWorkers&) = delete;
  OutsideWorkers& operator=(const OutsideWorkers&) = delete;

  // NotFound: no such process; Forbidden: another user's (the daemon is not root); Conflict:
  // registered already, or a process of gpuvisor's own (owner_of says whose).
  Result<WorkerInfo> add(const OutsideRegistration& registration,
                         const std::function<std::string(pid_t)>& owner_of);
  // NotFound: no outside worker with that PID.
  Result<WorkerInfo> update(pid_t pid, const WorkerUpdate& update);
  Result<WorkerInfo> remove(pid_t pid);

  static std::string id_for(pid_t pid) { return "outside-" + std::to_string(pid); }

  // Takes back what a previous daemon had registered and still runs; returns how many.
  size_t restore();

 private:
  void watch(pid_t pid);
  void exited(pid_t pid);
  // Registers info (its PID proved, then watched), or says why not.
  Status hold(WorkerInfo info);
  void save() const;

  boost::asio::any_io_executor executor_;
  WorkerRegistry& registry_;
  EventBus& events_;
  std::string state_file_;
  Users users_;
  // The pidfd of each registered worker's process, readable once it has exited.
  std::map<pid_t, std::unique_ptr<boost::asio::posix::stream_descriptor>> pidfds_;
};

}  // namespace gpuvisor
