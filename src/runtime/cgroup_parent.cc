#include "runtime/cgroup_parent.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <optional>
#include <sstream>
#include <utility>

namespace gpuvisor {

namespace {

// The cgroup2 mount point, from /proc/self/mountinfo (field 5 is the mount point; the fs type
// follows the " - " separator).
std::optional<std::string> cgroup2_mount() {
  std::ifstream in("/proc/self/mountinfo");
  std::string line;
  while (std::getline(in, line)) {
    const auto sep = line.find(" - ");
    if (sep == std::string::npos) continue;
    std::istringstream tail(line.substr(sep + 3));
    std::string fstype;
    tail >> fstype;
    if (fstype != "cgroup2") continue;
    std::istringstream head(line.substr(0, sep));
    std::string field;
    for (int i = 1; i <= 5 && head >> field; ++i) {
      if (i == 5) return field;
    }
  }
  return std::nullopt;
}

// The "0::/path" line of /proc/self/cgroup: this process's place in the v2 hierarchy.
std::optional<std::string> own_cgroup() {
  std::ifstream in("/proc/self/cgroup");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("0::", 0) == 0) return line.substr(3);
  }
  return std::nullopt;
}

Status make_dir(const std::string& dir) {
  if (mkdir(dir.c_str(), 0755) != 0 && errno != EEXIST) {
    return make_error(ErrorCode::kUnavailable,
                      "cannot create " + dir + ": " + std::strerror(errno));
  }
  return {};
}

bool same_file(int fd, const std::string& path) {
  struct stat held {
  }, named{};
  return fstat(fd, &held) == 0 && stat(path.c_str(), &named) == 0 && held.st_dev == named.st_dev &&
         held.st_ino == named.st_ino;
}

bool older_than(const std::string& path, std::chrono::seconds age) {
  struct stat st {};
  if (stat(path.c_str(), &st) != 0) return false;
  // cgroupfs sets a directory's times when it is made (or first looked up again): a directory
  // can look younger than it is, never older, so an old one really is.
  return std::chrono::system_clock::now() - std::chrono::system_clock::from_time_t(st.st_mtime) >=
         age;
}

// The empty cgroups older than min_age inside dir, then dir itself. dir's age is read first:
// removing a cgroup inside it makes it look new. rmdir is the emptiness check: the kernel
// refuses (EBUSY) a cgroup with a process or a cgroup inside, atomically, where looking first
// and removing after would race a process joining.
void remove_empty(const std::string& dir, std::chrono::seconds min_age,
                  std::vector<std::string>& removed) {
  if (!older_than(dir, min_age)) return;
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator(dir, ec)) {
    const std::string child = entry.path().string();
    if (entry.is_directory(ec) && older_than(child, min_age) && rmdir(child.c_str()) == 0) {
      removed.push_back(child);
    }
  }
  if (rmdir(dir.c_str()) == 0) removed.push_back(dir);
}

}  // namespace

Result<std::string> CgroupParent::root() {
  const auto mount = cgroup2_mount();
  if (!mount) return make_error(ErrorCode::kUnavailable, "no cgroup2 file system is mounted");
  const auto self = own_cgroup();
  if (!self) return make_error(ErrorCode::kUnavailable, "this process has no cgroup2 membership");
  const std::string root = *mount + (*self == "/" ? "" : *self) + "/gpuvisor";
  if (auto made = make_dir(root); !made) return made.error();
  return root;
}

Result<CgroupParent> CgroupParent::claim(const std::string& state_dir) {
  auto at = root();
  if (!at) return at.error();
  return claim(*at, state_dir);
}

Result<CgroupParent> CgroupParent::claim(const std::string& root, const std::string& state_dir) {
  struct stat st {};
  if (stat(state_dir.c_str(), &st) != 0) {
    return make_error(ErrorCode::kUnavailable,
                      "cannot stat " + state_dir + ": " + std::strerror(errno));
  }
  const std::string dir =
      root + "/state-" + std::to_string(st.st_dev) + "-" + std::to_string(st.st_ino);
  // Another daemon's remove_leftovers() may remove the directory between its making and its
  // locking here: then it is made again. It holds the lock only for a few rmdirs.
  for (int attempt = 0; attempt < 5; ++attempt) {
    if (auto made = make_dir(dir); !made) return made.error();
    const int fd = open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) continue;
    int rc = 0;
    do {
      rc = flock(fd, LOCK_SH);
    } while (rc != 0 && errno == EINTR);
    if (rc == 0 && same_file(fd, dir)) return CgroupParent(dir, fd);
    close(fd);
  }
  return make_error(ErrorCode::kUnavailable, "cannot hold " + dir + ": it keeps being removed");
}

CgroupParent::CgroupParent(CgroupParent&& other) noexcept
    : dir_(std::move(other.dir_)), lock_fd_(std::exchange(other.lock_fd_, -1)) {}

CgroupParent& CgroupParent::operator=(CgroupParent&& other) noexcept {
  if (this != &other) {
    if (lock_fd_ >= 0) close(lock_fd_);
    dir_ = std::move(other.dir_);
    lock_fd_ = std::exchange(other.lock_fd_, -1);
  }
  return *this;
}

CgroupParent::~CgroupParent() {
  if (lock_fd_ < 0) return;
  // A clean exit leaves nothing behind: the directory goes if it is empty (services left
  // running keep it) and no one else holds it (the lock turns exclusive only then).
  if (flock(lock_fd_, LOCK_EX | LOCK_NB) == 0) rmdir(dir_.c_str());
  close(lock_fd_);
}

std::vector<std::string> CgroupParent::remove_leftovers(const std::string& root,
                                                        std::chrono::seconds min_age) {
  std::vector<std::string> removed;
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator(root, ec)) {
    const std::string dir = entry.path().string();
    if (!entry.is_directory(ec) || !entry.path().filename().string().starts_with("state-")) {
      continue;
    }
    const int fd = open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) continue;
    // Held by a running daemon (this one's own included): not a leftover.
    if (flock(fd, LOCK_EX | LOCK_NB) == 0) remove_empty(dir, min_age, removed);
    close(fd);
  }
  return removed;
}

}  // namespace gpuvisor
