#include "runtime/process_runtime.h"

#include <sys/stat.h>

#include <algorithm>
#include <chrono>
#include <csignal>
#include <filesystem>
#include <fstream>

#include "core/duration.h"
#include "runtime/proc.h"
#include "runtime/process_instance.h"

namespace gpuvisor {

namespace {

// Start times have 10 ms resolution and the file's mtime is set when it is closed.
constexpr double kPidFileSlackSeconds = 1.0;

std::vector<std::string> service_argv(const ServiceSpec& spec, const std::string& conda) {
  std::vector<std::string> argv = spec.command;
  if (spec.shell) argv = {"/bin/sh", "-c", spec.command.empty() ? "" : spec.command.front()};
  return spec.conda_env.empty() ? argv : conda_run(conda, spec.conda_env, argv);
}

}  // namespace

std::string describe(const InstanceRecord& record) {
  if (!record.container.empty() && record.pid <= 0) {
    return "container " + record.container.substr(0, 12);
  }
  if (!record.container.empty()) {
    return "container " + record.container.substr(0, 12) + " (pid " + std::to_string(record.pid) +
           ")";
  }
  return "pid " + std::to_string(record.pid);
}

ProcessRuntime::ProcessRuntime(boost::asio::any_io_executor executor, std::string cgroup_parent,
                               std::string conda)
    : executor_(std::move(executor)),
      cgroup_parent_(std::move(cgroup_parent)),
      conda_(std::move(conda)) {}

Result<std::shared_ptr<Instance>> ProcessRuntime::start(const ServiceSpec& spec,
                                                        const LaunchOptions& options,
                                                        ExitCallback on_exit) {
  ChildSpec child{
      service_argv(spec, conda_), {spec.env.begin(), spec.env.end()}, spec.cwd, options.log_path};
  child.env.insert(child.env.end(), options.extra_env.begin(), options.extra_env.end());
  if (!cgroup_parent_.empty()) {
    // A fresh cgroup per instance: leftovers of a previous one can never be mistaken for it.
    child.cgroup_dir = cgroup_parent_ + "/" + spec.name + "." + std::to_string(getpid()) + "." +
                       std::to_string(++next_instance_);
  }
  auto spawned = ChildProcess::spawn(executor_, child);
  if (!spawned) return spawned.error();
  InstanceRecord record;
  record.service = spec.name;
  record.pid = (*spawned)->pid();
  record.cgroup = (*spawned)->cgroup_dir();
  record.started_unix_ms = unix_ms_now();
  if (const auto st = read_proc_stat(record.pid)) record.start_time = st->start_time;

  auto instance = std::make_shared<ProcessInstance>(std::move(record), std::move(*spawned));
  instance->watch(std::move(on_exit));
  return std::shared_ptr<Instance>(instance);
}

Result<std::shared_ptr<Instance>> ProcessRuntime::adopt(const InstanceRecord& record,
                                                        const ServiceSpec*, ExitCallback on_exit) {
  // Pin the PID with a pidfd first, then prove it is the recorded process: a check made
  // before pinning could be outdated by the time we signal.
  Pidfd pidfd = Pidfd::open(record.pid);
  if (!pidfd.valid()) {
    return make_error(ErrorCode::kNotFound, "pid " + std::to_string(record.pid) + " is gone");
  }
  if (!same_process_alive(record.pid, record.start_time)) {
    return make_error(ErrorCode::kConflict, "pid " + std::to_string(record.pid) +
                                                " now belongs to another process (start time "
                                                "differs); it will not be touched");
  }
  auto instance = std::make_shared<ProcessInstance>(
      record, ChildProcess::adopt(executor_, record.pid, std::move(pidfd),
                                  Cgroup::open_existing(record.cgroup)));
  instance->watch(std::move(on_exit));
  return std::shared_ptr<Instance>(instance);
}

void ProcessRuntime::discard(const InstanceRecord& record) {
  auto cgroup = Cgroup::open_existing(record.cgroup);
  if (!cgroup) return;
  // Members of a cgroup this daemon created are ours whatever their PIDs.
  if (cgroup->populated()) cgroup->signal_all(SIGKILL);
  cgroup->remove();
}

std::vector<std::string> ProcessRuntime::reclaim(const std::vector<InstanceRecord>& records) {
  std::vector<std::string> out;
  if (cgroup_parent_.empty()) return out;
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator(cgroup_parent_, ec)) {
    if (!entry.is_directory(ec)) continue;
    const std::string dir = entry.path().string();
    const bool named = std::any_of(records.begin(), records.end(),
                                   [&](const InstanceRecord& r) { return r.cgroup == dir; });
    auto cgroup = Cgroup::open_existing(dir);
    if (named || !cgroup) continue;
    const std::vector<pid_t> pids = cgroup->pids();
    if (!pids.empty()) {
      cgroup->signal_all(SIGKILL);
      std::string list;
      for (const pid_t pid : pids) list += (list.empty() ? "" : ", ") + std::to_string(pid);
      out.push_back(dir + ": left running by an earlier daemon with no record of it; killed pid " +
                    list);
    }
    // Empty now, or once the killed members are reaped: the next start removes it then.
    cgroup->remove();
  }
  return out;
}

Result<std::shared_ptr<Instance>> ProcessRuntime::adopt_existing(const ServiceSpec& spec,
                                                                 ExitCallback on_exit) {
  if (spec.pid_file.empty()) return make_error(ErrorCode::kNotFound, "no pid_file configured");
  std::ifstream in(spec.pid_file);
  pid_t pid = 0;
  if (!in) return make_error(ErrorCode::kNotFound, "no pid file " + spec.pid_file);
  if (!(in >> pid) || pid <= 0) {
    return make_error(ErrorCode::kBadRequest, spec.pid_file + " does not hold a PID");
  }
  Pidfd pidfd = Pidfd::open(pid);
  const auto st = read_proc_stat(pid);
  if (!pidfd.valid() || !st || st->state == 'Z') {
    return make_error(ErrorCode::kNotFound,
                      "pid " + std::to_string(pid) + " from " + spec.pid_file + " is not running");
  }
  // The file was written by the process it names, so that process is older than the file. A
  // process that started after it merely reused the PID and must never be signalled.
  struct stat file {};
  if (stat(spec.pid_file.c_str(), &file) != 0) {
    return make_error(ErrorCode::kNotFound, "cannot stat " + spec.pid_file);
  }
  const double written =
      static_cast<double>(file.st_mtim.tv_sec) + static_cast<double>(file.st_mtim.tv_nsec) / 1e9;
  if (start_time_unix_seconds(st->start_time) > written + kPidFileSlackSeconds) {
    return make_error(ErrorCode::kNotFound,
                      "pid " + std::to_string(pid) + " started after " + spec.pid_file +
                          " was written: the PID was reused, the file is stale");
  }
  InstanceRecord record;
  record.service = spec.name;
  record.pid = pid;
  record.start_time = st->start_time;
  record.from_pid_file = true;
  record.started_unix_ms = unix_ms_now();
  auto instance = std::make_shared<ProcessInstance>(
      record, ChildProcess::adopt(executor_, pid, std::move(pidfd), std::nullopt));
  instance->watch(std::move(on_exit));
  return std::shared_ptr<Instance>(instance);
}

}  // namespace gpuvisor
