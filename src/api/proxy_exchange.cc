// One proxied exchange: the request forwarded (its body streamed, or sent whole when it is here
// already), the response relayed and framed once for the client's hop, or the connection
// tunnelled after a protocol switch.

#include <array>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/buffers_suffix.hpp>
#include <boost/beast/http/read.hpp>
#include <cerrno>
#include <limits>
#include <optional>
#include <vector>

#include "api/proxy.h"
#include "api/proxy_route.h"
#include "api/responses.h"
#include "api/tunnel.h"
#include "api/wire.h"

namespace gpuvisor {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using asio::ip::tcp;
using wire::Framing;

namespace {

constexpr size_t kPiece = 16 * 1024;  // a piece of a streamed body
constexpr size_t kFirstRead = 4096;   // the head of most answers, and small ones whole
constexpr std::string_view kCrlf = "\r\n";

using ResponseParser = http::response_parser<http::buffer_body>;

// Whether the buffer holds a response's whole head (its blank line), so that no wait follows.
bool whole_head(const beast::flat_buffer& buffer) {
  const std::string_view text(static_cast<const char*>(buffer.data().data()), buffer.size());
  return text.find("\r\n\r\n") != std::string_view::npos;
}

std::string_view view(const beast::flat_buffer& buffer, size_t size) {
  return {static_cast<const char*>(buffer.data().data()), size};
}

// The client's hang-up while the proxy waits for the service: its socket turning readable with
// nothing to read. A client that shut its sending side together with its request (nc -N, an
// HTTP/1.0 script) has not gone: it waits for the answer, and gets it. One that closes later,
// while the service is still working, has given up, and its upstream request is closed, so that
// the service stops work nobody waits for (nginx and Go do the same). A pipelined next request
// leaves the watch alone. Which of the two a close is, is looked at when the watch is first
// needed (an answer that is there at once needs none, and no system call is spent on it),
// unless the caller looked before it forwarded.
class HangupWatch {
 public:
  HangupWatch(beast::tcp_stream& client, std::optional<bool> shut)
      : client_(client), shut_(shut), stopped_(shut.value_or(false)) {}
  ~HangupWatch() { stop(); }
  HangupWatch(const HangupWatch&) = delete;
  HangupWatch& operator=(const HangupWatch&) = delete;

  // Looks once, without waiting: has the client already shut its sending side?
  bool half_closed() const { return peek_client(client_.socket()) == 0; }
  void upstream(tcp::socket* socket) {
    upstream_ = socket;
    if (state_) state_->upstream = socket;
  }
  // The client shut its side with its request: no watch, and the connection ends after.
  bool shut() const { return shut_.value_or(false); }
  void decide_shut(bool shut) {
    shut_ = shut;
    if (shut) stop();
  }
  void arm() {
    if (!shut_) decide_shut(half_closed());
    if (stopped_ || state_) return;
    // Shared with the wait, which may complete after the exchange (cancelled) is over.
    state_ = std::make_shared<State>();
    state_->upstream = upstream_;
    client_.socket().async_wait(
        tcp::socket::wait_read, [state = state_, &client = client_](boost::system::error_code e) {
          if (e || !state->active) return;
          const ssize_t n = peek_client(client.socket());
          if (n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK)) {
            state->active = false;
            state->gone = true;
            boost::system::error_code ignored;
            if (state->upstream != nullptr) state->upstream->close(ignored);
          }
        });
  }
  bool gone() const { return state_ && state_->gone; }
  void stop() {
    if (stopped_) return;
    stopped_ = true;
    if (!state_ || !state_->active) return;
    state_->active = false;
    boost::system::error_code ignored;
    client_.socket().cancel(ignored);
  }

