// An API request as the routes take it apart: the target (first line of the input) and the body
// (the rest) through parse_request and the typed parameter readers, the JSON bodies of a job
// submission and of a plugin config, the bodies apps send (outside workers, leases, events),
// and the error reply each failure becomes.
#include <cstdlib>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "api/app_bodies.h"
#include "api/request_parts.h"
#include "input.h"

namespace {

using gpuvisor::Error;

// The parameter lists of the route table (Api::add_routes), and none: an unknown name is an
// error naming it.
const std::vector<std::vector<std::string>> kAllowed = {
    {},
    {"timeout"},
    {"force"},
    {"since", "types"},
    {"n", "follow"},
    {"timeout", "force", "n", "follow", "since"},
    {"category", "mode", "location", "configured"},
    {"state", "plugin", "limit"},
};

// Every refusal says what is wrong. (The reply it becomes replaces what is not UTF-8, see
// json_response, so the message's bytes are not checked here.)
void reply_with(const Error& error) {
  if (error.message.empty()) std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const auto& allowed = kAllowed[data[0] % kAllowed.size()];
  const auto [target, body] = gpuvisor::fuzz::split(gpuvisor::fuzz::text(data + 1, size - 1), "\n");

  auto parts = gpuvisor::parse_request(target, body, allowed);
  if (!parts) {
    reply_with(parts.error());
  } else {
    for (const auto& name : allowed) {
      if (auto b = gpuvisor::bool_param(*parts, name, false); !b) reply_with(b.error());
      if (auto d = gpuvisor::duration_param(*parts, name, gpuvisor::Millis(0)); !d)
        reply_with(d.error());
      if (auto n = gpuvisor::int_param(*parts, name, 100, 1, 10'000); !n) reply_with(n.error());
    }
  }

  // What apps send: each body is accepted whole or refused with a message, never half-read.
  const std::string app_body(body);
  if (auto r = gpuvisor::parse_registration(app_body); !r) reply_with(r.error());
  if (auto u = gpuvisor::parse_worker_update(app_body); !u) reply_with(u.error());
  if (auto l = gpuvisor::parse_lease(app_body); !l) {
    reply_with(l.error());
  } else if (l->bytes == 0 || (l->ttl && l->ttl->count() <= 0)) {
    std::abort();  // a lease of nothing, or one already over, must have been refused
  }
  if (auto e = gpuvisor::parse_app_event(app_body); !e) reply_with(e.error());
  if (auto p = gpuvisor::parse_pid(std::string(target)); !p) {
    reply_with(p.error());
  } else if (*p <= 0) {
    std::abort();
  }

  // POST .../jobs: any JSON is a job's input, stored as its dump. PUT .../config: an object.
  const auto input = nlohmann::json::parse(body, nullptr, false);
  if (!input.is_discarded()) {
    (void)input.dump();
    if (input.is_object()) (void)input.dump(2);
  }
  return 0;
}
