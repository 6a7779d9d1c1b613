#include "api/responses.h"

#include "api/json_views.h"
#include "core/json_text.h"

namespace gpuvisor {

namespace http = boost::beast::http;

HttpResponse json_response(const RequestHead& request, http::status status,
                           const nlohmann::json& body) {
  HttpResponse response{status, request.version()};
  response.set(http::field::content_type, "application/json");
  response.set(http::field::server, "gpuvisor");
  response.keep_alive(keep_alive(request));
  response.body() = json_text(body) + "\n";
  return response;
}

HttpResponse ok(const RequestHead& request, const nlohmann::json& body) {
  return json_response(request, http::status::ok, body);
}

HttpResponse error_response(const RequestHead& request, const Error& error) {
  return json_response(request, http_status(error.code), error_json(error));
}

boost::asio::awaitable<bool> reply(boost::beast::tcp_stream& stream, HttpResponse response) {
  const bool keep = response.keep_alive();
  const bool written = co_await write_response(stream, response);
  co_return written&& keep;
}

}  // namespace gpuvisor
