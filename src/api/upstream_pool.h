// Kept-alive connections to the services gpuvisor proxies to, by host:port. A connection is
// taken for one request and given back when its response has been read to the end and both
// sides agreed to keep it; one that the service closed meanwhile is noticed by the caller on
// first use and replaced (Proxy retries once on a fresh one).
#pragma once

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <map>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "core/result.h"

namespace gpuvisor {

class UpstreamPool {
 public:
  // Where a service is, with its map key built once (the proxy asks on every request).
  struct Upstream {
    Upstream(std::string h, std::string p)
        : host(std::move(h)), port(std::move(p)), key(host + ":" + port) {}
    std::string host;
    std::string port;
    std::string key;  // host:port
  };

  // A connection and the buffer its responses are read into, kept together so that the
  // buffer's storage is reused by the next request rather than allocated for each.
  struct Connection {
    explicit Connection(const boost::asio::any_io_executor& executor) : socket(executor) {}
    boost::asio::ip::tcp::socket socket;
    boost::beast::flat_buffer buffer;
    std::string head;  // the head being sent on it, kept for its storage
  };

  struct Lease {
    std::unique_ptr<Connection> connection;
    bool reused = false;  // it carried a request before: it may have been closed since
  };

  explicit UpstreamPool(boost::asio::any_io_executor executor) : executor_(std::move(executor)) {}

  // An idle connection to host:port, if there is one (no coroutine: the hot path).
  Lease take_idle(const Upstream& upstream);
  // A new connection (Unavailable, saying why, if it cannot be made).
  boost::asio::awaitable<Result<Lease>> connect(const Upstream& upstream);
  void give_back(const Upstream& upstream, std::unique_ptr<Connection> connection);

 private:
  static constexpr size_t kMaxIdlePerUpstream = 256;

  boost::asio::any_io_executor executor_;
  // Plain sockets rather than beast::tcp_stream: no per-operation timer bookkeeping on the
  // proxy's hot path (a connect has its own timeout; a service's reply may take minutes).
  // By the Upstream object itself (each Route keeps one for good): no string compared per
  // request.
  std::unordered_map<const Upstream*, std::vector<std::unique_ptr<Connection>>> idle_;
  std::map<std::string, std::vector<boost::asio::ip::tcp::endpoint>> resolved_;
};

}  // namespace gpuvisor
