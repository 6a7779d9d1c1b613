// Runtime for servers someone else runs (an Ollama, a vLLM under systemd). gpuvisor never starts
// or signals them: "start" runs the wake hook (if any), "stop" runs the sleep hook, which frees
// the server's VRAM while it keeps running. Its processes (found by PID file or listening port)
// count as the service's, for VRAM attribution.
#pragma once

#include <boost/asio/any_io_executor.hpp>

#include "runtime/runtime.h"

namespace gpuvisor {

class ExternalRuntime : public Runtime {
 public:
  explicit ExternalRuntime(boost::asio::any_io_executor executor)
      : executor_(std::move(executor)) {}

  Result<std::shared_ptr<Instance>> start(const ServiceSpec& spec, const LaunchOptions& options,
                                          ExitCallback on_exit) override;
  // Attaches again after a daemon restart; nothing is run.
  Result<std::shared_ptr<Instance>> adopt(const InstanceRecord& record, const ServiceSpec* spec,
                                          ExitCallback on_exit) override;
  void discard(const InstanceRecord&) override {}
  Result<std::shared_ptr<Instance>> adopt_existing(const ServiceSpec& spec,
                                                   ExitCallback on_exit) override;

 private:
  boost::asio::any_io_executor executor_;
};

}  // namespace gpuvisor
