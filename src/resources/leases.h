// VRAM leases: memory reserved before anyone allocates it (a notebook about to load a model), so
// that no placement hands it to a service in the meantime. A lease is granted only where the
// memory is free now, without evicting anything; the planner then counts it as used (less what
// its PID already holds, so nothing is counted twice) and names it in refusals. It ends when
// released, when its ttl runs out (a Clock timer), or when its PID exits (a pidfd). Leases are
// kept in the state directory: a daemon that restarts takes back those whose time is not up
// and whose PID still runs with the same start time.
#pragma once

#include <sys/types.h>

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "core/clock.h"
#include "core/ownership.h"
#include "core/result.h"
#include "events/event_bus.h"
#include "runtime/pidfd.h"

namespace gpuvisor {

struct LeaseRequest {
  uint64_t bytes = 0;
  std::optional<unsigned> gpu{};
  std::optional<Millis> ttl{};
  std::optional<pid_t> pid{};
  std::string holder{};  // who it is for, as people read it ("notebook")
};

struct Lease {
  uint64_t id = 0;
  uint64_t bytes = 0;
  unsigned gpu = 0;
  std::optional<pid_t> pid;
  std::string holder;
  int64_t created_unix_ms = 0;
  int64_t expires_unix_ms = 0;  // 0: until released
  uint64_t pid_start_time = 0;  // proves pid is still the same process after a daemon restart

  nlohmann::json to_json() const;
};

class Leases {
 public:
  // Where the bytes fit now without evicting anything (the GPU), or why not (Conflict).
  using Fit = std::function<Result<unsigned>(uint64_t bytes, std::optional<unsigned> gpu)>;

  // state_file: where leases are kept (empty: nowhere).
  Leases(boost::asio::any_io_executor executor, Clock& clock, EventBus& events,
         std::string state_file = "");
  ~Leases();
  Leases(const Leases&) = delete;
  Leases& operator=(const Leases&) = delete;

  // NotFound for a PID that is not running; the fit's error when it does not fit.
  Result<Lease> grant(const LeaseRequest& request, const Fit& fit);
  // NotFound for an unknown id.
  Result<Lease> release(uint64_t id);
  std::vector<Lease> all() const;
  // Takes back the leases a previous daemon granted that still hold; returns how many.
  size_t restore();
  // Each lease as a holder of the ownership snapshot, with its PID's tree.
  void add_to(Ownership& owners) const;

 private:
  struct Held {
    Lease lease;
    std::unique_ptr<Timer> ttl;
    std::unique_ptr<boost::asio::posix::stream_descriptor> pidfd;
  };
  void end(uint64_t id, const char* reason);
  // Holds lease (its ttl armed, its PID watched) under its id.
  void keep(const Lease& lease, Pidfd pidfd);
  void save() const;

  boost::asio::any_io_executor executor_;
  Clock& clock_;
  EventBus& events_;
  std::string state_file_;
  std::map<uint64_t, Held> leases_;
  uint64_t next_id_ = 1;
};

}  // namespace gpuvisor
