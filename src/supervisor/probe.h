// Health checks: one attempt at a time, bounded by a timeout, never blocking the strand.
#pragma once

#include <boost/asio/any_io_executor.hpp>
#include <functional>
#include <string>

#include "core/duration.h"
#include "core/service_spec.h"

namespace gpuvisor {

struct ProbeResult {
  bool ok = false;
  std::string detail;  // why it failed ("connection refused", "HTTP 503", "timed out after 2s")
  // Nothing listens yet: such a check is a few microseconds of kernel work and costs the
  // service nothing, so readiness may repeat it much more often than a real request.
  bool refused = false;
};

class Prober {
 public:
  virtual ~Prober() = default;
  // Checks once; done runs on the executor. A HealthSpec with no check succeeds at once.
  virtual void check(const HealthSpec& health, Millis timeout,
                     std::function<void(ProbeResult)> done) = 0;
};

// HTTP GET (2xx/3xx), TCP connect, or exec (exit 0), over Boost.Asio.
class AsioProber : public Prober {
 public:
  explicit AsioProber(boost::asio::any_io_executor executor) : executor_(std::move(executor)) {}
  void check(const HealthSpec& health, Millis timeout,
             std::function<void(ProbeResult)> done) override;

 private:
  boost::asio::any_io_executor executor_;
};

}  // namespace gpuvisor
