// What gpuvisor sends to and reads from the Engine API, as pure functions (unit-tested without
// an engine): the create body for a service, and the checks on what the engine answers.
#pragma once

#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "core/result.h"
#include "core/service_spec.h"

namespace gpuvisor {

// The label that marks a container as created by gpuvisor for a service: only such a container
// is ever removed or replaced by gpuvisor.
inline constexpr const char* kServiceLabel = "io.gpuvisor.service";

// The container gpuvisor creates for spec (docker.image set).
std::string owned_container_name(const ServiceSpec& spec);

// POST /containers/create body. env: the spec's env plus what the daemon adds.
nlohmann::json container_create_body(const ServiceSpec& spec, const std::vector<unsigned>& gpus,
                                     const std::vector<std::pair<std::string, std::string>>& env);

// The fields of GET /containers/{id}/json that gpuvisor uses, checked.
struct ContainerState {
  std::string id;
  bool running = false;
  pid_t pid = 0;
  int exit_code = 0;
  bool oom_killed = false;
  bool tty = false;
  std::string service_label;  // kServiceLabel's value, or empty
};
Result<ContainerState> parse_container_inspect(const std::string& body);

// One event of GET /events: its container id, action and time in ns.
struct ContainerEvent {
  std::string id;
  std::string action;  // die, oom, health_status: healthy, ...
  int64_t time_ns = 0;
  int exit_code = 0;  // for die
};
std::optional<ContainerEvent> parse_container_event(const std::string& line);

// Splits a non-TTY log stream (8-byte frame headers) into its payload; keeps partial frames.
class LogDemux {
 public:
  explicit LogDemux(bool tty) : tty_(tty) {}
  std::string feed(std::string_view data);

 private:
  bool tty_;
  std::string pending_;
};

}  // namespace gpuvisor
