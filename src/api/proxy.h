// The on-demand reverse proxy: /upstream/{service}/... goes to the service's proxy.url, and the
// OpenAI-compatible /v1/... paths go to the service that lists the body's "model". A service
// that is not running is ensured first (evicting per the planner) and the request waits, up to
// proxy.wait, then gets 503 with Retry-After; requests for one service share its start. While
// requests run the service is busy, so no plan evicts it. Responses stream through as the
// service writes them (SSE, chunked), over kept-alive upstream connections; a client that goes
// away closes its upstream request.
#pragma once

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http/buffer_body.hpp>
#include <boost/beast/http/parser.hpp>
#include <deque>
#include <map>
#include <memory>
#include <string>
#include <string_view>

#include "api/http_server.h"
#include "api/upstream_pool.h"
#include "core/url.h"
#include "supervisor/supervisor.h"

namespace gpuvisor {

// What the proxy counted, per service, for /metrics.
struct ProxyStats {
  uint64_t requests = 0;
  std::map<unsigned, uint64_t> responses;  // by status code
  uint64_t errors = 0;                     // answered by gpuvisor itself (404, 502, 503)
  uint64_t client_gone = 0;                // the client left before the response ended
  // Time to the response head, in seconds: cumulative counts per upper bound, then the total.
  static constexpr double kBuckets[] = {0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                                        1,     2.5,  5,     10,   30,  60,   300};
  uint64_t latency_counts[std::size(kBuckets)] = {};
  uint64_t latency_count = 0;
  double latency_sum = 0;
};

class Proxy {
 public:
  Proxy(boost::asio::any_io_executor executor, Supervisor& supervisor, const Config& config);
  ~Proxy();

  static bool owns(std::string_view target);
  // Serves one request; returns whether the client connection may carry another.
  boost::asio::awaitable<bool> handle(boost::beast::tcp_stream& client, HttpRequest& request);

  const std::map<std::string, ProxyStats>& stats() const { return stats_; }

 private:
  struct Route;  // per service: in-flight count, busy hold, concurrency gate
  struct Target {
    const ServiceSpec* spec = nullptr;
    std::string path;  // on the service
  };

  Result<Target> resolve(const HttpRequest& request) const;
  HttpResponse models(const HttpRequest& request) const;
  // Waits for a slot (proxy.concurrency), the service ready and held busy.
  boost::asio::awaitable<Status> enter(Route& route, const ServiceSpec& spec);
  void leave(Route& route);
  void linger(Route& route, std::chrono::steady_clock::duration after);
  boost::asio::awaitable<bool> forward(boost::beast::tcp_stream& client, HttpRequest& request,
                                       const Target& target, Route& route);
  enum class Relayed { kWhole, kClientGone, kUpstreamFailed };
  // A response of unknown or large length, or a stream, piece by piece as the service writes it.
  boost::asio::awaitable<Relayed> relay(
      boost::beast::tcp_stream& client, boost::asio::ip::tcp::socket& upstream,
      boost::beast::flat_buffer& buffer,
      boost::beast::http::response_parser<boost::beast::http::buffer_body>& parser);
  boost::asio::awaitable<bool> read_rest(
      boost::asio::ip::tcp::socket& upstream, boost::beast::flat_buffer& buffer,
      boost::beast::http::response_parser<boost::beast::http::buffer_body>& parser,
      std::string& body);
  Route& route(const ServiceSpec& spec);
  bool held(const Route& r) const;  // its busy hold is still the service's current one

  boost::asio::any_io_executor executor_;
  Supervisor& supervisor_;
  const Config& config_;
  UpstreamPool pool_;
  std::map<std::string, std::unique_ptr<Route>> routes_;
  std::map<std::string, ProxyStats> stats_;
  std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);
};

}  // namespace gpuvisor
