// A small HTTP/1.1 server on Boost.Beast: an accept loop and one coroutine per connection, all
// on the daemon's one executor. What a request means is the Handler's business: it gets the
// request's head with its body still on the connection, so that a proxy can stream an upload
// through rather than hold it whole; read_whole() reads it for everyone else.
#pragma once

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http/buffer_body.hpp>
#include <boost/beast/http/message.hpp>
#include <boost/beast/http/parser.hpp>
#include <boost/beast/http/string_body.hpp>
#include <functional>
#include <memory>
#include <string_view>

#include "api/io_threads.h"
#include "core/result.h"

namespace gpuvisor {

using HttpRequest = boost::beast::http::request<boost::beast::http::string_body>;
using HttpResponse = boost::beast::http::response<boost::beast::http::string_body>;
using RequestHead = boost::beast::http::request_header<>;
using RequestParser = boost::beast::http::request_parser<boost::beast::http::buffer_body>;

// A request whose head has been read. Its body, if it has one, is still to be read through
// parser from stream, starting with what buffer holds: bytes that came after the head.
struct Incoming {
  boost::beast::tcp_stream& stream;
  boost::beast::flat_buffer& buffer;
  RequestParser& parser;
  bool continued = false;  // "100 Continue" was sent: never twice
  const RequestHead& head() const { return parser.get(); }
};

// Whether the client lets the connection carry another request after this one (what Beast's
// message::keep_alive() says, for a head alone).
bool keep_alive(const RequestHead& head);

// The rest of in's request, read whole into a string body of at most limit bytes; a client
// that sent "Expect: 100-continue" is told to go on first. An error says what was wrong (the
// connection cannot carry another request after one).
boost::asio::awaitable<Result<HttpRequest>> read_whole(Incoming& in, size_t limit);

class HttpServer {
 public:
  // Serves one request: reads its body (read_whole, or piece by piece), writes the response
  // (or a stream, for SSE) to the stream itself, and returns whether the connection may carry
  // another request: false whenever the body was not read to its end.
  using Handler = std::function<boost::asio::awaitable<bool>(Incoming&)>;

  // threads: where connections run (see io_threads.h); null: on executor, with the acceptor.
  HttpServer(boost::asio::any_io_executor executor, Handler handler, IoThreads* threads = nullptr);
  ~HttpServer();

  // Binds and starts accepting. Port "0" picks a free port: the returned endpoint says which.
  Result<boost::asio::ip::tcp::endpoint> listen(const std::string& host, const std::string& port);
  void close();

 private:
  boost::asio::awaitable<void> accept_loop();
  boost::asio::awaitable<void> session(boost::beast::tcp_stream stream);

  boost::asio::any_io_executor executor_;
  Handler handler_;
  IoThreads* threads_;
  std::unique_ptr<boost::asio::ip::tcp::acceptor> acceptor_;
  std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);
};

// Reads from socket until parser has a whole head: a plain read at a time, each parsed by Beast
// as it comes. What http::async_read_header does, without its layers of composed operations,
// which cost every proxied request twice. Errors as Beast's: end_of_stream when the peer closed
// before a byte of the message, partial_message when it closed within one.
template <bool isRequest, class Body>
boost::asio::awaitable<void> read_head(boost::asio::ip::tcp::socket& socket,
                                       boost::beast::flat_buffer& buffer,
                                       boost::beast::http::parser<isRequest, Body>& parser,
                                       boost::system::error_code& ec) {
  namespace http = boost::beast::http;
  for (;;) {
    if (buffer.size() > 0) {
      buffer.consume(parser.put(buffer.data(), ec));
      if (ec == http::error::need_more) {
        ec = {};
      } else if (ec || parser.is_header_done()) {
        co_return;
      }
    }
    const size_t got = co_await socket.async_read_some(
        buffer.prepare(8192), boost::asio::redirect_error(boost::asio::use_awaitable, ec));
    if (ec == boost::asio::error::eof) {
      ec = parser.got_some() || buffer.size() > 0 ? http::error::partial_message
                                                  : http::error::end_of_stream;
    }
    if (ec) co_return;
    buffer.commit(got);
  }
}

// "HTTP/1.1 100 Continue", where the client asked for it before it sends the body.
boost::asio::awaitable<bool> continue_if_expected(Incoming& in);

// Writes a complete response; false when the client has gone.
boost::asio::awaitable<bool> write_response(boost::beast::tcp_stream& stream,
                                            HttpResponse& response);

}  // namespace gpuvisor
