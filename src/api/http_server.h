// A small HTTP/1.1 server on Boost.Beast: an accept loop and one coroutine per connection, all
// on the daemon's one executor. What a request means is the Handler's business.
#pragma once

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http/message.hpp>
#include <boost/beast/http/string_body.hpp>
#include <functional>
#include <memory>
#include <string_view>

#include "core/result.h"

namespace gpuvisor {

using HttpRequest = boost::beast::http::request<boost::beast::http::string_body>;
using HttpResponse = boost::beast::http::response<boost::beast::http::string_body>;

class HttpServer {
 public:
  // Serves one request: writes the response (or a stream, for SSE) to the stream itself and
  // returns whether the connection may carry another request.
  using Handler =
      std::function<boost::asio::awaitable<bool>(boost::beast::tcp_stream&, HttpRequest&)>;

  // The largest request body accepted for a target (the proxy's uploads are larger than the
  // API's JSON); none given: 1 MiB for all.
  using BodyLimit = std::function<size_t(std::string_view target)>;

  HttpServer(boost::asio::any_io_executor executor, Handler handler, BodyLimit body_limit = {});
  ~HttpServer();

  // Binds and starts accepting. Port "0" picks a free port: the returned endpoint says which.
  Result<boost::asio::ip::tcp::endpoint> listen(const std::string& host, const std::string& port);
  void close();

 private:
  boost::asio::awaitable<void> accept_loop();
  boost::asio::awaitable<void> session(boost::beast::tcp_stream stream);

  boost::asio::any_io_executor executor_;
  Handler handler_;
  BodyLimit body_limit_;
  std::unique_ptr<boost::asio::ip::tcp::acceptor> acceptor_;
  std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);
};

// Writes a complete response; false when the client has gone.
boost::asio::awaitable<bool> write_response(boost::beast::tcp_stream& stream,
                                            HttpResponse& response);

}  // namespace gpuvisor
