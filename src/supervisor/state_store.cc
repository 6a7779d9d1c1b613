#include "supervisor/state_store.h"

#include <fcntl.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "runtime/atomic_file.h"

namespace gpuvisor {

namespace fs = std::filesystem;

namespace {

nlohmann::json to_json(const InstanceRecord& r) {
  return {{"service", r.service},
          {"runtime", to_string(r.runtime)},
          {"container", r.container},
          {"pid", r.pid},
          {"start_time", r.start_time},
          {"cgroup", r.cgroup},
          {"from_pid_file", r.from_pid_file},
          {"started_unix_ms", r.started_unix_ms},
          {"restarts", r.restarts},
          {"asleep", r.asleep}};
}

Result<InstanceRecord> from_json(const nlohmann::json& j) {
  InstanceRecord r;
  try {
    r.service = j.at("service").get<std::string>();
    const std::string runtime = j.value("runtime", "process");
    if (runtime == "docker") {
      r.runtime = RuntimeKind::kDocker;
    } else if (runtime == "external") {
      r.runtime = RuntimeKind::kExternal;
    } else if (runtime == "remote") {
      r.runtime = RuntimeKind::kRemote;
    } else if (runtime != "process") {
      return make_error(ErrorCode::kBadRequest, "unknown runtime '" + runtime + "'");
    }
    r.container = j.value("container", "");
    r.pid = j.at("pid").get<pid_t>();
    r.start_time = j.at("start_time").get<uint64_t>();
    r.cgroup = j.value("cgroup", "");
    r.from_pid_file = j.value("from_pid_file", false);
    r.started_unix_ms = j.value("started_unix_ms", int64_t{0});
    r.restarts = j.value("restarts", 0);
    r.asleep = j.value("asleep", false);
  } catch (const nlohmann::json::exception& e) {
    return make_error(ErrorCode::kBadRequest, e.what());
  }
  if (r.runtime == RuntimeKind::kDocker) {
    if (r.container.empty()) return make_error(ErrorCode::kBadRequest, "container is empty");
  } else if (r.runtime == RuntimeKind::kProcess && r.pid <= 0) {
    return make_error(ErrorCode::kBadRequest, "pid must be positive");
  }
  return r;
}

}  // namespace

Result<StateStore> StateStore::open(const std::string& dir) {
  std::error_code ec;
  for (const char* sub : {"run", "logs"}) {
    fs::create_directories(fs::path(dir) / sub, ec);
    if (ec) {
      return make_error(ErrorCode::kUnavailable,
                        "cannot create state directory " + dir + "/" + sub + ": " + ec.message());
    }
  }
  fs::permissions(dir, fs::perms::owner_all, fs::perm_options::replace, ec);
  return StateStore(fs::absolute(dir).lexically_normal().string());
}

std::string StateStore::log_path(const std::string& service) const {
  return dir_ + "/logs/" + service + ".log";
}

Status StateStore::save(const InstanceRecord& record) {
  return write_file_atomically(dir_ + "/run/" + record.service + ".json",
                               to_json(record).dump() + "\n");
}

void StateStore::remove(const std::string& service) {
  std::error_code ec;
  fs::remove(dir_ + "/run/" + service + ".json", ec);
}

Status StateStore::save_measured_vram(const std::map<std::string, uint64_t>& bytes) {
  return write_file_atomically(dir_ + "/vram.json", nlohmann::json(bytes).dump() + "\n");
}

std::map<std::string, uint64_t> StateStore::load_measured_vram() const {
  std::ifstream in(dir_ + "/vram.json");
  std::map<std::string, uint64_t> out;
  if (!in) return out;  // nothing measured yet
  const auto parsed = nlohmann::json::parse(in, nullptr, /*allow_exceptions=*/false);
  if (!parsed.is_object()) {
    // Only a cache of measurements: plans fall back to the config's vram_mb, and the next
    // measurement rewrites the file.
    spdlog::warn("state directory: {}/vram.json: not valid JSON; VRAM measurements start over",
                 dir_);
    return out;
  }
  for (const auto& [name, value] : parsed.items()) {
    if (value.is_number_unsigned()) out[name] = value.get<uint64_t>();
  }
  return out;
}

std::map<std::string, StateStore::PendingRestart> StateStore::load_pending_restarts() const {
  std::ifstream in(dir_ + "/restarts.json");
  std::map<std::string, PendingRestart> out;
  if (!in) return out;
  const auto parsed = nlohmann::json::parse(in, nullptr, /*allow_exceptions=*/false);
  if (!parsed.is_object()) {
    spdlog::warn("state directory: {}/restarts.json: not valid JSON; pending restarts dropped",
                 dir_);
    return out;
  }
  for (const auto& [name, value] : parsed.items()) {
    if (!value.is_object() || !value.value("restarts", nlohmann::json()).is_number_integer() ||
        !value.value("due_unix_ms", nlohmann::json()).is_number_integer()) {
      spdlog::warn("state directory: {}/restarts.json: entry '{}' is malformed; dropped", dir_,
                   name);
      continue;
    }
    out[name] = {value["restarts"].get<int>(), value["due_unix_ms"].get<int64_t>()};
  }
  return out;
}

namespace {
nlohmann::json pending_json(const std::map<std::string, StateStore::PendingRestart>& all) {
  nlohmann::json j = nlohmann::json::object();
  for (const auto& [name, p] : all) {
    j[name] = {{"restarts", p.restarts}, {"due_unix_ms", p.due_unix_ms}};
  }
  return j;
}
}  // namespace

Status StateStore::save_pending_restart(const std::string& service, const PendingRestart& restart) {
  auto all = load_pending_restarts();
  all[service] = restart;
  return write_file_atomically(dir_ + "/restarts.json", pending_json(all).dump() + "\n");
}

Status StateStore::forget_pending_restart(const std::string& service) {
  auto all = load_pending_restarts();
  if (all.erase(service) == 0) return {};
  return write_file_atomically(dir_ + "/restarts.json", pending_json(all).dump() + "\n");
}

StateStore::Loaded StateStore::load_all() const {
  Loaded out;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(dir_ + "/run", ec)) {
    const auto& path = entry.path();
    if (path.extension() == ".tmp") {
      // A crash between write and rename: the record it would have replaced is still there.
      fs::remove(path, ec);
      continue;
    }
    if (path.extension() != ".json") continue;
    std::ifstream in(path);
    std::stringstream text;
    text << in.rdbuf();
    const auto parsed = nlohmann::json::parse(text.str(), nullptr, /*allow_exceptions=*/false);
    Result<InstanceRecord> record =
        parsed.is_discarded()
            ? Result<InstanceRecord>(make_error(ErrorCode::kBadRequest, "not valid JSON"))
            : from_json(parsed);
    if (!record || record->service != path.stem().string()) {
      const std::string why =
          record ? "names service '" + record->service + "'" : record.error().message;
      // Kept for a person to look at, out of the way of the next load.
      fs::rename(path, path.string() + ".corrupt", ec);
      out.problems.push_back(path.string() + ": " + why + " (moved to .corrupt)");
      continue;
    }
    out.records.push_back(std::move(*record));
  }
  return out;
}

}  // namespace gpuvisor
