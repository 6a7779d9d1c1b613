#include "api/http_server.h"

#include <spdlog/spdlog.h>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/write.hpp>

namespace gpuvisor {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using asio::ip::tcp;

namespace {
constexpr auto kIdleTimeout = std::chrono::seconds(120);
constexpr size_t kBodyLimit = 1024 * 1024;
}  // namespace

HttpServer::HttpServer(asio::any_io_executor executor, Handler handler, BodyLimit body_limit)
    : executor_(std::move(executor)),
      handler_(std::move(handler)),
      body_limit_(std::move(body_limit)) {}

HttpServer::~HttpServer() {
  close();
}

Result<tcp::endpoint> HttpServer::listen(const std::string& host, const std::string& port) {
  boost::system::error_code ec;
  tcp::resolver resolver(executor_);
  const auto results = resolver.resolve(host, port, tcp::resolver::passive, ec);
  if (ec || results.empty()) {
    return make_error(ErrorCode::kBadRequest,
                      "cannot resolve listen address " + host + ":" + port + ": " + ec.message());
  }
  const tcp::endpoint endpoint = results.begin()->endpoint();
  auto acceptor = std::make_unique<tcp::acceptor>(executor_);
  if (acceptor->open(endpoint.protocol(), ec); !ec) {
    acceptor->set_option(asio::socket_base::reuse_address(true), ec);
    acceptor->bind(endpoint, ec);
  }
  if (!ec) acceptor->listen(asio::socket_base::max_listen_connections, ec);
  if (ec) {
    return make_error(ErrorCode::kUnavailable,
                      "cannot listen on " + host + ":" + port + ": " + ec.message());
  }
  const tcp::endpoint bound = acceptor->local_endpoint();
  acceptor_ = std::move(acceptor);
  asio::co_spawn(executor_, accept_loop(), asio::detached);
  return bound;
}

void HttpServer::close() {
  if (acceptor_) {
    boost::system::error_code ignored;  // closing a closed acceptor is not worth reporting
    acceptor_->close(ignored);
  }
}

asio::awaitable<void> HttpServer::accept_loop() {
  std::weak_ptr<bool> alive = alive_;
  for (;;) {
    boost::system::error_code ec;
    tcp::socket socket =
        co_await acceptor_->async_accept(asio::redirect_error(asio::use_awaitable, ec));
    if (alive.expired() || !acceptor_->is_open()) co_return;
    if (ec) {
      // EMFILE and friends: log and keep accepting rather than take the API down.
      spdlog::warn("accept: {}", ec.message());
      continue;
    }
    socket.set_option(tcp::no_delay(true), ec);
    asio::co_spawn(executor_, session(beast::tcp_stream(std::move(socket))), asio::detached);
  }
}

namespace {

// A connection's idle timeout: one timer that looks every kIdleTimeout, rather than a deadline
// armed and cancelled around every read (a cost on each proxied request). A connection that
// was waiting for a request at one look and still waits for the same one at the next is idle:
// its read is cancelled.
struct IdleWatch {
  explicit IdleWatch(asio::any_io_executor executor) : timer(std::move(executor)) {}
  asio::steady_timer timer;
  bool open = true;
  bool reading = false;
  bool timed_out = false;
  uint64_t requests = 0;
  uint64_t seen = 0;
};

void watch_idle(const std::shared_ptr<IdleWatch>& idle, beast::tcp_stream& stream) {
  idle->timer.expires_after(kIdleTimeout);
  idle->timer.async_wait([idle, &stream](boost::system::error_code ec) {
    if (ec || !idle->open) return;  // the session is over: stream is gone
    if (idle->reading && idle->seen == idle->requests) {
      idle->timed_out = true;
      stream.cancel();
      return;
    }
    idle->seen = idle->requests;
    watch_idle(idle, stream);
  });
}

}  // namespace

asio::awaitable<void> HttpServer::session(beast::tcp_stream stream) {
  beast::flat_buffer buffer;
  auto idle = std::make_shared<IdleWatch>(executor_);
  watch_idle(idle, stream);
  for (;;) {
    boost::system::error_code ec;
    http::request_parser<http::string_body> parser;
    ++idle->requests;
    idle->reading = true;
    co_await http::async_read_header(stream, buffer, parser,
                                     asio::redirect_error(asio::use_awaitable, ec));
    // A request without a body is complete with its header: no read to wait for.
    if (!ec && !parser.is_done()) {
      parser.body_limit(body_limit_ ? body_limit_(parser.get().target()) : kBodyLimit);
      co_await http::async_read(stream, buffer, parser,
                                asio::redirect_error(asio::use_awaitable, ec));
    }
    idle->reading = false;
    if (idle->timed_out || ec == http::error::end_of_stream ||
        ec == asio::error::connection_reset || ec == asio::error::eof) {
      break;
    }
    if (ec) {
      HttpResponse response{http::status::bad_request, 11};
      response.set(http::field::content_type, "application/json");
      response.body() = R"({"error":{"code":"bad_request","message":"malformed HTTP request: )" +
                        ec.message() + "\"}}\n";
      response.keep_alive(false);
      co_await write_response(stream, response);
      break;
    }
    // Handlers may wait for a long time (ensure) or stream forever (SSE): no idle timeout.
    HttpRequest request = parser.release();
    const bool keep = co_await handler_(stream, request);
    if (!keep) break;
  }
  idle->open = false;
  idle->timer.cancel();
  boost::system::error_code ignored;  // the peer may already have gone
  stream.socket().shutdown(tcp::socket::shutdown_send, ignored);
}

asio::awaitable<bool> write_response(beast::tcp_stream& stream, HttpResponse& response) {
  response.prepare_payload();
  boost::system::error_code ec;
  co_await http::async_write(stream, response, asio::redirect_error(asio::use_awaitable, ec));
  co_return !ec;
}

}  // namespace gpuvisor
