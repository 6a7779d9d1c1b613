// SPDX-License-Identifier: Apache-2.0
// systemd's notify protocol (sd_notify(3)) without libsystemd: one datagram per message to the
// unix socket named by $NOTIFY_SOCKET. The daemon says READY=1 once it serves, STOPPING=1 when
// it begins to stop, and WATCHDOG=1 at half of $WATCHDOG_USEC for as long as its loop runs.
#pragma once

#include <functional>
#include <memory>
#include <string>

#include "core/clock.h"
#include "core/duration.h"
#include "core/result.h"

namespace gpuvisor {

// What the service manager asked for in the environment.
struct NotifyTarget {
  std::string socket;  // $NOTIFY_SOCKET: a path, or an abstract name written "@name"; empty: none
  Millis watchdog{0};  // $WATCHDOG_USEC; 0: no watchdog
};

// Reads NOTIFY_SOCKET, WATCHDOG_USEC and WATCHDOG_PID, then removes them from the environment
// so that services and workers do not inherit them (systemd would refuse, and log, messages
// from them). A watchdog meant for another PID is left out. Call it before any thread starts.
NotifyTarget take_notify_target();

// Sends `state` (e.g. "READY=1") as one datagram to socket.
Status send_notify(const std::string& socket, const std::string& state);

class SdNotifier {
 public:
  using Send = std::function<void(const std::string& state)>;

  // Messages go to send; watchdog is the interval within which a ping is due (0: none). Pings
  // come from a timer of clock (the daemon's loop), so they stop when the loop stalls.
  SdNotifier(Clock& clock, Millis watchdog, Send send);
  // To target's socket; with no socket every call does nothing. A failed send is logged once.
  static std::unique_ptr<SdNotifier> to(Clock& clock, const NotifyTarget& target);

  // READY=1, and the watchdog's pings from now on: one every watchdog / 2.
  void ready();
  // STOPPING=1. The pings go on while services stop, until this object goes.
  void stopping();

 private:
  void ping();

  Millis watchdog_;
  Send send_;
  std::unique_ptr<Timer> timer_;
};

}  // namespace gpuvisor
