#include "resources/outside_workers.h"

#include <poll.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fstream>

#include "runtime/atomic_file.h"
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
                               EventBus& events, std::string state_file, Users users)
    : executor_(std::move(executor)),
      registry_(registry),
      events_(events),
      state_file_(std::move(state_file)),
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
  WorkerInfo info;
  info.id = id_for(r.pid);
  info.type = r.worker_type;
  info.pid = r.pid;
  info.plugin = r.plugin_id.value_or("");
  info.plugin_name = r.plugin_name;
  info.config = r.config;
  info.status = "idle";
  info.outside = true;
  if (auto held = hold(std::move(info)); !held) return held.error();
  save();
  const WorkerInfo& registered = *registry_.find(id_for(r.pid));
  events_.publish("worker.registered",
                  {{"worker", registered.id}, {"pid", registered.pid}, {"type", registered.type}});
  return registered;
}

Status OutsideWorkers::hold(WorkerInfo info) {
  const pid_t pid = info.pid;
  const std::string gone = "pid " + std::to_string(pid) + " is not running";
  // The pidfd first, then the start time: while the pidfd shows the process alive, /proc/PID
  // is that process, so the start time recorded is its own and not a successor's.
  Pidfd pidfd = Pidfd::open(pid);
  if (!pidfd.valid()) return make_error(ErrorCode::kNotFound, gone);
  const uint64_t expected = info.start_time;  // 0 for a new registration
  const std::string id = info.id;
  if (auto added = registry_.add(std::move(info)); !added) return added.error();
  pollfd exited{pidfd.fd(), POLLIN, 0};
  if (poll(&exited, 1, 0) != 0 ||
      (expected != 0 && registry_.find(id)->start_time != expected)) {  // gone, or reused
    (void)registry_.remove(id);
    return make_error(ErrorCode::kNotFound, gone);
  }
  pidfds_[pid] = std::make_unique<asio::posix::stream_descriptor>(executor_, pidfd.release());
  watch(pid);
  return {};
}

void OutsideWorkers::save() const {
  if (state_file_.empty()) return;
  const auto text = [](const std::optional<std::string>& v) {
    return v ? nlohmann::json(*v) : nlohmann::json(nullptr);
  };
  nlohmann::json list = nlohmann::json::array();
  for (const auto& [pid, fd] : pidfds_) {
    const WorkerInfo* w = registry_.find(id_for(pid));
    if (w == nullptr) continue;
    list.push_back({{"pid", w->pid},
                    {"start_time", w->start_time},
                    {"type", w->type},
                    {"plugin", w->plugin},
                    {"plugin_name", text(w->plugin_name)},
                    {"config", w->config},
                    {"status", w->status},
                    {"job", text(w->job)},
                    {"loaded_resource", text(w->loaded_resource)}});
  }
  if (auto written = write_file_atomically(state_file_, list.dump() + "\n"); !written) {
    spdlog::warn("cannot save the outside workers: {}", written.error().message);
  }
}

size_t OutsideWorkers::restore() {
  if (state_file_.empty()) return 0;
  std::ifstream in(state_file_);
  if (!in) return 0;
  const auto list = nlohmann::json::parse(in, nullptr, false);
  if (!list.is_array()) {
    spdlog::warn("{}: not a list of outside workers; starting without them", state_file_);
    return 0;
  }
  const auto text = [](const nlohmann::json& w, const char* key) {
    const auto v = w.value(key, nlohmann::json());
    return v.is_string() ? std::optional<std::string>(v.get<std::string>()) : std::nullopt;
  };
  size_t restored = 0;
  for (const auto& w : list) {
    if (!w.is_object() || !w.value("pid", nlohmann::json()).is_number_integer()) continue;
    WorkerInfo info;
    info.pid = w["pid"].get<pid_t>();
    info.id = id_for(info.pid);
    info.start_time = w.value("start_time", uint64_t{0});
    info.type = w.value("type", "");
    info.plugin = w.value("plugin", "");
    info.plugin_name = text(w, "plugin_name");
    info.config = w.value("config", nlohmann::json());
    info.status = w.value("status", "idle");
    info.job = text(w, "job");
    info.loaded_resource = text(w, "loaded_resource");
    info.outside = true;
    if (info.pid <= 0 || info.start_time == 0 || info.type.empty()) continue;
    const pid_t pid = info.pid;
    if (hold(std::move(info))) {
      ++restored;
    } else {
      spdlog::info("outside worker {} is gone since the last daemon: not taken back", pid);
    }
  }
  save();  // without those that are gone
  if (restored > 0) spdlog::info("took back {} outside worker(s) registered before", restored);
  return restored;
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
  save();
  spdlog::info("{}: its process exited; unregistered", id);
  events_.publish("worker.unregistered", {{"worker", id}, {"pid", pid}, {"reason", "exited"}});
}

Result<WorkerInfo> OutsideWorkers::update(pid_t pid, const WorkerUpdate& update) {
  if (pidfds_.count(pid) == 0) {
    return make_error(ErrorCode::kNotFound, "no outside worker with pid " + std::to_string(pid) +
                                                " (register it first: POST /api/v1/workers)");
  }
  if (auto updated = registry_.update(id_for(pid), update); !updated) return updated.error();
  save();
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
  save();
  events_.publish("worker.unregistered",
                  {{"worker", gone.id}, {"pid", pid}, {"reason", "unregistered"}});
  return gone;
}

}  // namespace gpuvisor