 private:
  struct State {
    bool active = true;
    bool gone = false;
    tcp::socket* upstream = nullptr;
  };
  beast::tcp_stream& client_;
  std::optional<bool> shut_;
  bool stopped_;
  tcp::socket* upstream_ = nullptr;
  std::shared_ptr<State> state_;  // while armed
};

// Writes size bytes of data as one piece of a body framed as framing: a chunk, or as they are.
// last: the body ends with them (the chunked coding's last chunk follows, with trailers).
template <typename Stream>
asio::awaitable<bool> write_piece(Stream& to, Framing framing, const char* data, size_t size,
                                  const std::string* last) {
  std::string header;
  std::array<asio::const_buffer, 4> out;
  size_t n = 0;
  if (framing == Framing::kChunked && size > 0) {
    wire::append_chunk_header(header, size);
    out[n++] = asio::buffer(header);
  }
  if (size > 0) out[n++] = asio::buffer(data, size);
  if (framing == Framing::kChunked && size > 0) out[n++] = asio::buffer(kCrlf.data(), kCrlf.size());
  if (framing == Framing::kChunked && last != nullptr) out[n++] = asio::buffer(*last);
  if (n == 0) co_return true;
  boost::system::error_code ec;
  co_await asio::async_write(to, std::span(out.data(), n),
                             asio::redirect_error(asio::use_awaitable, ec));
  co_return !ec;
}

enum class Pumped { kWhole, kReaderFailed, kWriterFailed };

// The rest of a message's body, read through parser from `from` and written to `to` as it
// comes, framed for to's hop. A token reaches the client as soon as the service writes it.
template <typename From, typename To, bool isRequest>
asio::awaitable<Pumped> pump(From& from, beast::flat_buffer& buffer,
                             http::parser<isRequest, http::buffer_body>& parser, To& to,
                             Framing framing, size_t head_fields) {
  const auto piece = std::make_unique<char[]>(kPiece);
  auto& body = parser.get().body();
  for (;;) {
    size_t got = 0;
    if (!parser.is_done()) {
      body.data = piece.get();
      body.size = kPiece;
      boost::system::error_code ec;
      co_await http::async_read_some(from, buffer, parser,
                                     asio::redirect_error(asio::use_awaitable, ec));
      if (ec && ec != http::error::need_buffer) co_return Pumped::kReaderFailed;
      got = kPiece - body.size;
    }
    const bool done = parser.is_done();
    if (got == 0 && !done) continue;  // only a chunk's header came
    std::string last;
    if (done && framing == Framing::kChunked) last = wire::last_chunk(parser.get(), head_fields);
    if (!co_await write_piece(to, framing, piece.get(), got, done ? &last : nullptr)) {
      co_return Pumped::kWriterFailed;
    }
    if (done) co_return Pumped::kWhole;
  }
}

// Sends what the socket takes at once (gpuvisor's sockets are non-blocking), which spares a
// trip through the scheduler on the hot path; returns how much, 0 on would-block.
template <typename Buffers>
size_t send_now(tcp::socket& socket, const Buffers& buffers, boost::system::error_code& ec) {
  const size_t sent = socket.write_some(buffers, ec);
  if (ec != asio::error::would_block && ec != asio::error::try_again) return sent;
  ec = {};
  return 0;
}

// Parses a response head that the buffer holds whole; false if it does not (read more).
bool head_in(beast::flat_buffer& buffer, ResponseParser& parser, boost::system::error_code& ec) {
  if (!whole_head(buffer)) return false;
  buffer.consume(parser.put(buffer.data(), ec));
  if (ec != http::error::need_more) return true;
  ec = {};
  return false;
}

size_t field_count(const http::fields& fields) {
  return static_cast<size_t>(std::distance(fields.begin(), fields.end()));
}

}  // namespace

// One exchange's state, from the request forwarded to the response relayed. It lives in
// exchange()'s coroutine frame, which outlives every step's co_await, so the steps keep
// references to it. The hot path (a body here whole, a kept-alive connection, a small answer
// there at once) runs in exchange() itself and in plain functions: a coroutine step costs a
// frame, so only the slow paths (a streamed upload, a stream, a tunnel, a 502) have one.
struct Proxy::Exchange {
  Exchange(Incoming& incoming, const Target& to, Route& r, std::string& routed,
           UpstreamPool& upstreams, bool strip_authorization);
  Exchange(const Exchange&) = delete;
  Exchange& operator=(const Exchange&) = delete;

  // The request's head for the service, in the connection's storage for it; the connection's
  // buffer emptied for the answer.
  void compose_head();
  // The head, what routing read of the body, then the rest as the client sends it.
  asio::awaitable<void> send_streamed();
  // The answer's parser, and what has come of the answer already, read without waiting.
  void read_at_once();
  // After a head is parsed: whether it was an interim answer, a fresh parser then set up for
  // the next one.
  bool interim();
  // The attempt failed (ec) and its connection is dropped: whether to try again on a fresh one.
  bool retry_fresh();
  // A parser for the answer's head, its body let through whatever its size (HEAD: none).
  void fresh_parser();
  // The service did not answer: 502.
  asio::awaitable<bool> bad_gateway();
  // A 101: the switch, then the tunnel; the client's connection is the tunnel's.
  asio::awaitable<bool> switch_protocols();
  // The response's framing on the client's hop and its head as the client gets it. Returns the
  // body's size where it is here whole (head and body then go in one send); none where it is
  // relayed as it comes (relay_stream).
  std::optional<size_t> frame_response(unsigned status);
  // Piece by piece as the service writes it.
  asio::awaitable<bool> relay_stream();
  // The response relayed to its end: the service's connection back to the pool, where both
  // sides keep it.
  void keep_connection();
  // The client left before the response ended: counted, and its connection ends.
  bool client_gone() {
    ProxyStats::add(stats.client_gone);
    return false;
  }

