// Where a daemon keeps its cgroups: "<cgroup2 mount><own cgroup>/gpuvisor" is the root, and
// under it one directory per state directory, "state-<device>-<inode>", so that whatever lies
// under one was started by a daemon on that state directory and no other (two daemons started
// from one shell share their own cgroup, not this).
//
// A daemon holds its directory (a shared flock on it) for as long as it runs. A daemon killed
// with SIGKILL holds nothing, and the empty directories it leaves pile up, one per state
// directory ever used; remove_leftovers() clears them, touching only what no daemon holds.
#pragma once

#include <chrono>
#include <string>
#include <vector>

#include "core/result.h"

namespace gpuvisor {

class CgroupParent {
 public:
  // "<cgroup2 mount><own cgroup>/gpuvisor", created if needed. An error with a reason when the
  // machine does not allow it (no cgroup2 mount, read-only, not delegated); callers fall back
  // to tracking descendants and session members through /proc.
  static Result<std::string> root();
  // root()'s directory for state_dir, created if needed and held until this object goes.
  static Result<CgroupParent> claim(const std::string& state_dir);
  // The same under another root (tests).
  static Result<CgroupParent> claim(const std::string& root, const std::string& state_dir);

  CgroupParent(CgroupParent&& other) noexcept;
  CgroupParent& operator=(CgroupParent&& other) noexcept;
  CgroupParent(const CgroupParent&) = delete;
  CgroupParent& operator=(const CgroupParent&) = delete;
  // Removes the directory when it is empty and no one else holds it.
  ~CgroupParent();

  // The directory under which service and worker cgroups are created.
  const std::string& dir() const { return dir_; }

  // Removes, under root, each state directory's cgroup that no running daemon holds, and the
  // cgroups inside it, where they are empty and older than min_age; never one with a process
  // or a cgroup inside. min_age spares a daemon of an earlier version, which holds no lock and
  // may not have started its first service yet. Returns the directories removed.
  static std::vector<std::string> remove_leftovers(const std::string& root,
                                                   std::chrono::seconds min_age);

 private:
  CgroupParent(std::string dir, int lock_fd) : dir_(std::move(dir)), lock_fd_(lock_fd) {}
  std::string dir_;
  int lock_fd_ = -1;
};

}  // namespace gpuvisor
