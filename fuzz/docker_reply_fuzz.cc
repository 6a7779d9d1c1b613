// What the Docker engine sends: a container inspect body, the event stream cut into lines as
// DockerEngine cuts it, and a log stream in 8-byte frames fed in pieces. The first byte picks the
// TTY mode of the log stream and where it is cut.
#include <cstdlib>
#include <string>

#include "input.h"
#include "runtime/docker_body.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const uint8_t mode = data[0];
  const auto in = gpuvisor::fuzz::text(data + 1, size - 1);
  const std::string body(in);

  (void)gpuvisor::parse_container_inspect(body);

  std::string partial(in);
  for (size_t nl; (nl = partial.find('\n')) != std::string::npos;) {
    const std::string line = partial.substr(0, nl);
    partial.erase(0, nl + 1);
    if (const auto event = gpuvisor::parse_container_event(line); event) {
      if (event->id.empty() || event->action.empty()) std::abort();
    }
  }

  // Payloads only ever come out whole and in order, however the stream is cut.
  const bool tty = (mode & 1) != 0;
  const size_t piece = 1 + (mode >> 1);
  gpuvisor::LogDemux demux(tty);
  gpuvisor::LogDemux whole(tty);
  std::string out;
  for (size_t at = 0; at < in.size(); at += piece) out += demux.feed(in.substr(at, piece));
  if (out != whole.feed(in)) std::abort();
  return 0;
}
