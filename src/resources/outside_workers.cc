#include "resources/outside_workers.h"

#include <poll.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <unistd.h>

#include "runtime/pidfd.h"

namespace gpuvisor {

namespace asio = boost::asio;

OutsideWorkers::Users OutsideWorkers::Users::system() {
  return {[](pid_t pid) -> std::optional<uid_t> {
            struct stat st {};
            if (stat(("/proc/" + std::to_string(pid)).c_str(), &st) != 0) return std::nullopt;
            return st.st_uid;
          },
          geteuid()};
}

OutsideWorkers::OutsideWorkers(asio::any_io_executor executor, WorkerRegistry& registry,
                               EventBus& events, Users users)
    : executor_(std::move(executor)),
      registry_(registry),
      events_(events),
      users_(std::move(users)) {}

OutsideWorkers::~OutsideWorkers() {
  for (const auto& [pid, fd] : pidfds_) {
    if (auto removed = registry_.remove(id_for(pid)); !removed)
      spdlog::debug("{}", removed.error().message);
  }
}

Result<WorkerInfo> OutsideWorkers::add(const OutsideRegistration& r,
                                       const std::function<std::string(pid_t)>& owner_of) {
  const std::string pid = std::to_string(r.pid);
  if (pidfds_.count(r.pid) != 0) {
    return make_error(ErrorCode::kConflict, "pid " + pid + " is registered already");
  }
  if (const std::string owner = owner_of(r.pid); !owner.empty()) {
    return make_error(ErrorCode::kConflict,
                      "pid " + pid + " is gpuvisor's own (" + owner + "), not an outside worker");
  }
  const auto uid = users_.owner(r.pid);
  if (!uid) return make_error(ErrorCode::kNotFound, "pid " + pid + " is not running");
  if (users_.self != 0 && *uid != users_.self) {
    return make_error(ErrorCode::kForbidden,
                      "pid " + pid + " belongs to another user (uid " + std::to_string(*uid) +
                          "); a daemon not running as root registers only its own user's");
  }
  // The pidfd first, then the start time: while the pidfd shows the process alive, /proc/PID
  // is that process, so the start time recorded is its own and not a successor's.
  Pidfd pidfd = Pidfd::open(r.pid);
  if (!pidfd.valid()) return make_error(ErrorCode::kNotFound, "pid " + pid + " is not running");
  WorkerInfo info;
  info.id = id_for(r.pid);
  info.type = r.worker_type;
  info.pid = r.pid;
  info.plugin = r.plugin_id.value_or("");
  info.plugin_name = r.plugin_name;
  info.config = r.config;
  info.status = "idle";
  info.outside = true;
  if (auto added = registry_.add(info); !added) return added.error();
  pollfd exited{pidfd.fd(), POLLIN, 0};
  if (poll(&exited, 1, 0) != 0) {  // gone before its start time was read: nothing to prove
    (void)registry_.remove(info.id);
    return make_error(ErrorCode::kNotFound, "pid " + pid + " is not running");
  }
  pidfds_[r.pid] = std::make_unique<asio::posix::stream_descriptor>(executor_, pidfd.release());
  watch(r.pid);
  const WorkerInfo& registered = *registry_.find(info.id);
  events_.publish("worker.registered",
                  {{"worker", registered.id}, {"pid", registered.pid}, {"type", registered.type}});
  return registered;
}

void OutsideWorkers::watch(pid_t pid) {
  pidfds_.at(pid)->async_wait(asio::posix::stream_descriptor::wait_read,
                              [this, pid](boost::system::error_code ec) {
                                if (!ec) exited(pid);  // aborted: unregistered, or we are gone
                              });
}

void OutsideWorkers::exited(pid_t pid) {
  if (pidfds_.erase(pid) == 0) return;
  const std::string id = id_for(pid);
  (void)registry_.remove(id);
  spdlog::info("{}: its process exited; unregistered", id);
  events_.publish("worker.unregistered", {{"worker", id}, {"pid", pid}, {"reason", "exited"}});
}

Result<WorkerInfo> OutsideWorkers::update(pid_t pid, const WorkerUpdate& update) {
  if (pidfds_.count(pid) == 0) {
    return make_error(ErrorCode::kNotFound, "no outside worker with pid " + std::to_string(pid) +
                                                " (register it first: POST /api/v1/workers)");
  }
  if (auto updated = registry_.update(id_for(pid), update); !updated) return updated.error();
  return *registry_.find(id_for(pid));
}

Result<WorkerInfo> OutsideWorkers::remove(pid_t pid) {
  const auto it = pidfds_.find(pid);
  if (it == pidfds_.end()) {
    return make_error(ErrorCode::kNotFound, "no outside worker with pid " + std::to_string(pid));
  }
  const WorkerInfo gone = *registry_.find(id_for(pid));
  pidfds_.erase(it);  // cancels the watch
  (void)registry_.remove(gone.id);
  events_.publish("worker.unregistered",
                  {{"worker", gone.id}, {"pid", pid}, {"reason", "unregistered"}});
  return gone;
}

}  // namespace gpuvisor
