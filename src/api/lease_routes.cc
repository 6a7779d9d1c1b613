// VRAM leases over HTTP: reserve memory before allocating it, list what is reserved, let go.
#include <charconv>

#include "api/app_bodies.h"
#include "api/responses.h"
#include "api/routes.h"

namespace gpuvisor {

namespace http = boost::beast::http;

HttpResponse Api::leases(const Call& call) {
  nlohmann::json list = nlohmann::json::array();
  for (const auto& lease : leases_.all()) list.push_back(lease.to_json());
  return ok(call.request, {{"leases", list}});
}

HttpResponse Api::grant_lease(const Call& call) {
  auto request = parse_lease(call.request.body());
  if (!request) return error_response(call.request, request.error());
  auto granted = leases_.grant(*request, [this](uint64_t bytes, std::optional<unsigned> gpu) {
    return supervisor_.fit_reservation(bytes, gpu);
  });
  if (!granted) return error_response(call.request, granted.error());
  return json_response(call.request, http::status::created, granted->to_json());
}

HttpResponse Api::release_lease(const Call& call) {
  const std::string& text = call.arg("id");
  uint64_t id = 0;
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), id);
  if (ec != std::errc() || end != text.data() + text.size() || id == 0) {
    return error_response(call.request, make_error(ErrorCode::kBadRequest,
                                                   "'" + text + "' is not a lease id (1, 2, ...)"));
  }
  auto released = leases_.release(id);
  if (!released) return error_response(call.request, released.error());
  return ok(call.request, released->to_json());
}

}  // namespace gpuvisor
