// The state directory: what must survive a daemon crash. Instance records (so a restarted daemon
// adopts what the last one started, and starts nothing twice) and the services' log files.
//
//   <state_dir>/run/<service>.json   one InstanceRecord, written before a start is acknowledged
//   <state_dir>/logs/<service>.log   the service's stdout and stderr
//   <state_dir>/restarts.json        restarts waiting out their backoff, so that a daemon killed
//                                    meanwhile does not leave the service stopped
//   <state_dir>/vram.json            the most VRAM each service was seen holding
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "core/result.h"
#include "runtime/runtime.h"

namespace gpuvisor {

class StateStore {
 public:
  // Creates the directory tree (mode 0700: records name PIDs and cgroups).
  static Result<StateStore> open(const std::string& dir);

  const std::string& dir() const { return dir_; }
  std::string log_path(const std::string& service) const;

  // Written to a temp file, fsynced, then renamed: a crash leaves the old record or the new.
  Status save(const InstanceRecord& record);
  void remove(const std::string& service);

  struct Loaded {
    std::vector<InstanceRecord> records;
    std::vector<std::string> problems;  // unreadable or corrupt files, each moved aside
  };
  Loaded load_all() const;

  // The most VRAM each service was seen holding (vram.json), so a plan can trust a
  // measurement over a config estimate across daemon restarts. Unreadable: empty.
  Status save_measured_vram(const std::map<std::string, uint64_t>& bytes);
  std::map<std::string, uint64_t> load_measured_vram() const;

  struct PendingRestart {
    int restarts = 0;         // automatic restarts spent, counting this one
    int64_t due_unix_ms = 0;  // when the backoff ends
  };
  Status save_pending_restart(const std::string& service, const PendingRestart& restart);
  Status forget_pending_restart(const std::string& service);
  // Unreadable: empty, with a warning (the services then wait for an ensure, as before).
  std::map<std::string, PendingRestart> load_pending_restarts() const;

 private:
  explicit StateStore(std::string dir) : dir_(std::move(dir)) {}
  std::string dir_;
};

}  // namespace gpuvisor
