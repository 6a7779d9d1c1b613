// gpuvisor.yaml as the daemon reads it: load_config_string promises never to throw and to
// report every problem as "ORIGIN:LINE:COL: ..." lines, whatever the bytes.
#include <cstdio>
#include <cstdlib>

#include "config/config_loader.h"
#include "input.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string origin = "<fuzz>";
  const auto config =
      gpuvisor::load_config_string(std::string(gpuvisor::fuzz::text(data, size)), origin);
  if (!config) {
    const std::string& message = config.error().message;
    // The documented shape of a failure: lines, each "ORIGIN:...", none empty.
    bool located = !message.empty();
    for (size_t at = 0; located && at != std::string::npos;) {
      located = message.compare(at, origin.size() + 1, origin + ":") == 0;
      at = message.find('\n', at);
      if (at != std::string::npos) ++at;
    }
    if (!located) {
      std::fprintf(stderr, "malformed error message: [%s]\n", message.c_str());
      std::abort();
    }
    return 0;
  }
  if (config->path != origin) std::abort();
  for (const auto& service : config->services) {
    if (service.origin.rfind(origin + ":", 0) != 0) std::abort();
  }
  return 0;
}
