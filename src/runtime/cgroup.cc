#include "runtime/cgroup.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <unistd.h>

#include <cerrno>
#include <csignal>
#include <cstring>
#include <fstream>

#include "runtime/pidfd.h"

namespace gpuvisor {

namespace {

constexpr long kCgroup2Magic = 0x63677270;

bool on_cgroup2(const std::string& path) {
  struct statfs fs {};
  return statfs(path.c_str(), &fs) == 0 && fs.f_type == kCgroup2Magic;
}

bool write_file(const std::string& path, const std::string& text) {
  const int fd = open(path.c_str(), O_WRONLY | O_CLOEXEC);
  if (fd < 0) return false;
  const bool ok = write(fd, text.data(), text.size()) == static_cast<ssize_t>(text.size());
  close(fd);
  return ok;
}

}  // namespace

Result<Cgroup> Cgroup::create(const std::string& dir) {
  if (mkdir(dir.c_str(), 0755) != 0 && errno != EEXIST) {
    return make_error(ErrorCode::kUnavailable,
                      "cannot create " + dir + ": " + std::strerror(errno));
  }
  if (!on_cgroup2(dir)) {
    return make_error(ErrorCode::kUnavailable, dir + " is not on a cgroup2 file system");
  }
  return Cgroup(dir);
}

std::optional<Cgroup> Cgroup::open_existing(const std::string& dir) {
  if (dir.empty() || !on_cgroup2(dir)) return std::nullopt;
  return Cgroup(dir);
}

std::vector<pid_t> Cgroup::pids() const {
  std::vector<pid_t> out;
  std::ifstream in(procs_file());
  pid_t pid = 0;
  while (in >> pid) out.push_back(pid);
  return out;
}

bool Cgroup::populated() const {
  std::ifstream in(dir_ + "/cgroup.events");
  std::string key;
  int value = 0;
  while (in >> key >> value) {
    if (key == "populated") return value != 0;
  }
  // No cgroup.events (directory gone): nothing can be left inside it.
  return false;
}

void Cgroup::signal_all(int sig) const {
  if (sig == SIGKILL && write_file(dir_ + "/cgroup.kill", "1")) return;
  for (const pid_t pid : pids()) {
    // Through a pidfd, and only if the process is still a member after the pidfd pins it:
    // a PID read from cgroup.procs may have exited and been reused outside the cgroup.
    Pidfd fd = Pidfd::open(pid);
    if (!fd.valid()) continue;
    std::ifstream membership("/proc/" + std::to_string(pid) + "/cgroup");
    std::string line;
    bool member = false;
    while (std::getline(membership, line)) {
      if (line.rfind("0::", 0) == 0) member = dir_.ends_with(line.substr(3));
    }
    if (member) fd.send_signal(sig);
  }
}

void Cgroup::remove() const {
  // rmdir fails with EBUSY while members remain; the caller retries after they are gone.
  rmdir(dir_.c_str());
}

}  // namespace gpuvisor
