// The web dashboard (web/dashboard.html), embedded in the binary at build time: the daemon
// serves it at / with nothing to install or build at run time.
#pragma once

namespace gpuvisor {

extern const char* const kDashboardHtml;

}  // namespace gpuvisor
