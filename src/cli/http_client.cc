#include "cli/http_client.h"

#include <sys/socket.h>

#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http.hpp>
#include <nlohmann/json.hpp>

#include "core/url.h"

namespace gpuvisor {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using asio::ip::tcp;

namespace {

constexpr Millis kConnectTimeout{5000};

Error unreachable(const std::string& url, const boost::system::error_code& ec) {
  return make_error(ErrorCode::kUnavailable, "cannot reach the daemon at " + url + ": " +
                                                 ec.message() + " (is `gpuvisor serve` running?)");
}

// Connects with a deadline; the io_context runs only inside these calls.
Status connect(asio::io_context& io, beast::tcp_stream& stream, const std::string& host,
               const std::string& port, const std::string& url) {
  boost::system::error_code ec;
  tcp::resolver resolver(io);
  const auto endpoints = resolver.resolve(host, port, ec);
  if (ec) return unreachable(url, ec);
  stream.expires_after(kConnectTimeout);
  stream.async_connect(endpoints,
                       [&ec](const boost::system::error_code& e, const auto&) { ec = e; });
  io.run();
  io.restart();
  if (ec) return unreachable(url, ec);
  return {};
}

}  // namespace

Result<HttpClient> HttpClient::create(const std::string& base_url, std::string token) {
  auto parsed = parse_http_url(base_url);
  if (!parsed || (parsed->target != "/" && !parsed->target.empty())) {
    return make_error(ErrorCode::kBadRequest,
                      "bad daemon URL '" + base_url + "' (use e.g. http://127.0.0.1:7733)");
  }
  std::string url = base_url;
  while (!url.empty() && url.back() == '/') url.pop_back();
  return HttpClient(url, parsed->host, parsed->port, std::move(token));
}

Result<HttpReply> HttpClient::request(const std::string& method, const std::string& target,
                                      Millis timeout, const std::string& body) const {
  asio::io_context io;
  beast::tcp_stream stream(io);
  if (auto ok = connect(io, stream, host_, port_, base_url_); !ok) return ok.error();

  http::request<http::string_body> req{http::string_to_verb(method), target, 11};
  req.set(http::field::host, host_ + ":" + port_);
  req.set(http::field::user_agent, "gpuvisor-cli");
  if (!token_.empty()) req.set(http::field::authorization, "Bearer " + token_);
  if (!body.empty()) {
    req.set(http::field::content_type, "application/json");
    req.body() = body;
  }
  req.prepare_payload();

  boost::system::error_code ec;
  beast::flat_buffer buffer;
  http::response_parser<http::string_body> parser;
  parser.body_limit(64 * 1024 * 1024);
  stream.expires_after(timeout);
  http::async_write(stream, req, [&](const boost::system::error_code& e, size_t) {
    ec = e;
    if (e) return;
    http::async_read(stream, buffer, parser,
                     [&](const boost::system::error_code& e2, size_t) { ec = e2; });
  });
  io.run();
  if (ec == beast::error::timeout) {
    return make_error(ErrorCode::kTimeout,
                      "no answer from the daemon within " + format_duration(timeout));
  }
  if (ec) return unreachable(base_url_, ec);
  HttpReply reply{parser.get().result_int(), parser.get().body(), {}};
  for (const auto& field : parser.get()) {
    std::string name(field.name_string());
    for (auto& c : name) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    reply.headers[name] = std::string(field.value());
  }
  return reply;
}

void StreamStop::stop() {
  std::lock_guard lock(mutex_);
  stopped_ = true;
  if (fd_ >= 0) ::shutdown(fd_, SHUT_RDWR);
}

bool StreamStop::attach(int fd) {
  std::lock_guard lock(mutex_);
  fd_ = fd;
  return !stopped_;
}

void StreamStop::detach() {
  std::lock_guard lock(mutex_);
  fd_ = -1;
}

Status HttpClient::stream(const std::string& target,
                          const std::function<bool(const SseMessage&)>& on_message,
                          StreamStop* stop) const {
  asio::io_context io;
  beast::tcp_stream stream(io);
  if (auto ok = connect(io, stream, host_, port_, base_url_); !ok) return ok.error();
  // Detached before the socket closes, so that a stop never shuts down a reused descriptor.
  struct Attached {
    StreamStop* stop;
    ~Attached() {
      if (stop != nullptr) stop->detach();
    }
  } attached{stop};
  if (stop != nullptr && !stop->attach(stream.socket().native_handle())) return {};
  std::string head = "GET " + target + " HTTP/1.1\r\nHost: " + host_ + ":" + port_ +
                     "\r\nAccept: text/event-stream\r\nUser-Agent: gpuvisor-cli\r\n";
  if (!token_.empty()) head += "Authorization: Bearer " + token_ + "\r\n";
  head += "\r\n";

  boost::system::error_code ec;
  stream.expires_never();
  asio::write(stream.socket(), asio::buffer(head), ec);
  if (ec) return unreachable(base_url_, ec);

  // Read the response head with Beast, then the body as it arrives.
  beast::flat_buffer buffer;
  http::response_parser<http::empty_body> head_parser;
  http::read_header(stream.socket(), buffer, head_parser, ec);
  if (ec) return unreachable(base_url_, ec);
  const unsigned status = head_parser.get().result_int();
  if (status != 200) {
    // The daemon keeps the connection open after an error: read exactly the body it sent.
    http::response_parser<http::string_body> full(std::move(head_parser));
    http::read(stream.socket(), buffer, full, ec);
    const auto body = nlohmann::json::parse(full.get().body(), nullptr, false);
    const std::string message =
        body.is_object() && body.contains("error") && body["error"].is_object()
            ? body["error"].value("message", "")
            : "";
    return make_error(status == 404 ? ErrorCode::kNotFound : ErrorCode::kBadRequest,
                      message.empty() ? "HTTP " + std::to_string(status) : message);
  }
  SseParser parser;
  std::string_view pending(static_cast<const char*>(buffer.data().data()), buffer.size());
  if (!parser.feed(pending, on_message)) return {};
  std::array<char, 8192> chunk{};
  for (;;) {
    const size_t n = stream.socket().read_some(asio::buffer(chunk), ec);
    if (ec) return {};  // the daemon closed the stream (it stopped, or cut a slow reader)
    if (!parser.feed(std::string_view(chunk.data(), n), on_message)) return {};
  }
}

bool SseParser::feed(std::string_view bytes,
                     const std::function<bool(const SseMessage&)>& on_message) {
  buffer_.append(bytes);
  size_t start = 0;
  for (;;) {
    const auto nl = buffer_.find('\n', start);
    if (nl == std::string::npos) break;
    std::string line = buffer_.substr(start, nl - start);
    start = nl + 1;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.empty()) {
      if (!current_.data.empty() || !current_.event.empty()) {
        if (!current_.data.empty() && current_.data.back() == '\n') current_.data.pop_back();
        const bool more = on_message(current_);
        current_ = SseMessage{};
        if (!more) {
          buffer_.erase(0, start);
          return false;
        }
      }
      continue;
    }
    if (line.front() == ':') continue;  // a comment: keepalive
    const auto colon = line.find(':');
    const std::string field = line.substr(0, colon);
    std::string value = colon == std::string::npos ? "" : line.substr(colon + 1);
    if (!value.empty() && value.front() == ' ') value.erase(0, 1);
    if (field == "data") {
      current_.data += value + "\n";
    } else if (field == "event") {
      current_.event = value;
    } else if (field == "id") {
      current_.id = value;
    }
  }
  buffer_.erase(0, start);
  return true;
}

}  // namespace gpuvisor
