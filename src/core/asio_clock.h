// The real Clock: std::chrono::steady_clock for now(), Asio timers on one executor for waits.
#pragma once

#include <boost/asio/any_io_executor.hpp>

#include "core/clock.h"

namespace gpuvisor {

class AsioClock final : public Clock {
 public:
  // Timers' callbacks run on executor (the daemon's main one).
  explicit AsioClock(boost::asio::any_io_executor executor) : executor_(std::move(executor)) {}
  SteadyTime now() const override { return std::chrono::steady_clock::now(); }
  int64_t unix_ms() const override { return unix_ms_now(); }
  std::unique_ptr<Timer> make_timer() override;

 private:
  boost::asio::any_io_executor executor_;
};

}  // namespace gpuvisor