  Incoming& in;
  const Target& target;
  Route& route;
  std::string& body;  // what routing read of the request body
  const RequestHead& head;
  RequestParser& request;
  ProxyStats& stats;
  UpstreamPool& pool;
  const std::chrono::steady_clock::time_point started;
  const bool upgrade;
  const bool no_response_body;
  const unsigned client_version;
  bool client_keep;

  // The request body as forwarded: whole (it was read to route it, or it came with the head),
  // or streamed through as it comes. Only a whole one can be sent again on a fresh connection.
  const boost::optional<std::uint64_t> length;
  const bool whole;
  const bool in_buffer;
  const bool replayable;
  const std::string path;
  wire::RequestLine line;
  std::string_view up_body;
  // Fields past these, after a chunked body, are its trailers.
  const size_t head_fields;

  HangupWatch watch;
  UpstreamPool::Lease lease;
  std::optional<ResponseParser> reading;
  bool client_failed = false;
  boost::system::error_code ec;
  std::string failure;

  // The response, once its head is in.
  Framing framing = Framing::kNone;  // on the client's hop
  bool upstream_keep = false;        // the service's connection may carry another request
};

Proxy::Exchange::Exchange(Incoming& incoming, const Target& to, Route& r, std::string& routed,
                          UpstreamPool& upstreams, bool strip_authorization)
    : in(incoming),
      target(to),
      route(r),
      body(routed),
      head(in.head()),
      request(in.parser),
      stats(route.counted()),
      pool(upstreams),
      started(std::chrono::steady_clock::now()),
      upgrade(wire::wants_upgrade(head)),
      no_response_body(head.method() == http::verb::head),
      client_version(head.version()),
      client_keep(keep_alive(head) && !upgrade),
      length(request.content_length()),
      whole(request.is_done()),
      in_buffer(!whole && body.empty() && length && in.buffer.size() >= *length),
      replayable(whole || in_buffer),
      path((target.as_is || route.upstream.target.empty() || route.upstream.target == "/"
                ? ""
                : route.upstream.target) +
           target.path),
      head_fields(field_count(request.get())),
      watch(in.stream, target.client_shut) {
  line.target = path;
  line.host = target.as_is ? std::string_view() : std::string_view(route.endpoint.key);
  line.strip_authorization = strip_authorization && !target.as_is;
  line.upgrade = upgrade;
  if (whole) {
    if (length || request.chunked() || !body.empty()) line.framing = Framing::kLength;
    line.length = body.size();
    up_body = body;
  } else if (length) {
    line.framing = Framing::kLength;
    line.length = *length;
    if (in_buffer) up_body = view(in.buffer, *length);
  } else {
    line.framing = Framing::kChunked;
  }
}

void Proxy::Exchange::compose_head() {
  lease.connection->buffer.clear();
  std::string& up_head = lease.connection->head;
  up_head.clear();
  wire::request_head(up_head, head, line);
  ec = {};
}

asio::awaitable<void> Proxy::Exchange::send_streamed() {
  tcp::socket& socket = lease.connection->socket;
  std::string& up_head = lease.connection->head;
  if (!body.empty() && line.framing == Framing::kChunked) {
    wire::append_chunk_header(up_head, body.size());
    up_head += body;
    up_head += kCrlf;
  } else {
    up_head += body;
  }
  co_await asio::async_write(socket, asio::buffer(up_head),
                             asio::redirect_error(asio::use_awaitable, ec));
  if (!ec && !co_await continue_if_expected(in)) client_failed = true;
  if (!ec && !client_failed) {
    const Pumped pumped =
        co_await pump(in.stream, in.buffer, request, socket, line.framing, head_fields);
    if (pumped == Pumped::kReaderFailed) client_failed = true;
    if (pumped == Pumped::kWriterFailed) ec = asio::error::broken_pipe;
  }
  // Its last byte read just now: a client that shut its side with it waits for the answer.
  if (!client_failed) watch.decide_shut(watch.half_closed());
}

void Proxy::Exchange::fresh_parser() {
  reading.emplace();
  reading->body_limit(std::numeric_limits<std::uint64_t>::max());
  if (no_response_body) reading->skip(true);
}

