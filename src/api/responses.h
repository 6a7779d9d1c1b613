// JSON replies, shared by the route handlers.
#pragma once

#include <boost/asio/awaitable.hpp>
#include <nlohmann/json.hpp>

#include "api/http_server.h"
#include "core/result.h"

namespace gpuvisor {

// request: its version and keep-alive decide the response's.
HttpResponse json_response(const RequestHead& request, boost::beast::http::status status,
                           const nlohmann::json& body);
// 200 with body.
HttpResponse ok(const RequestHead& request, const nlohmann::json& body);
// The error's HTTP status and {"error": {"code", "message", ...}}.
HttpResponse error_response(const RequestHead& request, const Error& error);

// Writes response; true when the connection may take the next request (written, kept alive).
boost::asio::awaitable<bool> reply(boost::beast::tcp_stream& stream, HttpResponse response);

}  // namespace gpuvisor
