#include "api/responses.h"

#include "api/json_views.h"

namespace gpuvisor {

namespace http = boost::beast::http;

HttpResponse json_response(const HttpRequest& request, http::status status,
                           const nlohmann::json& body) {
  HttpResponse response{status, request.version()};
  response.set(http::field::content_type, "application/json");
  response.set(http::field::server, "gpuvisor");
  response.keep_alive(request.keep_alive());
  // Text from outside (a request's percent-decoded target, a service's log tail) need not be
  // UTF-8; dump() would throw on it and the client would get no answer at all.
  response.body() = body.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n";
  return response;
}

HttpResponse error_response(const HttpRequest& request, const Error& error) {
  return json_response(request, http_status(error.code), error_json(error));
}

}  // namespace gpuvisor
