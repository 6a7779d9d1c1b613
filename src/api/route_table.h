// Which route takes a request: a fixed table of path patterns with named parameters
// ("/api/v1/services/{name}/ensure"), the methods each takes and the parameters each reads.
// Every "no route" (404), "wrong method" (405, with its Allow header) and "unknown parameter"
// (400) of the API is decided here, so they read the same on every route.
#pragma once

#include <boost/beast/http/verb.hpp>
#include <map>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "api/http_server.h"
#include "api/request_parts.h"
#include "core/result.h"

namespace gpuvisor {

struct RouteSpec {
  // The methods it takes; a 405's Allow header lists them in this order.
  std::vector<boost::beast::http::verb> methods;
  // Literal segments and {names}, each {name} standing for any one non-empty segment. Empty
  // segments of a request's path are skipped, so "/a//b/" is "/a/b".
  std::string pattern;
  // The parameters it reads, from the query string (and the body, with body_params); any other
  // is a 400 naming it and these.
  std::vector<std::string> params;
  // A JSON object body holds parameters too (docs/api.md, "Parameters"). Without it, the body
  // is the handler's own (a job's input, a plugin's config) or ignored.
  bool body_params = false;
};

// The route that takes a request, and what the request says to it.
struct RouteMatch {
  size_t route = 0;  // as add() numbered it
  // {name} -> the segment it stood for, as sent (not percent-decoded: "..%2Fx" stays itself, so
  // an id check sees the escape).
  std::map<std::string, std::string> path;
  RequestParts parts;  // the path's segments and the parameters, checked against the spec's

  // The segment for {name}; the pattern must have it.
  const std::string& arg(const std::string& name) const { return path.at(name); }
};

// Why no route takes a request.
struct RouteMiss {
  Error error;        // not_found, method_not_allowed or bad_request
  std::string allow;  // with method_not_allowed: the methods the path takes, "GET, PUT"
};

class RouteTable {
 public:
  // Numbers the route (0, 1, ...). Throws std::logic_error for a malformed pattern or one that
  // takes a method another route with the same path already takes: the table is the program's
  // own, so that is a bug, found at start-up.
  size_t add(RouteSpec spec);

  // Where several patterns match a path, the one with a literal where the others have a {name}
  // (compared left to right) is the path's: "/plugins/stats" before "/plugins/{id}". Each route
  // of that pattern is tried for the method; with none, the miss is a 405 listing the methods
  // of all of them. Query and body are read only for the route that matches.
  std::variant<RouteMatch, RouteMiss> match(const HttpRequest& request) const;

 private:
  struct Segment {
    std::string text;  // the literal, or the parameter's name
    bool param = false;
  };
  struct Route {
    RouteSpec spec;
    std::vector<Segment> segments;
  };
  std::vector<Route> routes_;
};

// A miss as the client gets it: the error's JSON, and Allow on a 405.
HttpResponse miss_response(const RequestHead& request, const RouteMiss& miss);

}  // namespace gpuvisor
