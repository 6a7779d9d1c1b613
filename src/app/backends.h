// Every runtime backend the daemon has, built from the config, behind the one router the
// supervisor uses.
#pragma once

#include <boost/asio/any_io_executor.hpp>
#include <string>

#include "core/service_spec.h"
#include "events/event_bus.h"
#include "runtime/docker_runtime.h"
#include "runtime/external_runtime.h"
#include "runtime/process_runtime.h"
#include "runtime/remote_runtime.h"
#include "runtime/runtime_router.h"

namespace gpuvisor {

struct Backends {
  Backends(boost::asio::any_io_executor executor, const Config& config,
           const std::string& cgroup_parent, const std::string& docker_socket,
           const std::string& state_dir, EventBus& events)
      : processes(executor, cgroup_parent, config.daemon.conda),
        containers(executor, docker_socket, state_dir + "/logs"),
        external(executor),
        remote(executor, state_dir + "/remote.json",
               [&events](const std::string& type, nlohmann::json data) {
                 events.publish(type, std::move(data));
               }) {
    router.add(RuntimeKind::kProcess, processes);
    router.add(RuntimeKind::kDocker, containers);
    router.add(RuntimeKind::kExternal, external);
    router.add(RuntimeKind::kRemote, remote);
  }

  ProcessRuntime processes;
  DockerRuntime containers;
  ExternalRuntime external;
  RemoteRuntime remote;
  RuntimeRouter router;
};

}  // namespace gpuvisor
