#include "api/upstream_pool.h"

#include <boost/asio/connect.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>

namespace gpuvisor {

namespace asio = boost::asio;
using asio::ip::tcp;

namespace {
constexpr auto kConnectTimeout = std::chrono::seconds(10);
}  // namespace

UpstreamPool::Lease UpstreamPool::take_idle(const Upstream& upstream) {
  auto& idle = idle_[&upstream];
  while (!idle.empty()) {
    auto connection = std::move(idle.back());
    idle.pop_back();
    if (connection->socket.is_open()) return Lease{std::move(connection), true};
  }
  return {};
}

asio::awaitable<Result<UpstreamPool::Lease>> UpstreamPool::connect(const Upstream& upstream) {
  const std::string& key = upstream.key;
  boost::system::error_code ec;
  auto& endpoints = resolved_[key];
  if (endpoints.empty()) {
    tcp::resolver resolver(executor_);
    const auto results = co_await resolver.async_resolve(
        upstream.host, upstream.port, asio::redirect_error(asio::use_awaitable, ec));
    if (ec) {
      resolved_.erase(key);
      co_return make_error(ErrorCode::kUnavailable, "cannot resolve " + key + ": " + ec.message());
    }
    for (const auto& r : results) endpoints.push_back(r.endpoint());
  }
  auto connection = std::make_unique<Connection>(executor_);
  tcp::socket& stream = connection->socket;
  asio::steady_timer limit(executor_, kConnectTimeout);
  limit.async_wait([socket = &stream](boost::system::error_code e) {
    if (!e) socket->close(e);  // too slow: the connect below fails
  });
  co_await asio::async_connect(stream, endpoints, asio::redirect_error(asio::use_awaitable, ec));
  limit.cancel();
  if (ec) {
    co_return make_error(ErrorCode::kUnavailable, "cannot connect to " + key + ": " + ec.message());
  }
  stream.set_option(tcp::no_delay(true), ec);
  // The proxy reads what has already come without waiting (read_some), before it waits.
  if (!ec) stream.non_blocking(true, ec);
  if (ec)
    co_return make_error(ErrorCode::kUnavailable, "cannot set up " + key + ": " + ec.message());
  co_return Lease{std::move(connection), false};
}

void UpstreamPool::give_back(const Upstream& upstream, std::unique_ptr<Connection> connection) {
  auto& idle = idle_[&upstream];
  if (idle.size() < kMaxIdlePerUpstream) idle.push_back(std::move(connection));
}

}  // namespace gpuvisor
