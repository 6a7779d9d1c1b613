// The proxy's state per service, shared by its routing (proxy.cc) and its exchanges
// (proxy_exchange.cc). Private to the proxy. Fields say which thread may touch them.
#pragma once

#include <sys/socket.h>

#include <atomic>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "api/proxy.h"
#include "api/upstream_pool.h"
#include "core/url.h"

namespace gpuvisor {

// A look at the client's connection that takes nothing and never waits: recv's result for one
// byte peeked, 0 once the client has shut its sending side (-1 with EAGAIN: nothing yet).
inline ssize_t peek_client(boost::asio::ip::tcp::socket& client) {
  char byte = 0;
  return recv(client.native_handle(), &byte, 1, MSG_PEEK | MSG_DONTWAIT);
}

struct Proxy::Target {
  const ServiceSpec* spec = nullptr;
  std::string path;  // on the service
  // Through the service's proxy.listen port: the request goes on as it came (its Host, its
  // Authorization), as if the service itself had taken it.
  bool as_is = false;
  // Whether the client shut its sending side together with its request (it then waits for the
  // answer), where that was looked at before forwarding; else the hang-up watch looks.
  std::optional<bool> client_shut = std::nullopt;
};

// The service's end of an open tunnel, closed from the main thread when the service stops: on
// the tunnel's own thread, and only while the tunnel still runs there.
struct TunnelEnd {
  boost::asio::ip::tcp::socket* socket = nullptr;
  bool open = true;  // the tunnel's thread only
};

struct Proxy::Route {
  Route(boost::asio::any_io_executor main, const ServiceSpec& spec, size_t threads)
      : service(spec.name),
        concurrency(spec.proxy.concurrency),
        upstream(parse_http_url(spec.proxy.url).value_or(HttpUrl{})),
        endpoint(upstream.host, upstream.port),
        linger(std::move(main)) {
    for (size_t i = 0; i < threads; ++i) stats.push_back(std::make_unique<ProxyStats>());
  }

  ProxyStats& counted() { return *stats[IoThreads::current()]; }

  // Any thread: a request passes without the main thread when the service is held busy and
  // nothing limits its concurrency. in_flight is raised before open is looked at, and the
  // main thread shuts open before it looks at in_flight (both sequentially consistent), so a
  // request and the hold's release never miss each other.
  bool pass() {
    if (!open.load()) return false;
    in_flight.fetch_add(1);
    if (open.load()) return true;
    in_flight.fetch_sub(1);
    return false;
  }
  void left() { in_flight.fetch_sub(1); }
  // Requests taken so far, every thread's: the linger timer sees from it that the route was
  // used since it last looked, without a clock read per request.
  uint64_t requests() const {
    uint64_t n = 0;
    for (const auto& shard : stats) n += shard->requests.load(std::memory_order_relaxed);
    return n;
  }

  // Main thread: a slot given back, to the first request waiting for one, else to nobody.
  void pass_slot() {
    if (queue.empty()) {
      --slots;
      return;
    }
    auto next = queue.front();
    queue.pop_front();
    next->cancel();  // its slot is this one
  }

  // Main thread: every open tunnel's service end, closed on its own thread.
  void close_tunnels() {
    std::lock_guard lock(tunnels_mutex);
    for (const auto& end : tunnels) {
      boost::asio::post(end->socket->get_executor(), [end] {
        boost::system::error_code ignored;
        if (end->open) end->socket->close(ignored);
      });
    }
  }

  const std::string service;
  const unsigned concurrency;
  const HttpUrl upstream;  // proxy.url, parsed once (the config checked it)
  const UpstreamPool::Upstream endpoint;
  std::vector<std::unique_ptr<ProxyStats>> stats;  // one shard per thread

  // Any thread.
  std::atomic<unsigned> in_flight{0};  // requests (and tunnels) holding the service busy
  std::atomic<bool> open{false};       // pass() lets requests through
  // A queued placement waits for this service to go idle: the hold goes the moment the last
  // request in flight is done, not a linger later (a swap is waiting on it).
  std::atomic<bool> awaited{false};

  // Main thread.
  Hold hold;  // the service kept busy while the route has traffic
  // One timer runs while the hold is taken and lets it go once the route has had no request for
  // a whole kLinger, so that requests never arm or cancel it.
  boost::asio::steady_timer linger;
  bool linger_armed = false;
  uint64_t requests_seen = 0;  // requests() when the linger timer last looked
  unsigned slots = 0;          // past the concurrency gate
  std::deque<std::shared_ptr<boost::asio::steady_timer>> queue;  // waiting for a slot

  std::mutex tunnels_mutex;
  std::set<std::shared_ptr<TunnelEnd>> tunnels;
};

}  // namespace gpuvisor
