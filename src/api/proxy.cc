#include "api/proxy.h"

#include <spdlog/spdlog.h>
#include <sys/socket.h>

#include <array>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http/buffer_body.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/write.hpp>
#include <cerrno>
#include <limits>
#include <optional>

#include "api/await.h"
#include "api/responses.h"
#include "core/url.h"

namespace gpuvisor {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using nlohmann::json;

namespace {

// The busy hold outlives the last request by this much, so a service that serves one request
// after another is not flipped between ready and busy (and evented) each time.
constexpr auto kLinger = std::chrono::seconds(1);
constexpr size_t kRelayBuffer = 16 * 1024;
constexpr size_t kFirstRead = 4096;  // enough for the head of most answers, and small ones whole
constexpr uint64_t kWholeLimit = 64 * 1024;

// Connection-level headers: they describe one hop, never forwarded (RFC 9110 7.6.1).
void drop_hop_headers(http::fields& f) {
  for (const auto field : {http::field::connection, http::field::keep_alive,
                           http::field::proxy_authenticate, http::field::proxy_authorization,
                           http::field::te, http::field::trailer, http::field::upgrade}) {
    f.erase(field);
  }
}

// The "model" of an OpenAI-style request: a JSON body's field, or a multipart/form-data part
// (audio transcriptions).
std::optional<std::string> model_of(const HttpRequest& request) {
  const std::string_view type = request[http::field::content_type];
  const std::string& body = request.body();
  if (type.find("multipart/form-data") != std::string_view::npos) {
    const auto name = body.find("name=\"model\"");
    if (name == std::string::npos) return std::nullopt;
    const auto start = body.find("\r\n\r\n", name);
    if (start == std::string::npos) return std::nullopt;
    const auto end = body.find("\r\n", start + 4);
    if (end == std::string::npos) return std::nullopt;
    return body.substr(start + 4, end - start - 4);
  }
  const auto parsed = json::parse(body, nullptr, false);
  if (!parsed.is_object() || !parsed.contains("model") || !parsed["model"].is_string()) {
    return std::nullopt;
  }
  return parsed["model"].get<std::string>();
}

// Whether the buffer holds a response's whole head (its blank line), so that no wait follows.
bool whole_head(const beast::flat_buffer& buffer) {
  const std::string_view text(static_cast<const char*>(buffer.data().data()), buffer.size());
  return text.find("\r\n\r\n") != std::string_view::npos;
}

// A message's header fields as they go on the wire, each ending in CRLF.
void append_fields(std::string& wire, const http::fields& fields) {
  for (const auto& field : fields) {
    wire.append(field.name_string());
    wire += ": ";
    wire.append(field.value());
    wire += "\r\n";
  }
}

HttpResponse proxy_error(const HttpRequest& request, const Error& error,
                         std::optional<int> retry_after = std::nullopt) {
  HttpResponse response = error_response(request, error);
  if (retry_after) response.set(http::field::retry_after, std::to_string(*retry_after));
  return response;
}

}  // namespace

struct Proxy::Route {
  Route(asio::any_io_executor executor, const ServiceSpec& spec, ProxyStats& counted)
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

