#include "api/http_server.h"

#include <spdlog/spdlog.h>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/string.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/rfc7230.hpp>
#include <boost/beast/http/write.hpp>
#include <limits>

namespace gpuvisor {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using asio::ip::tcp;

namespace {
constexpr auto kIdleTimeout = std::chrono::seconds(120);
}  // namespace

HttpServer::HttpServer(asio::any_io_executor executor, Handler handler, IoThreads* threads)
    : executor_(std::move(executor)), handler_(std::move(handler)), threads_(threads) {}

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
    // The connection lives on the thread it is given, from its first byte to its last.
    tcp::socket socket =
        co_await acceptor_->async_accept(threads_ != nullptr ? threads_->next() : executor_,
                                         asio::redirect_error(asio::use_awaitable, ec));
    if (alive.expired() || !acceptor_->is_open()) co_return;
    if (ec) {
      // EMFILE and friends: log and keep accepting rather than take the API down.
      spdlog::warn("accept: {}", ec.message());
      continue;
    }
    socket.set_option(tcp::no_delay(true), ec);
    // The proxy writes what the socket takes at once without a trip through the scheduler
    // (proxy_exchange.cc); every other use of the socket is asynchronous, so unaffected.
    if (!ec) socket.non_blocking(true, ec);
    const auto on = socket.get_executor();
    asio::co_spawn(on, session(beast::tcp_stream(std::move(socket))), asio::detached);
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
  auto idle = std::make_shared<IdleWatch>(stream.get_executor());
  watch_idle(idle, stream);
  for (;;) {
    boost::system::error_code ec;
    RequestParser parser;
    // A head of the size Beast allows by default (8 KiB) is plenty for a request line and its
    // fields; the body's limit is the handler's to set, once it knows who reads it. (Not
    // boost::none: Beast 1.74 then refuses every Content-Length.)
    parser.body_limit(std::numeric_limits<std::uint64_t>::max());
    ++idle->requests;
    idle->reading = true;
    co_await read_head(stream.socket(), buffer, parser, ec);
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
    Incoming in{stream, buffer, parser, false};
    const bool keep = co_await handler_(in);
    if (!keep) break;
  }
  idle->open = false;
  idle->timer.cancel();
  boost::system::error_code ignored;  // the peer may already have gone
  stream.socket().shutdown(tcp::socket::shutdown_send, ignored);
}

bool keep_alive(const RequestHead& head) {
  const auto connection = head.find(http::field::connection);
  if (connection == head.end()) return head.version() >= 11;
  http::token_list tokens(connection->value());  // exists() is not const in Beast 1.74
  return head.version() >= 11 ? !tokens.exists("close") : tokens.exists("keep-alive");
}

asio::awaitable<bool> continue_if_expected(Incoming& in) {
  const auto expect = in.head().find(http::field::expect);
  if (in.continued || in.parser.is_done() || expect == in.head().end() ||
      !beast::iequals(expect->value(), "100-continue") || in.head().version() < 11) {
    co_return true;
  }
  in.continued = true;
  static constexpr std::string_view kContinue = "HTTP/1.1 100 Continue\r\n\r\n";
  boost::system::error_code ec;
  co_await asio::async_write(in.stream, asio::buffer(kContinue.data(), kContinue.size()),
                             asio::redirect_error(asio::use_awaitable, ec));
  co_return !ec;
}

asio::awaitable<Result<HttpRequest>> read_whole(Incoming& in, size_t limit) {
  http::request_parser<http::string_body> whole(std::move(in.parser));
  if (whole.is_done()) co_return whole.release();
  whole.body_limit(limit);
  if (!co_await continue_if_expected(in)) {
    co_return make_error(ErrorCode::kBadRequest, "the client went away");
  }
  boost::system::error_code ec;
  co_await http::async_read(in.stream, in.buffer, whole,
                            asio::redirect_error(asio::use_awaitable, ec));
  if (ec == http::error::body_limit) {
    co_return make_error(ErrorCode::kTooLarge,
                         "request body over " + std::to_string(limit) + " bytes");
  }
  if (ec) co_return make_error(ErrorCode::kBadRequest, "malformed HTTP request: " + ec.message());
  co_return whole.release();
}

asio::awaitable<bool> write_response(beast::tcp_stream& stream, HttpResponse& response) {
  response.prepare_payload();
  boost::system::error_code ec;
  co_await http::async_write(stream, response, asio::redirect_error(asio::use_awaitable, ec));
  co_return !ec;
}

}  // namespace gpuvisor
