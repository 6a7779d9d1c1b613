#include "core/service_state.h"

#include <array>
#include <utility>

namespace gpuvisor {

namespace {
constexpr std::array<std::pair<ServiceState, const char*>, 8> kNames{{
    {ServiceState::kStopped, "stopped"},
    {ServiceState::kStarting, "starting"},
    {ServiceState::kReady, "ready"},
    {ServiceState::kBusy, "busy"},
    {ServiceState::kStopping, "stopping"},
    {ServiceState::kError, "error"},
    {ServiceState::kUnknown, "unknown"},
    {ServiceState::kSleeping, "sleeping"},
}};
}  // namespace

const char* to_string(ServiceState state) {
  for (const auto& [s, name] : kNames) {
    if (s == state) return name;
  }
  return "unknown";
}

std::optional<ServiceState> service_state_from_string(std::string_view text) {
  for (const auto& [s, name] : kNames) {
    if (text == name) return s;
  }
  return std::nullopt;
}

bool holds_vram(ServiceState state) {
  return state != ServiceState::kStopped;
}

bool serves_traffic(ServiceState state) {
  return state == ServiceState::kReady || state == ServiceState::kBusy;
}

}  // namespace gpuvisor
