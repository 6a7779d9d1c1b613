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
//
// Threads: requests run on the thread of their connection (io_threads.h). A request for a
// service that is ready and held busy by the proxy already passes through on that thread
// alone, with an atomic count; everything that asks the supervisor (a start, the busy hold and
// its release, a concurrency slot) runs on the main thread.
#pragma once

#include <atomic>
#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/steady_timer.hpp>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "api/http_server.h"
#include "api/io_threads.h"
#include "api/proxy_stats.h"
#include "api/upstream_pool.h"
#include "core/url.h"
#include "events/event_bus.h"
#include "supervisor/supervisor.h"

namespace gpuvisor {

class Proxy {
 public:
  // strip_authorization: gpuvisor has a key of its own, so the client's Authorization is
  // gpuvisor's, not the service's, and is not passed on (proxy.listen ports pass it on).
  // executor: the main thread's. threads: the other threads requests run on (may be null).
  Proxy(boost::asio::any_io_executor executor, Supervisor& supervisor, EventBus& events,
        const Config& config, bool strip_authorization, const IoThreads* threads = nullptr);
  ~Proxy();
  Proxy(const Proxy&) = delete;
  Proxy& operator=(const Proxy&) = delete;

  static bool owns(std::string_view target);
  // Serves one request whose head has been read; returns whether the client connection may
  // carry another. service: the service of a proxy.listen port (everything goes there, as it
  // came); null: routed by path or model.
  boost::asio::awaitable<bool> handle(Incoming& in, const ServiceSpec* service = nullptr);

  // Per service, its shards added up (any thread).
  std::map<std::string, ProxyCounts> counts() const;

 private:
  struct Route;     // per service: in-flight count, busy hold, concurrency gate, open tunnels
  struct Target;    // where one request goes
  struct Exchange;  // one exchange's state and steps (proxy_exchange.cc)

  // Where /upstream/NAME/... goes.
  Result<Target> by_path(std::string_view target) const;
  // Where a /v1 request goes; its body is read into body as far as its model needs (what was
  // read goes to the service first).
  boost::asio::awaitable<Result<Target>> by_model(Incoming& in, std::string& body) const;
  HttpResponse models(const RequestHead& head) const;
  // Forwards the request and relays the response (or tunnels an upgraded connection). body:
  // what routing read of the request body.
  boost::asio::awaitable<bool> exchange(Incoming& in, const Target& target, Route& route,
                                        std::string& body);
  // On the main thread: waits for a slot (proxy.concurrency), the service ready and held busy.
  boost::asio::awaitable<Status> enter(Route& route, const ServiceSpec& spec);
  // enter() from any thread.
  boost::asio::awaitable<Status> enter_on_main(Route& route, const ServiceSpec& spec);
  void leave(Route& route);
  // Main thread: lets the busy hold go once the route has been idle kLinger.
  void linger(Route& route, std::chrono::steady_clock::duration after);
  // Main thread: lets the route's hold go if nothing is in flight; false if a request keeps it.
  bool let_go_if_idle(Route& route);
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
  // One per thread (index IoThreads::current()): a connection is only used on its own.
  std::vector<std::unique_ptr<UpstreamPool>> pools_;
  // Every proxied service's, made up front: the map itself is never changed after.
  std::map<std::string, std::unique_ptr<Route>> routes_;
  std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);
};

}  // namespace gpuvisor
