// A busy hold on a ready service: while one is held the service is busy, so no plan evicts it
// and idle_ttl does not run. Move-only; it lets go when released or destroyed. A hold whose
// instance has since failed or been stopped is inactive, and letting it go changes nothing.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

namespace gpuvisor {

class Supervisor;

class Hold {
 public:
  Hold() = default;
  ~Hold() { release(); }
  Hold(Hold&& other) noexcept { *this = std::move(other); }
  Hold& operator=(Hold&& other) noexcept;
  Hold(const Hold&) = delete;
  Hold& operator=(const Hold&) = delete;

  // Still holding the service's current instance busy.
  bool active() const;
  void release();
  const std::string& service() const { return service_; }

 private:
  friend class Supervisor;
  Hold(Supervisor& supervisor, std::weak_ptr<bool> alive, std::string service, uint64_t token)
      : supervisor_(&supervisor),
        alive_(std::move(alive)),
        service_(std::move(service)),
        token_(token) {}

  Supervisor* supervisor_ = nullptr;  // null: holds nothing
  std::weak_ptr<bool> alive_;         // the supervisor's: a hold may outlive it at exit
  std::string service_;
  uint64_t token_ = 0;
};

}  // namespace gpuvisor
