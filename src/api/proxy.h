// The on-demand reverse proxy. Three ways in:
//   /upstream/{service}/...  the service's proxy.url, path and all;
//   /v1/...                  the service that lists the request's "model" (OpenAI-compatible);
//   proxy.listen             a port of the service's own, everything that arrives there.
// A service that is not running is ensured first (evicting per the planner) and the request
// waits, up to proxy.wait, then gets 503 with Retry-After; requests for one service share its
// start. While requests run, and while a WebSocket is open, the service is busy, so no plan
// evicts it. Bodies stream both ways as they are written (uploads, SSE, chunked tokens), over
// kept-alive upstream connections; each response is framed once, for the client's hop. A client
// that goes away closes its upstream request; a stopped service closes its WebSockets.
#pragma once

#include <atomic>
#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/steady_timer.hpp>
#include <map>
#include <memory>
#include <string>
#include <string_view>

#include "api/http_server.h"
#include "api/upstream_pool.h"
#include "core/url.h"
#include "events/event_bus.h"
#include "supervisor/supervisor.h"

namespace gpuvisor {

// What the proxy counted, per service, for /metrics.
struct ProxyStats {
  uint64_t requests = 0;
  std::map<unsigned, uint64_t> responses;  // by status code
  uint64_t errors = 0;                     // answered by gpuvisor itself (404, 502, 503)
  uint64_t client_gone = 0;                // the client left before the response ended
  uint64_t upgrades = 0;                   // WebSockets (or other upgrades) the service took
  uint64_t open_tunnels = 0;               // of those, open now
  // Time to the response head, in seconds: cumulative counts per upper bound, then the total.
  static constexpr double kBuckets[] = {0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                                        1,     2.5,  5,     10,   30,  60,   300};
  uint64_t latency_counts[std::size(kBuckets)] = {};
  uint64_t latency_count = 0;
  double latency_sum = 0;
};

class Proxy {
 public:
  // strip_authorization: gpuvisor has a key of its own, so the client's Authorization is
  // gpuvisor's, not the service's, and is not passed on (proxy.listen ports pass it on).
  Proxy(boost::asio::any_io_executor executor, Supervisor& supervisor, EventBus& events,
        const Config& config, bool strip_authorization);
  ~Proxy();
  Proxy(const Proxy&) = delete;
  Proxy& operator=(const Proxy&) = delete;

  static bool owns(std::string_view target);
  // Serves one request whose head has been read; returns whether the client connection may
  // carry another. service: the service of a proxy.listen port (everything goes there, as it
  // came); null: routed by path or model.
  boost::asio::awaitable<bool> handle(Incoming& in, const ServiceSpec* service = nullptr);

  const std::map<std::string, ProxyStats>& stats() const { return stats_; }

 private:
  struct Route;   // per service: in-flight count, busy hold, concurrency gate, open tunnels
  struct Target;  // where one request goes

  // The target of a routed request; a /v1 request's body is read into body as far as its
  // model needs (what was read goes to the service first).
  boost::asio::awaitable<Result<Target>> resolve(Incoming& in, std::string& body) const;
  HttpResponse models(const RequestHead& head) const;
  // Forwards the request and relays the response (or tunnels an upgraded connection). body:
  // what routing read of the request body.
  boost::asio::awaitable<bool> exchange(Incoming& in, const Target& target, Route& route,
                                        std::string& body);
  // Waits for a slot (proxy.concurrency), the service ready and held busy.
  boost::asio::awaitable<Status> enter(Route& route, const ServiceSpec& spec);
  void leave(Route& route);
  void linger(Route& route, std::chrono::steady_clock::duration after);
  Route& route(const ServiceSpec& spec);
  bool held(const Route& r) const;  // its busy hold is still the service's current one
  void on_event(const Event& event);
  // gpuvisor's own answer (an error, /v1/models): the body is unread, so the connection ends
  // unless there was none.
  boost::asio::awaitable<bool> answer(Incoming& in, HttpResponse response);

  boost::asio::any_io_executor executor_;
  Supervisor& supervisor_;
  EventBus& events_;
  uint64_t subscription_ = 0;
  const Config& config_;
  bool strip_authorization_;
  UpstreamPool pool_;
  std::map<std::string, std::unique_ptr<Route>> routes_;
  std::map<std::string, ProxyStats> stats_;
  std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);
};

}  // namespace gpuvisor
