// The proxy's state per service, shared by its routing (proxy.cc) and its exchanges
// (proxy_exchange.cc). Private to the proxy.
#pragma once

#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>
#include <deque>
#include <memory>
#include <optional>
#include <set>
#include <string>

#include "api/proxy.h"
#include "api/upstream_pool.h"
#include "core/url.h"

namespace gpuvisor {

struct Proxy::Target {
  const ServiceSpec* spec = nullptr;
  std::string path;  // on the service
  // Through the service's proxy.listen port: the request goes on as it came (its Host, its
  // Authorization), as if the service itself had taken it.
  bool as_is = false;
  // The client shut its sending side together with its request: it waits for the answer.
  bool client_shut = false;
};

struct Proxy::Route {
  Route(boost::asio::any_io_executor executor, const ServiceSpec& spec, ProxyStats& counted)
      : service(spec.name),
        upstream(parse_http_url(spec.proxy.url).value_or(HttpUrl{})),
        endpoint(upstream.host, upstream.port),
        stats(counted),
        linger(std::move(executor)) {}

  // A slot given back: to the first request waiting for one, else to nobody.
  void pass_slot() {
    if (queue.empty()) {
      --slots;
      return;
    }
    auto next = queue.front();
    queue.pop_front();
    next->cancel();  // its slot is this one
  }

  // Both ends of every open tunnel: its service has stopped.
  void close_tunnels() {
    for (auto* socket : tunnels) {
      boost::system::error_code ignored;
      socket->close(ignored);
    }
  }

  std::string service;
  HttpUrl upstream;  // proxy.url, parsed once (the config checked it)
  UpstreamPool::Upstream endpoint;
  ProxyStats& stats;
  unsigned in_flight = 0;        // requests holding the service busy
  std::optional<uint64_t> hold;  // the supervisor's token for that
  // The hold is let go kLinger after the last request left. One timer runs while the route is
  // idle and re-arms itself for what is left, so that requests never arm or cancel it.
  boost::asio::steady_timer linger;
  bool linger_armed = false;
  std::chrono::steady_clock::time_point last_left;
  unsigned slots = 0;  // requests past the concurrency gate
  std::deque<std::shared_ptr<boost::asio::steady_timer>> queue;  // waiting for a slot
  std::set<boost::asio::ip::tcp::socket*> tunnels;  // the service's end of each open tunnel
};

}  // namespace gpuvisor
