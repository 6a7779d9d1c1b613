#include "runtime/docker_client.h"

#include <boost/asio/local/stream_protocol.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core/basic_stream.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http.hpp>
#include <nlohmann/json.hpp>

namespace gpuvisor {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;

namespace {

constexpr size_t kMaxReplyBytes = 64 * 1024 * 1024;  // an inspect is KiB; an image list, MiB

std::string transport_error(const std::string& socket, const boost::system::error_code& ec,
                            Millis timeout) {
  const std::string where = "the Docker engine at " + socket;
  if (ec == beast::error::timeout) {
    return where + " did not answer within " + format_duration(timeout);
  }
  if (ec == boost::system::errc::no_such_file_or_directory ||
      ec == asio::error::connection_refused) {
    return "cannot reach " + where + " (" + ec.message() +
           "): is dockerd running? (daemon.docker_host or DOCKER_HOST names the socket)";
  }
  if (ec == asio::error::access_denied) {
    return "cannot reach " + where + ": permission denied (run as root or in group docker)";
  }
  return "cannot talk to " + where + ": " + ec.message();
}

// "1.41" < "1.9" as text; compare as numbers.
bool older(const std::string& a, const std::string& b) {
  const auto split = [](const std::string& v) {
    const auto dot = v.find('.');
    const auto num = [](const std::string& s) {
      try {
        return std::stoi(s);
      } catch (...) {
        return 0;
      }
    };
    return std::pair{num(v.substr(0, dot)), dot == std::string::npos ? 0 : num(v.substr(dot + 1))};
  };
  return split(a) < split(b);
}

}  // namespace

DockerClient::DockerClient(asio::any_io_executor executor, std::string socket_path)
    : executor_(std::move(executor)), socket_path_(std::move(socket_path)) {}

Result<std::string> DockerClient::socket_from(const std::string& host) {
  constexpr std::string_view kUnix = "unix://";
  if (host.rfind(kUnix, 0) == 0) return host.substr(kUnix.size());
  if (!host.empty() && host.front() == '/') return host;
  return make_error(ErrorCode::kBadRequest,
                    "Docker host '" + host +
                        "' is not a unix socket (use unix:///path/to/docker.sock); TCP engines "
                        "are not supported");
}

asio::awaitable<Status> DockerClient::negotiate(Millis timeout) {
  // /version is served unversioned; its ApiVersion is the newest the engine speaks.
  auto saved = std::exchange(prefix_, std::string());
  auto reply = co_await call("GET", "/version", "", timeout);
  prefix_ = std::move(saved);
  if (!reply) co_return reply.error();
  if (reply->status != 200) {
    co_return make_error(ErrorCode::kUnavailable, "Docker engine at " + socket_path_ +
                                                      " answered /version with HTTP " +
                                                      std::to_string(reply->status));
  }
  std::string version = kApiVersion;
  const auto json = nlohmann::json::parse(reply->body, nullptr, false);
  if (!json.is_object() || !json.contains("ApiVersion") || !json["ApiVersion"].is_string()) {
    co_return make_error(ErrorCode::kUnavailable, "Docker engine at " + socket_path_ +
                                                      " sent a /version without ApiVersion");
  }
  const auto server = json["ApiVersion"].get<std::string>();
  if (older(server, version)) version = server;
  prefix_ = "/v" + version;
  co_return Status{};
}

// Negotiates the version once, then connects with the deadline already running.
asio::awaitable<Status> DockerClient::open(Stream& stream, Millis timeout) {
  if (!prefix_) {
    if (auto ok = co_await negotiate(timeout); !ok) co_return ok.error();
  }
  stream.expires_after(timeout);
  boost::system::error_code ec;
  co_await stream.async_connect(asio::local::stream_protocol::endpoint(socket_path_),
                                asio::redirect_error(asio::use_awaitable, ec));
  if (ec) co_return make_error(ErrorCode::kUnavailable, transport_error(socket_path_, ec, timeout));
  co_return Status{};
}

asio::awaitable<Result<DockerReply>> DockerClient::call(std::string method, std::string target,
                                                        std::string body, Millis timeout) {
  Stream stream(executor_);
  if (auto opened = co_await open(stream, timeout); !opened) co_return opened.error();
  boost::system::error_code ec;

  http::request<http::string_body> request{http::string_to_verb(method), *prefix_ + target, 11};
  request.set(http::field::host, "docker");
  request.set(http::field::user_agent, "gpuvisor");
  if (!body.empty()) request.set(http::field::content_type, "application/json");
  request.body() = std::move(body);
  request.prepare_payload();
  request.keep_alive(false);
  co_await http::async_write(stream, request, asio::redirect_error(asio::use_awaitable, ec));
  if (ec) co_return make_error(ErrorCode::kUnavailable, transport_error(socket_path_, ec, timeout));

  beast::flat_buffer buffer;
  http::response_parser<http::string_body> parser;
  parser.body_limit(kMaxReplyBytes);
  co_await http::async_read(stream, buffer, parser, asio::redirect_error(asio::use_awaitable, ec));
  if (ec) co_return make_error(ErrorCode::kUnavailable, transport_error(socket_path_, ec, timeout));
  co_return DockerReply{parser.get().result_int(), std::move(parser.get().body())};
}

asio::awaitable<Status> DockerClient::stream(std::string target,
                                             const std::function<void(std::string_view)>& on_data,
                                             std::shared_ptr<StreamControl> control) {
  const Millis setup(10'000);
  Stream stream(executor_);
  if (auto opened = co_await open(stream, setup); !opened) co_return opened.error();
  boost::system::error_code ec;
  http::request<http::empty_body> request{http::verb::get, *prefix_ + target, 11};
  request.set(http::field::host, "docker");
  request.set(http::field::user_agent, "gpuvisor");
  co_await http::async_write(stream, request, asio::redirect_error(asio::use_awaitable, ec));
  beast::flat_buffer buffer;
  http::response_parser<http::buffer_body> parser;
  parser.body_limit(boost::none);
  if (!ec) {
    co_await http::async_read_header(stream, buffer, parser,
                                     asio::redirect_error(asio::use_awaitable, ec));
  }
  if (ec) co_return make_error(ErrorCode::kUnavailable, transport_error(socket_path_, ec, setup));
  if (parser.get().result_int() != 200) {
    co_return make_error(ErrorCode::kFailed, "Docker engine answered " + target + " with HTTP " +
                                                 std::to_string(parser.get().result_int()));
  }
  stream.expires_never();  // a quiet stream is not a dead one; cancel() ends it
  control->close = [&stream] { stream.close(); };
  struct Unset {
    StreamControl& c;
    ~Unset() { c.close = nullptr; }
  } unset{*control};
  char chunk[8192];
  while (!parser.is_done() && !control->cancelled) {
    parser.get().body().data = chunk;
    parser.get().body().size = sizeof chunk;
    // read_some: each event must be handled as it comes, not when 8 KiB have piled up.
    co_await http::async_read_some(stream, buffer, parser,
                                   asio::redirect_error(asio::use_awaitable, ec));
    if (ec == http::error::need_buffer) ec = {};
    const size_t got = sizeof chunk - parser.get().body().size;
    if (got > 0 && !control->cancelled) on_data(std::string_view(chunk, got));
    if (ec) break;
  }
  if (control->cancelled) co_return Status{};
  if (ec)
    co_return make_error(ErrorCode::kUnavailable,
                         "Docker stream " + target + " broke: " + ec.message());
  co_return make_error(ErrorCode::kUnavailable, "Docker engine ended the stream " + target);
}

std::string docker_message(const DockerReply& reply) {
  const auto json = nlohmann::json::parse(reply.body, nullptr, false);
  if (json.is_object() && json.contains("message") && json["message"].is_string()) {
    return json["message"].get<std::string>();
  }
  std::string text = reply.body.substr(0, 200);
  while (!text.empty() && (text.back() == '\n' || text.back() == '\r')) text.pop_back();
  return text.empty() ? "HTTP " + std::to_string(reply.status) : text;
}

}  // namespace gpuvisor
