#include "api/route_table.h"

#include <algorithm>
#include <optional>
#include <stdexcept>

#include "api/responses.h"

namespace gpuvisor {

namespace http = boost::beast::http;

namespace {

// How well pattern fits path, for choosing among patterns that match it: a literal scores
// above a {name} at the first place they differ. nullopt: it does not match.
template <typename Segments>
std::optional<std::vector<bool>> fit(const Segments& pattern,
                                     const std::vector<std::string>& path) {
  if (pattern.size() != path.size()) return std::nullopt;
  std::vector<bool> literal(pattern.size());
  for (size_t i = 0; i < pattern.size(); ++i) {
    if (!pattern[i].param && pattern[i].text != path[i]) return std::nullopt;
    literal[i] = !pattern[i].param;
  }
  return literal;
}

std::string methods_text(const std::vector<http::verb>& methods) {
  std::string out;
  for (const auto m : methods) {
    if (!out.empty()) out += ", ";
    out += std::string(http::to_string(m));
  }
  return out;
}

}  // namespace

size_t RouteTable::add(RouteSpec spec) {
  if (spec.pattern.empty() || spec.pattern.front() != '/' || spec.methods.empty()) {
    throw std::logic_error("route '" + spec.pattern + "': needs a path from '/' and a method");
  }
  Route route;
  for (auto& text : split_path(spec.pattern)) {
    const bool param = text.size() > 2 && text.front() == '{' && text.back() == '}';
    if (!param && text.find_first_of("{}") != std::string::npos) {
      throw std::logic_error("route '" + spec.pattern + "': malformed segment '" + text + "'");
    }
    route.segments.push_back({param ? text.substr(1, text.size() - 2) : std::move(text), param});
  }
  for (const auto& other : routes_) {
    const bool same_path =
        other.segments.size() == route.segments.size() &&
        std::equal(other.segments.begin(), other.segments.end(), route.segments.begin(),
                   [](const Segment& a, const Segment& b) {
                     return a.param == b.param && (a.param || a.text == b.text);
                   });
    for (const auto m : spec.methods) {
      if (same_path && std::count(other.spec.methods.begin(), other.spec.methods.end(), m) != 0) {
        throw std::logic_error("route " + std::string(http::to_string(m)) + " " + spec.pattern +
                               " is already taken by " + other.spec.pattern);
      }
    }
  }
  route.spec = std::move(spec);
  routes_.push_back(std::move(route));
  return routes_.size() - 1;
}

std::variant<RouteMatch, RouteMiss> RouteTable::match(const HttpRequest& request) const {
  const std::string_view target = request.target();
  const auto q = target.find('?');
  const auto segments = split_path(target.substr(0, q));
  // The routes of the best-fitting pattern: one path, one route per set of methods.
  std::vector<size_t> best;
  std::vector<bool> best_fit;
  for (size_t i = 0; i < routes_.size(); ++i) {
    const auto f = fit(routes_[i].segments, segments);
    if (!f) continue;
    if (best.empty() || *f > best_fit) {
      best = {i};
      best_fit = *f;
    } else if (*f == best_fit) {
      best.push_back(i);
    }
  }
  if (best.empty()) {
    return RouteMiss{
        make_error(ErrorCode::kNotFound,
                   "no route " + std::string(request.method_string()) + " " + std::string(target)),
        ""};
  }
  const auto takes = [&](size_t i) {
    const auto& methods = routes_[i].spec.methods;
    return std::count(methods.begin(), methods.end(), request.method()) != 0;
  };
  const auto it = std::find_if(best.begin(), best.end(), takes);
  if (it == best.end()) {
    std::vector<http::verb> methods;
    for (const size_t i : best) {
      const auto& more = routes_[i].spec.methods;
      methods.insert(methods.end(), more.begin(), more.end());
    }
    const auto allow = methods_text(methods);
    return RouteMiss{make_error(ErrorCode::kMethodNotAllowed,
                                std::string(target.substr(0, q)) + " takes " + allow),
                     allow};
  }
  const Route& route = routes_[*it];
  auto params = parse_params(q == std::string_view::npos ? "" : target.substr(q + 1),
                             route.spec.body_params ? std::string_view(request.body()) : "",
                             route.spec.params);
  if (!params) return RouteMiss{params.error(), ""};
  RouteMatch match;
  match.route = *it;
  for (size_t i = 0; i < segments.size(); ++i) {
    if (route.segments[i].param) match.path[route.segments[i].text] = segments[i];
  }
  match.parts = RequestParts{segments, std::move(*params)};
  return match;
}

HttpResponse miss_response(const RequestHead& request, const RouteMiss& miss) {
  HttpResponse response = error_response(request, miss.error);
  if (!miss.allow.empty()) response.set(http::field::allow, miss.allow);
  return response;
}

}  // namespace gpuvisor
