// How the daemon's values look on the wire. One place, so the API, the events and the docs agree.
#pragma once

#include <boost/beast/http/status.hpp>
#include <nlohmann/json.hpp>

#include "core/result.h"
#include "supervisor/supervisor.h"

namespace gpuvisor {

nlohmann::json to_json(const ServiceView& view);
nlohmann::json error_json(const Error& error);
boost::beast::http::status http_status(ErrorCode code);

}  // namespace gpuvisor