void Proxy::Exchange::read_at_once() {
  tcp::socket& socket = lease.connection->socket;
  beast::flat_buffer& buffer = lease.connection->buffer;
  watch.upstream(&socket);
  fresh_parser();
  if (ec) return;
  // What has come already, without waiting (the pool's sockets are non-blocking); the parser
  // takes it from the buffer before it reads the socket again.
  const size_t got = socket.read_some(buffer.prepare(kFirstRead), ec);
  if (!ec) buffer.commit(got);
  if (ec == asio::error::would_block || ec == asio::error::try_again) {
    ec = {};
    watch.arm();
  } else if (!ec && !whole_head(buffer)) {
    watch.arm();  // the rest of the head is still to come, perhaps not soon
  }
}

bool Proxy::Exchange::interim() {
  const unsigned status = reading->get().result_int();
  if (ec || status >= 200 || (status == 101 && upgrade)) return false;
  fresh_parser();
  watch.arm();
  return true;
}

bool Proxy::Exchange::retry_fresh() {
  failure = ec.message();
  watch.upstream(nullptr);
  lease.connection.reset();
  return lease.reused && replayable && !watch.gone();
}

asio::awaitable<bool> Proxy::Exchange::bad_gateway() {
  ProxyStats::add(stats.errors);
  HttpResponse response = error_response(
      head,
      make_error(ErrorCode::kUnavailable, "service '" + target.spec->name + "' did not answer at " +
                                              target.spec->proxy.url + ": " + failure));
  response.result(http::status::bad_gateway);
  response.keep_alive(client_keep && (whole || in_buffer || request.is_done()));
  stats.respond(502);
  co_return co_await write_response(in.stream, response) && response.keep_alive();
}

asio::awaitable<bool> Proxy::Exchange::switch_protocols() {
  tcp::socket& upstream = lease.connection->socket;
  watch.stop();
  ProxyStats::add(stats.upgrades);
  ProxyStats::add(stats.tunnels_opened);
  // The switch, with whatever the service sent after it, then what the client sent early.
  std::string& switched = lease.connection->head;
  switched.clear();
  wire::response_head(switched, reading->get(), Framing::kNone, 0, true, 11);
  const std::array<asio::const_buffer, 2> out{asio::buffer(switched),
                                              lease.connection->buffer.data()};
  co_await asio::async_write(in.stream.socket(), out,
                             asio::redirect_error(asio::use_awaitable, ec));
  if (!ec && in.buffer.size() > 0) {
    co_await asio::async_write(upstream, in.buffer.data(),
                               asio::redirect_error(asio::use_awaitable, ec));
  }
  if (!ec) {
    auto end = std::make_shared<TunnelEnd>();
    end->socket = &upstream;
    {
      std::lock_guard lock(route.tunnels_mutex);
      route.tunnels.insert(end);
    }
    co_await tunnel(in.stream.socket(), upstream);
    end->open = false;
    std::lock_guard lock(route.tunnels_mutex);
    route.tunnels.erase(end);
  }
  ProxyStats::add(stats.tunnels_closed);
  co_return false;  // the connection was the tunnel's
}

std::optional<size_t> Proxy::Exchange::frame_response(unsigned status) {
  const ResponseParser& parser = *reading;
  const auto& response = parser.get();
  const bool has_body = !no_response_body && status >= 200 && status != 204 && status != 304;
  const auto response_length = parser.content_length();
  if (has_body) {
    if (response_length && !parser.chunked()) {
      framing = Framing::kLength;
    } else {
      // Chunked, or until the service closes: chunked for the client, whose connection can
      // then carry another request; an HTTP/1.0 client gets it until the close instead.
      framing = client_version >= 11 ? Framing::kChunked : Framing::kClose;
    }
  }
  const bool event_stream =
      response[http::field::content_type].find("text/event-stream") != std::string_view::npos;
  const bool here =
      framing == Framing::kNone ||
      (framing == Framing::kLength && lease.connection->buffer.size() >= *response_length);
  // A stream may go quiet for a long time: a hang-up must still end it.
  if (!here || event_stream) watch.arm();
  if (framing == Framing::kClose || watch.shut()) client_keep = false;
  // A body that ends with the service's close leaves nothing to keep.
  upstream_keep = response.keep_alive() && (!has_body || response_length || parser.chunked());
  std::string& out_head = lease.connection->head;  // the request's is sent: its storage is free
  out_head.clear();
  wire::response_head(out_head, response, framing, response_length.value_or(0), client_keep,
                      client_version);
  if (!here || event_stream) return std::nullopt;
  return framing == Framing::kNone ? 0 : static_cast<size_t>(*response_length);
}

