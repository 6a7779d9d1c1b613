// SPDX-License-Identifier: Apache-2.0
#include "app/sd_notify.h"

#include <spdlog/spdlog.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstddef>
#include <cstdlib>
#include <cstring>

namespace gpuvisor {

namespace {

std::string take_env(const char* name) {
  const char* value = std::getenv(name);
  std::string out = value == nullptr ? "" : value;
  unsetenv(name);
  return out;
}

}  // namespace

NotifyTarget take_notify_target() {
  NotifyTarget target;
  target.socket = take_env("NOTIFY_SOCKET");
  const std::string usec = take_env("WATCHDOG_USEC");
  const std::string pid = take_env("WATCHDOG_PID");
  if (!pid.empty() && pid != std::to_string(getpid())) return target;  // another process's
  char* end = nullptr;
  const unsigned long long value = std::strtoull(usec.c_str(), &end, 10);
  const bool digits = !usec.empty() && usec[0] >= '0' && usec[0] <= '9';  // strtoull takes "-1"
  if (digits && end != nullptr && *end == '\0' && value > 0) {
    target.watchdog = Millis(std::max<unsigned long long>(value / 1000, 1));
  }
  return target;
}

Status send_notify(const std::string& socket, const std::string& state) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (socket.empty() || socket.size() >= sizeof addr.sun_path ||
      (socket[0] != '/' && socket[0] != '@')) {
    return make_error(ErrorCode::kBadRequest, "NOTIFY_SOCKET '" + socket + "' is not usable");
  }
  std::memcpy(addr.sun_path, socket.data(), socket.size());
  // An abstract name has no terminating NUL: its length is all there is of it.
  socklen_t length = offsetof(sockaddr_un, sun_path) + socket.size();
  if (socket[0] == '@') {
    addr.sun_path[0] = '\0';
  } else {
    ++length;
  }
  const int fd = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return make_error(ErrorCode::kFailed, std::string("socket: ") + std::strerror(errno));
  const ssize_t sent = sendto(fd, state.data(), state.size(), MSG_NOSIGNAL,
                              reinterpret_cast<const sockaddr*>(&addr), length);
  const int err = errno;
  close(fd);
  if (sent < 0) {
    return make_error(ErrorCode::kFailed, "NOTIFY_SOCKET " + socket + ": " + std::strerror(err));
  }
  return {};
}

SdNotifier::SdNotifier(Clock& clock, Millis watchdog, Send send)
    : watchdog_(watchdog), send_(std::move(send)), timer_(clock.make_timer()) {}

std::unique_ptr<SdNotifier> SdNotifier::to(Clock& clock, const NotifyTarget& target) {
  if (target.socket.empty()) return std::make_unique<SdNotifier>(clock, Millis(0), nullptr);
  return std::make_unique<SdNotifier>(
      clock, target.watchdog,
      [socket = target.socket, warned = false](const std::string& state) mutable {
        // Said once, not at every ping; nothing else to do about it: the service manager acts on
        // what it does not hear.
        if (auto sent = send_notify(socket, state); !sent && !warned) {
          spdlog::warn("sd_notify {}: {}", state, sent.error().message);
          warned = true;
        }
      });
}

void SdNotifier::ready() {
  if (!send_) return;
  send_("READY=1");
  if (watchdog_.count() > 0) ping();
}

void SdNotifier::stopping() {
  if (send_) send_("STOPPING=1");
}

void SdNotifier::ping() {
  send_("WATCHDOG=1");
  timer_->arm_after(std::max(watchdog_ / 2, Millis(1)), [this] { ping(); });
}

}  // namespace gpuvisor