  std::string service;
  HttpUrl upstream;  // proxy.url, parsed once (the config checked it)
  UpstreamPool::Upstream endpoint;
  ProxyStats& stats;
  unsigned in_flight = 0;        // requests holding the service busy
  std::optional<uint64_t> hold;  // the supervisor's token for that
  // The hold is let go kLinger after the last request left. One timer runs while the route is
  // idle and re-arms itself for what is left, so that requests never arm or cancel it.
  asio::steady_timer linger;
  bool linger_armed = false;
  std::chrono::steady_clock::time_point last_left;
  unsigned slots = 0;                                     // requests past the concurrency gate
  std::deque<std::shared_ptr<asio::steady_timer>> queue;  // waiting for a slot
};

Proxy::Proxy(asio::any_io_executor executor, Supervisor& supervisor, const Config& config)
    : executor_(executor), supervisor_(supervisor), config_(config), pool_(executor) {}

Proxy::~Proxy() {
  *alive_ = false;
}

bool Proxy::owns(std::string_view target) {
  return target.rfind("/upstream/", 0) == 0 || target.rfind("/v1/", 0) == 0;
}

Proxy::Route& Proxy::route(const ServiceSpec& spec) {
  auto& r = routes_[spec.name];
  if (!r) r = std::make_unique<Route>(executor_, spec, stats_[spec.name]);
  return *r;
}

bool Proxy::held(const Route& r) const {
  return r.hold && supervisor_.held(r.service, *r.hold);
}

Result<Proxy::Target> Proxy::resolve(const HttpRequest& request) const {
  const std::string_view target = request.target();
  if (target.rfind("/upstream/", 0) == 0) {
    const std::string_view rest = target.substr(std::strlen("/upstream/"));
    const auto cut = rest.find_first_of("/?");
    const std::string name(rest.substr(0, cut));
    const ServiceSpec* spec = config_.find(name);
    if (spec == nullptr) return make_error(ErrorCode::kNotFound, "no service '" + name + "'");
    if (spec->proxy.url.empty()) {
      return make_error(ErrorCode::kNotFound,
                        "service '" + name + "' has no proxy url: it is not proxied");
    }
    std::string path = cut == std::string_view::npos ? "/" : std::string(rest.substr(cut));
    if (path.front() == '?') path = "/" + path;
    return Target{spec, path};
  }
  const auto model = model_of(request);
  if (!model) {
    return make_error(ErrorCode::kBadRequest,
                      "a /v1 request names its model: a JSON body with a \"model\" string (or a "
                      "\"model\" form field)");
  }
  std::string known;
  for (const auto& s : config_.services) {
    for (const auto& m : s.proxy.models) {
      if (m == *model) return Target{&s, std::string(target)};
      known += (known.empty() ? "" : ", ") + m;
    }
  }
  return make_error(ErrorCode::kNotFound, "no service serves model '" + *model + "'" +
                                              (known.empty() ? "" : " (known: " + known + ")"));
}

// GET /v1/models: every model the config routes, answered here without starting anything.
HttpResponse Proxy::models(const HttpRequest& request) const {
  json data = json::array();
  for (const auto& s : config_.services) {
    for (const auto& m : s.proxy.models) {
      data.push_back({{"id", m}, {"object", "model"}, {"owned_by", s.name}});
    }
  }
  return json_response(request, http::status::ok, {{"object", "list"}, {"data", data}});
}

asio::awaitable<bool> Proxy::handle(beast::tcp_stream& client, HttpRequest& request) {
  const bool keep = request.keep_alive();
  if (request.method() == http::verb::get && request.target() == "/v1/models") {
    HttpResponse response = models(request);
    co_return co_await write_response(client, response) && keep;
  }
  auto target = resolve(request);
  if (!target) {
    HttpResponse response = proxy_error(request, target.error());
    co_return co_await write_response(client, response) && keep;
  }
  const ServiceSpec& spec = *target->spec;
  Route& r = route(spec);
  ProxyStats& stats = r.stats;
  ++stats.requests;
  Status entered;
  if (spec.proxy.concurrency == 0 && held(r)) {
    // The service is ready and held for requests already: nothing to wait for.
    ++r.slots;
    ++r.in_flight;
  } else {
    entered = co_await enter(r, spec);
  }
  if (!entered) {
    ++stats.errors;
    const bool waited_out = entered.error().code == ErrorCode::kTimeout;
    Error error = entered.error();
    if (waited_out) error.code = ErrorCode::kUnavailable;  // 503, not 504: come back later
    HttpResponse response = proxy_error(
        request, error,
        waited_out ? std::optional<int>(
                         static_cast<int>(std::max<int64_t>(1, spec.proxy.wait.count() / 10'000)))
                   : std::nullopt);
    ++stats.responses[response.result_int()];
    co_return co_await write_response(client, response) && keep;
  }
  const bool again = co_await forward(client, request, *target, r);
  leave(r);
  co_return again&& keep;
}

asio::awaitable<Status> Proxy::enter(Route& r, const ServiceSpec& spec) {
  const std::weak_ptr<bool> alive = alive_;
  const auto deadline = std::chrono::steady_clock::now() + spec.proxy.wait;
  if (spec.proxy.concurrency > 0 && r.slots >= spec.proxy.concurrency) {
    auto turn = std::make_shared<asio::steady_timer>(executor_, deadline);
    r.queue.push_back(turn);
    boost::system::error_code ec;
    co_await turn->async_wait(asio::redirect_error(asio::use_awaitable, ec));
    if (alive.expired()) co_return make_error(ErrorCode::kUnavailable, "daemon is shutting down");
    if (!ec) {  // the deadline, not a slot
      std::erase(r.queue, turn);
      co_return make_error(ErrorCode::kTimeout, "'" + spec.name + "' has " +
                                                    std::to_string(spec.proxy.concurrency) +
                                                    " requests running and no slot freed within " +
                                                    format_duration(spec.proxy.wait));
    }
    // leave() passed its slot on: counted already.
  } else {
    ++r.slots;
  }
  if (!held(r)) {
    r.hold.reset();
    const auto left =
        std::chrono::duration_cast<Millis>(deadline - std::chrono::steady_clock::now());
    const auto ensure = [this, &spec, left](auto done) {
      supervisor_.ensure(spec.name, std::max(left, Millis(1)), done);
    };
    auto ready = co_await await_result<ServiceView>(ensure);
    if (alive.expired()) co_return make_error(ErrorCode::kUnavailable, "daemon is shutting down");
    if (!*ready) {
      r.pass_slot();
      co_return ready->error();
    }
    // Another request may have taken the hold while this one waited.
    if (!held(r)) {
      auto hold = supervisor_.acquire(spec.name, "serving proxied requests");
      if (!hold) {
        r.pass_slot();
        co_return hold.error();
      }
      r.hold = *hold;
    }
  }
  ++r.in_flight;
  co_return Status{};
}

void Proxy::leave(Route& r) {
  r.pass_slot();
  if (--r.in_flight > 0 || !r.hold) return;
  r.last_left = std::chrono::steady_clock::now();
  if (!r.linger_armed) linger(r, kLinger);
}

void Proxy::linger(Route& r, std::chrono::steady_clock::duration after) {
  r.linger_armed = true;
  r.linger.expires_after(after);
  r.linger.async_wait(
      [this, &r, alive = std::weak_ptr<bool>(alive_)](boost::system::error_code ec) {
        if (alive.expired()) return;
        r.linger_armed = false;
        // Busy again: the request that takes in_flight back to 0 arms the timer anew.
        if (ec || r.in_flight > 0 || !r.hold) return;
        const auto idle = std::chrono::steady_clock::now() - r.last_left;
        if (idle < kLinger) {
          linger(r, kLinger - idle);
          return;
        }
        supervisor_.release(r.service, *r.hold);
        r.hold.reset();
      });
}

asio::awaitable<bool> Proxy::forward(beast::tcp_stream& client, HttpRequest& request,
                                     const Target& target, Route& route) {
  const std::string& base = route.upstream.target;
  const UpstreamPool::Upstream& endpoint = route.endpoint;
  ProxyStats& stats = route.stats;
  const auto started = std::chrono::steady_clock::now();
  const bool head = request.method() == http::verb::head;

  const bool client_keep = request.keep_alive();
  HttpRequest up = std::move(request);  // the client's request is not needed after this
  // A proxy url with a path (http://host:port/base) prefixes every forwarded path.
  up.target((base.empty() || base == "/" ? "" : base) + target.path);
  drop_hop_headers(up);
  up.set(http::field::host, endpoint.key);
  up.erase(http::field::authorization);  // gpuvisor's key, not the service's
  up.keep_alive(true);
  up.prepare_payload();
  // Head and body in one gathered send, without Beast's serializer: this is the hot path.
  std::string up_head(up.method_string());
  up_head += ' ';
  up_head.append(up.target());
  up_head += up.version() == 10 ? " HTTP/1.0\r\n" : " HTTP/1.1\r\n";
  append_fields(up_head, up);
  up_head += "\r\n";
  const std::array<asio::const_buffer, 2> up_wire{asio::buffer(up_head), asio::buffer(up.body())};

  // The client leaving closes the upstream request, whether it is still waiting for the head
  // or reading the body: its socket turning readable with nothing to read means it hung up (a
  // pipelined next request leaves it alone). The watch is armed only once the proxy has to
  // wait for the service: an answer that is already there needs none, and under load most are.
  struct Watch {
    bool armed = false;
    bool active = true;
    asio::ip::tcp::socket* upstream = nullptr;
  };
  auto watch = std::make_shared<Watch>();
  const auto start_watching = [&client, watch] {
    if (watch->armed) return;
    watch->armed = true;
    client.socket().async_wait(
        asio::socket_base::wait_read, [watch, &client](boost::system::error_code e) {
          if (e || !watch->active) return;
          char byte = 0;
          const ssize_t n =
              recv(client.socket().native_handle(), &byte, 1, MSG_PEEK | MSG_DONTWAIT);
          if (n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK)) {
            watch->active = false;
            boost::system::error_code ignored;
            if (watch->upstream != nullptr) watch->upstream->close(ignored);
          }
        });
  };
  const auto stop_watching = [&client, watch] {
    watch->active = false;
    if (!watch->armed) return;
    boost::system::error_code ignored;
    client.socket().cancel(ignored);
  };

  UpstreamPool::Lease lease;
  std::optional<http::response_parser<http::buffer_body>> reading;
  boost::system::error_code ec;
  std::string failure;
  // A kept-alive connection the service closed meanwhile fails at once: one retry, fresh.
  for (int attempt = 0; attempt < 2; ++attempt) {
    auto taken = co_await pool_.take(endpoint, attempt > 0);
    if (!taken) {
      failure = taken.error().message;
      break;
    }
    lease = std::move(*taken);
    asio::ip::tcp::socket& socket = lease.connection->socket;
    beast::flat_buffer& buffer = lease.connection->buffer;
    watch->upstream = &socket;
    if (!watch->active) {  // it hung up while the connection was being made
      lease.connection.reset();
      break;
    }
    buffer.clear();
    reading.emplace();
    reading->body_limit(std::numeric_limits<std::uint64_t>::max());
    if (head) reading->skip(true);
    ec = {};
    co_await asio::async_write(socket, up_wire, asio::redirect_error(asio::use_awaitable, ec));
    if (!ec) {
      // What has come already, without waiting (the pool's sockets are non-blocking); the
      // parser takes it from the buffer before it reads the socket again.
      const size_t got = socket.read_some(buffer.prepare(kFirstRead), ec);
      if (!ec) buffer.commit(got);
      if (ec == asio::error::would_block || ec == asio::error::try_again) {
        ec = {};
        start_watching();
      } else if (!ec && !whole_head(buffer)) {
        start_watching();  // the rest of the head is still to come, perhaps not soon
      }
    }
    if (!ec) {
      co_await http::async_read_header(socket, buffer, *reading,
                                       asio::redirect_error(asio::use_awaitable, ec));
    }
    if (!ec) break;
    failure = ec.message();
    watch->upstream = nullptr;
    lease.connection.reset();
    if (!lease.reused || !watch->active) break;
  }
  if (!lease.connection) {
    const bool gone = !watch->active;
    stop_watching();
    if (gone) {
      ++stats.client_gone;
      co_return false;
    }
    ++stats.errors;
    HttpResponse response =
        proxy_error(up, make_error(ErrorCode::kUnavailable,
                                   "service '" + target.spec->name + "' did not answer at " +
                                       target.spec->proxy.url + ": " + failure));
    response.result(http::status::bad_gateway);
    response.keep_alive(client_keep);
    ++stats.responses[502];
    co_return co_await write_response(client, response);
  }
  const double to_head =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  for (size_t i = 0; i < std::size(ProxyStats::kBuckets); ++i) {
    if (to_head <= ProxyStats::kBuckets[i]) ++stats.latency_counts[i];
  }
  ++stats.latency_count;
  stats.latency_sum += to_head;

  auto& parser = *reading;
  auto& response = parser.get();
  ++stats.responses[response.result_int()];
  const bool upstream_keep = response.keep_alive();
  drop_hop_headers(response);
  response.keep_alive(client_keep);

  asio::ip::tcp::socket& upstream = lease.connection->socket;
  beast::flat_buffer& buffer = lease.connection->buffer;
  // A small response of known length, not a stream: head and body go out in one send.
  // Everything else is relayed piece by piece as it comes. (The parser's Content-Length: the
  // message's own payload_size() knows nothing of a buffer_body.)
  const auto length = parser.content_length();
  const bool event_stream =
      response[http::field::content_type].find("text/event-stream") != std::string_view::npos;
  if (head || response.chunked() || !length || *length > kWholeLimit || event_stream) {
    start_watching();  // a stream may go quiet for a long time: a hang-up must still end it
    const Relayed relayed = co_await relay(client, upstream, buffer, parser);
    const bool hung_up = !watch->active;
    stop_watching();
    if (relayed == Relayed::kClientGone || hung_up) ++stats.client_gone;
    const bool whole = relayed == Relayed::kWhole && !hung_up;
    if (whole && parser.is_done() && upstream_keep && upstream.is_open()) {
      pool_.give_back(endpoint, std::move(lease.connection));
    }
    // A response cut short cannot be mended: the client's connection goes too.
    co_return whole;
  }
  std::string wire = "HTTP/1.1 " + std::to_string(response.result_int()) + " ";
  wire.append(response.reason());
  wire += "\r\n";
  append_fields(wire, response);
  wire += "\r\n";
  // Usually the body came with the head and is in the buffer already.
  const auto size = static_cast<size_t>(*length);
  const bool in_buffer = buffer.size() >= size;
  std::string rest;
  if (!in_buffer && !co_await read_rest(upstream, buffer, parser, rest)) {
    stop_watching();
    ++stats.client_gone;
    co_return false;
  }
  const bool hung_up = !watch->active;
  stop_watching();
  if (hung_up) {
    ++stats.client_gone;
    co_return false;
  }
  const std::array<asio::const_buffer, 2> out{
      asio::buffer(wire), in_buffer ? asio::buffer(buffer.data(), size) : asio::buffer(rest)};
  co_await asio::async_write(client, out, asio::redirect_error(asio::use_awaitable, ec));
  if (in_buffer) buffer.consume(size);
  if (!ec && upstream_keep && upstream.is_open()) {
    pool_.give_back(endpoint, std::move(lease.connection));
  }
  if (ec) ++stats.client_gone;
  co_return !ec;
}

// The rest of a small body that did not come with its head. A coroutine of its own, as is
// relay(): the frame of forward(), allocated for every request, stays small.
asio::awaitable<bool> Proxy::read_rest(asio::ip::tcp::socket& upstream, beast::flat_buffer& buffer,
                                       http::response_parser<http::buffer_body>& parser,
                                       std::string& body) {
  http::response_parser<http::string_body> whole(std::move(parser));
  boost::system::error_code ec;
  co_await http::async_read(upstream, buffer, whole, asio::redirect_error(asio::use_awaitable, ec));
  if (ec) co_return false;
  body = std::move(whole.get().body());
  co_return true;
}

asio::awaitable<Proxy::Relayed> Proxy::relay(beast::tcp_stream& client,
                                             asio::ip::tcp::socket& upstream,
                                             beast::flat_buffer& buffer,
                                             http::response_parser<http::buffer_body>& parser) {
  auto& response = parser.get();
  http::response_serializer<http::buffer_body> serializer(response);
  boost::system::error_code ec;
  co_await http::async_write_header(client, serializer,
                                    asio::redirect_error(asio::use_awaitable, ec));
  if (ec) co_return Relayed::kClientGone;
  const auto chunk = std::make_unique<char[]>(kRelayBuffer);
  while (!serializer.is_done()) {
    if (!parser.is_done()) {
      response.body().data = chunk.get();
      response.body().size = kRelayBuffer;
      // read_some: a token reaches the client as soon as the service writes it.
      co_await http::async_read_some(upstream, buffer, parser,
                                     asio::redirect_error(asio::use_awaitable, ec));
      if (ec == http::error::need_buffer) ec = {};
      if (ec) co_return Relayed::kUpstreamFailed;
      response.body().size = kRelayBuffer - response.body().size;
      response.body().data = chunk.get();
      response.body().more = !parser.is_done();
      // Only a chunk header was parsed: an empty chunk would read as the end of the body.
      if (response.body().size == 0 && response.body().more) continue;
    } else {
      response.body().data = nullptr;
      response.body().size = 0;
      response.body().more = false;
    }
    co_await http::async_write(client, serializer, asio::redirect_error(asio::use_awaitable, ec));
    if (ec == http::error::need_buffer) ec = {};
    if (ec) co_return Relayed::kClientGone;
  }
  co_return Relayed::kWhole;
}

}  // namespace gpuvisor