asio::awaitable<bool> Proxy::Exchange::relay_stream() {
  tcp::socket& upstream = lease.connection->socket;
  ResponseParser& parser = *reading;
  co_await asio::async_write(in.stream, asio::buffer(lease.connection->head),
                             asio::redirect_error(asio::use_awaitable, ec));
  Pumped pumped = ec ? Pumped::kWriterFailed : Pumped::kWhole;
  if (!ec && !parser.is_done()) {
    pumped = co_await pump(upstream, lease.connection->buffer, parser, in.stream, framing,
                           field_count(parser.get()));
  }
  watch.stop();
  if (pumped == Pumped::kWriterFailed || watch.gone()) co_return client_gone();
  // A response cut short by the service cannot be mended: the client's connection goes too,
  // so that the client sees it short rather than take what follows for more of it.
  if (pumped == Pumped::kReaderFailed) co_return false;
  keep_connection();
  co_return client_keep;
}

void Proxy::Exchange::keep_connection() {
  // kClose comes only with a streamed body: one here whole is kNone or kLength.
  if (upstream_keep && framing != Framing::kClose && lease.connection->socket.is_open()) {
    pool.give_back(route.endpoint, std::move(lease.connection));
  }
}

asio::awaitable<bool> Proxy::exchange(Incoming& in, const Target& target, Route& route,
                                      std::string& body) {
  Exchange x(in, target, route, body, *pools_[IoThreads::current()], strip_authorization_);
  // A kept-alive connection the service closed meanwhile fails at once: one retry, fresh. A
  // streamed body cannot be sent twice, so it always goes on a fresh connection.
  for (int attempt = 0; attempt < 2; ++attempt) {
    if (attempt == 0 && x.replayable && !x.upgrade) x.lease = x.pool.take_idle(route.endpoint);
    if (!x.lease.connection) {
      auto made = co_await x.pool.connect(route.endpoint);
      if (!made) {
        x.failure = made.error().message;
        break;
      }
      x.lease = std::move(*made);
    }
    tcp::socket& socket = x.lease.connection->socket;
    beast::flat_buffer& buffer = x.lease.connection->buffer;
    x.compose_head();
    if (x.replayable) {
      const std::array<asio::const_buffer, 2> wire_out{asio::buffer(x.lease.connection->head),
                                                       asio::buffer(x.up_body)};
      co_await asio::async_write(socket, wire_out, asio::redirect_error(asio::use_awaitable, x.ec));
    } else {
      co_await x.send_streamed();
    }
    if (x.client_failed) break;
    x.read_at_once();
    // Interim answers (100 Continue, 103 Early Hints) are the service's business with
    // gpuvisor: the client gets the final one. A 101 is final where an upgrade was asked for.
    while (!x.ec) {
      // Usually all here already: parsed then without a coroutine frame or a read.
      if (!head_in(buffer, *x.reading, x.ec)) co_await read_head(socket, buffer, *x.reading, x.ec);
      if (!x.interim()) break;
    }
    if (!x.ec || !x.retry_fresh()) break;
  }
  if (x.client_failed || x.watch.gone()) co_return x.client_gone();
  if (x.in_buffer) in.buffer.consume(*x.length);  // sent, for good: kept until then for a retry
  if (!x.lease.connection) co_return co_await x.bad_gateway();
  x.stats.head_after(
      std::chrono::duration<double>(std::chrono::steady_clock::now() - x.started).count());
  const unsigned status = x.reading->get().result_int();
  x.stats.respond(status);
  if (status == 101) co_return co_await x.switch_protocols();
  const std::optional<size_t> size = x.frame_response(status);
  if (!size) co_return co_await x.relay_stream();

  // Small and complete: head and body in one send.
  beast::flat_buffer& buffer = x.lease.connection->buffer;
  x.watch.stop();
  if (x.watch.gone()) co_return x.client_gone();
  const std::array<asio::const_buffer, 2> out{asio::buffer(x.lease.connection->head),
                                              asio::buffer(view(buffer, *size))};
  const size_t sent = send_now(in.stream.socket(), out, x.ec);
  if (!x.ec && sent < asio::buffer_size(out)) {
    beast::buffers_suffix<decltype(out)> rest(out);
    rest.consume(sent);
    co_await asio::async_write(in.stream.socket(), rest,
                               asio::redirect_error(asio::use_awaitable, x.ec));
  }
  buffer.consume(*size);
  if (x.ec) co_return x.client_gone();
  x.keep_connection();
  co_return x.client_keep;
}

}  // namespace gpuvisor
