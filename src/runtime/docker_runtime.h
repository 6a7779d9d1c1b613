// Runtime for Docker containers, through the Engine API (docker_client.h). A service names an
// existing container, or an image gpuvisor creates its own container from (labelled, so only
// that one is ever replaced or removed). Exits arrive on one shared events stream, followed
// with since= across reconnects; a container's processes are found through its PID namespace.
#pragma once

#include <boost/asio/any_io_executor.hpp>
#include <memory>
#include <string>

#include "runtime/runtime.h"

namespace gpuvisor {

class DockerEngine;

class DockerRuntime : public Runtime {
 public:
  // log_dir: where services' logs are (state_dir/logs), so that a container adopted after a
  // daemon restart has its output followed again.
  DockerRuntime(boost::asio::any_io_executor executor, std::string socket_path,
                std::string log_dir = "");
  ~DockerRuntime() override;

  // Creates (with docker.image) and starts the container, or attaches to it when it already
  // runs. Returns at once; the engine's answers arrive on the executor, and a failure (missing
  // container or image, engine down) is reported as the instance's exit, with the reason.
  Result<std::shared_ptr<Instance>> start(const ServiceSpec& spec, const LaunchOptions& options,
                                          ExitCallback on_exit) override;
  // Attaches to the recorded container; one that no longer runs is reported as exited.
  Result<std::shared_ptr<Instance>> adopt(const InstanceRecord& record, const ServiceSpec* spec,
                                          ExitCallback on_exit) override;
  void discard(const InstanceRecord& record) override;
  // start() already attaches to a running container, so there is nothing else to adopt.
  Result<std::shared_ptr<Instance>> adopt_existing(const ServiceSpec& spec,
                                                   ExitCallback on_exit) override;

 private:
  std::shared_ptr<DockerEngine> engine_;
  std::string log_dir_;
};

}  // namespace gpuvisor
