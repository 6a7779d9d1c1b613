// An SSE stream as `gpuvisor events` and `jobs watch` read it (SseParser, src/cli): the messages
// must not depend on how the stream is cut into reads. The first byte picks the cut.
#include <cstdlib>
#include <string>
#include <vector>

#include "cli/http_client.h"
#include "input.h"

namespace {

std::vector<gpuvisor::SseMessage> read_all(std::string_view stream, size_t piece) {
  std::vector<gpuvisor::SseMessage> got;
  gpuvisor::SseParser parser;
  const auto keep = [&](const gpuvisor::SseMessage& m) {
    got.push_back(m);
    return true;
  };
  for (size_t at = 0; at < stream.size(); at += piece) {
    if (!parser.feed(stream.substr(at, piece), keep)) std::abort();
  }
  return got;
}

bool same(const std::vector<gpuvisor::SseMessage>& a, const std::vector<gpuvisor::SseMessage>& b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    if (a[i].id != b[i].id || a[i].event != b[i].event || a[i].data != b[i].data) return false;
  }
  return true;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const auto stream = gpuvisor::fuzz::text(data + 1, size - 1);
  const size_t piece = 1 + data[0];
  const auto whole = read_all(stream, stream.size() + 1);
  if (!same(whole, read_all(stream, piece))) std::abort();

  // A reader that stops after the first message gets exactly that one.
  gpuvisor::SseParser parser;
  size_t calls = 0;
  (void)parser.feed(stream, [&](const gpuvisor::SseMessage&) { return ++calls, false; });
  if (calls > 1 || (calls == 1) != !whole.empty()) std::abort();
  return 0;
}
