// The lifecycle of one service. This enum is the documentation (STYLE.md practice 4).
//
//                 ensure                probe ok
//     stopped ───────────► starting ─────────────► ready ◄──► busy
//        ▲                  │   │                    │
//        │ exited/killed    │   │ exit, timeout      │ exit, liveness failed
//        │                  │   ▼                    ▼
//     stopping ◄── stop ────┘  error ◄───────── (restart policy: starting again
//        ▲                       │                after backoff, or error at the limit)
//        └──── stop ─────────────┘
//
//     unknown: adopted after a daemon restart (or from a pid_file), not yet probed;
//              the first probe moves it to ready, or to error.
//
//     sleeping: ready ── evicted by its sleep hook ──► sleeping ── ensure: wake hook ──► starting
//               The process runs on and keeps its RAM; its VRAM is mostly freed (a residual
//               stays, measured once it settles). Stop and exit work as from ready.
#pragma once

#include <optional>
#include <string_view>

namespace gpuvisor {

enum class ServiceState {
  kStopped,   // no process; holds no VRAM, serves nothing
  kStarting,  // process spawned, not yet healthy; holds VRAM, serves nothing
  kReady,     // healthy; holds VRAM, serves traffic
  kBusy,      // healthy and working on requests; holds VRAM, must not be evicted lightly
  kStopping,  // asked to stop, process not yet gone; may still hold VRAM
  kError,     // failed (crash, start timeout, restart limit); may hold VRAM if a process is left
  kUnknown,   // adopted, not yet probed; assumed to hold VRAM
  kSleeping,  // process runs, VRAM released by its sleep hook but a residual; serves nothing
};

const char* to_string(ServiceState state);
std::optional<ServiceState> service_state_from_string(std::string_view text);

// Whether a service in this state may hold GPU memory (the planner counts it).
bool holds_vram(ServiceState state);
// Whether requests may be sent to it.
bool serves_traffic(ServiceState state);

}  // namespace gpuvisor
