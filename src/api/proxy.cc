#include "api/proxy.h"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/http/read.hpp>
#include <optional>

#include "api/await.h"
#include "api/proxy_route.h"
#include "api/request_parts.h"
#include "api/responses.h"

namespace gpuvisor {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using nlohmann::json;

namespace {

// The busy hold outlives the last request by one to two of these, so a service that serves one
// request after another is not flipped between ready and busy (and evented) each time.
constexpr auto kLinger = std::chrono::seconds(1);
// The most of a /v1 body read to find its model before anything is forwarded: a form whose
// model field comes after a large file (as the OpenAI Node SDK sends them) is held to here.
constexpr size_t kRouteLimit = 1024ULL * 1024 * 1024;
constexpr size_t kRouteRead = 64 * 1024;

// Where a body's model is: known, not in it at all, or maybe in what has not come yet.
struct ModelSearch {
  std::optional<std::string> model;
  bool need_more = false;
};

// The "model" of an OpenAI-style request body: a JSON field (the whole body is needed), or a
// multipart/form-data part (audio transcriptions; found as soon as its value has come).
ModelSearch find_model(std::string_view type, const std::string& body, bool complete) {
  if (type.find("multipart/form-data") != std::string_view::npos) {
    const auto name = body.find("name=\"model\"");
    const auto start = name == std::string::npos ? name : body.find("\r\n\r\n", name);
    const auto end = start == std::string::npos ? start : body.find("\r\n", start + 4);
    if (end == std::string::npos) return {std::nullopt, !complete};
    return {body.substr(start + 4, end - start - 4), false};
  }
  if (!complete) return {std::nullopt, true};
  const auto parsed = json::parse(body, nullptr, false);
  if (!parsed.is_object() || !parsed.contains("model") || !parsed["model"].is_string()) {
    return {};
  }
  return {parsed["model"].get<std::string>(), false};
}

HttpResponse proxy_error(const RequestHead& head, const Error& error,
                         std::optional<int> retry_after = std::nullopt) {
  HttpResponse response = error_response(head, error);
  if (retry_after) response.set(http::field::retry_after, std::to_string(*retry_after));
  return response;
}

}  // namespace

Proxy::Proxy(asio::any_io_executor executor, Supervisor& supervisor, EventBus& events,
             const Config& config, bool strip_authorization, const IoThreads* threads)
    : executor_(executor),
      supervisor_(supervisor),
      events_(events),
      config_(config),
      strip_authorization_(strip_authorization) {
  const size_t n = threads == nullptr ? 0 : threads->size();
  pools_.push_back(std::make_unique<UpstreamPool>(executor));
  for (size_t i = 0; i < n; ++i)
    pools_.push_back(std::make_unique<UpstreamPool>(threads->executor(i)));
  for (const auto& s : config.services) {
    if (!s.proxy.url.empty()) routes_[s.name] = std::make_unique<Route>(executor, s, n + 1);
  }
  subscription_ = events_.subscribe([this](const Event& e) { on_event(e); });
}

Proxy::~Proxy() {
  *alive_ = false;
  events_.unsubscribe(subscription_);
}

bool Proxy::owns(std::string_view target) {
  return target.rfind("/upstream/", 0) == 0 || target.rfind("/v1/", 0) == 0;
}

std::map<std::string, ProxyCounts> Proxy::counts() const {
  std::map<std::string, ProxyCounts> all;
  for (const auto& [name, r] : routes_) {
    ProxyCounts& c = all[name];
    for (const auto& shard : r->stats) shard->add_to(c);
  }
  return all;
}

bool Proxy::held(const Route& r) const {
  return r.hold.active();
}

// A service that leaves ready and busy (it stops, fails, restarts) takes the proxy's hold with
// it, so requests go by the main thread again; and its open WebSockets: their peer is gone.
void Proxy::on_event(const Event& event) {
  if (event.type.rfind("queue.", 0) == 0) {
    for (auto& [name, r] : routes_) {
      // Draining, new requests go by the main thread, where they wait for the drain to end.
      if (supervisor_.draining(name)) r->open.store(false);
      r->awaited.store(supervisor_.awaited(name));
    }
    // Posted: the supervisor is inside a step of its own while it publishes.
    asio::post(executor_, [this, alive = std::weak_ptr<bool>(alive_)] {
      if (alive.expired()) return;
      for (auto& [name, r] : routes_) {
        if (r->awaited.load()) let_go_if_idle(*r);
      }
    });
    return;
  }
  if (event.type != "service.state_changed") return;
  const auto& to = event.data["to"];
  if (to == "ready" || to == "busy") return;
  const auto it = routes_.find(event.data["service"].get<std::string>());
  if (it == routes_.end()) return;
  Route& r = *it->second;
  r.open.store(false);
  r.hold.release();
  if (to == "stopping" || to == "stopped" || to == "error") r.close_tunnels();
}

Result<Proxy::Target> Proxy::by_path(std::string_view target) const {
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
  return Target{spec, std::move(path), false};
}

asio::awaitable<Result<Proxy::Target>> Proxy::by_model(Incoming& in, std::string& body) const {
  const std::string_view target = in.head().target();
  // "?model=": how a WebSocket (e.g. /v1/realtime) names its model, having no body.
  auto model = query_param(target, "model");
  if (!model) {
    const std::string_view type = in.head()[http::field::content_type];
    auto& parser = in.parser;
    ModelSearch found = find_model(type, body, parser.is_done());
    if (found.need_more && !co_await continue_if_expected(in)) {
      co_return make_error(ErrorCode::kBadRequest, "the client went away");
    }
    while (found.need_more) {
      if (body.size() >= kRouteLimit) {
        co_return make_error(ErrorCode::kTooLarge,
                             "a /v1 request names its model within its first " +
                                 std::to_string(kRouteLimit) + " bytes");
      }
      const size_t had = body.size();
      body.resize(had + kRouteRead);
      parser.get().body().data = body.data() + had;
      parser.get().body().size = kRouteRead;
      boost::system::error_code ec;
      co_await http::async_read_some(in.stream, in.buffer, parser,
                                     asio::redirect_error(asio::use_awaitable, ec));
      body.resize(had + kRouteRead - parser.get().body().size);
      if (ec && ec != http::error::need_buffer) {
        co_return make_error(ErrorCode::kBadRequest, "reading the request body: " + ec.message());
      }
      found = find_model(type, body, parser.is_done());
    }
    model = std::move(found.model);
  }
  if (!model) {
    co_return make_error(ErrorCode::kBadRequest,
                         "a /v1 request names its model: a JSON body with a \"model\" string, a "
                         "\"model\" form field, or ?model= in the query");
  }
  std::string known;
  for (const auto& s : config_.services) {
    for (const auto& m : s.proxy.models) {
      if (m == *model) co_return Target{&s, std::string(target), false};
      known += (known.empty() ? "" : ", ") + m;
    }
  }
  co_return make_error(ErrorCode::kNotFound, "no service serves model '" + *model + "'" +
                                                 (known.empty() ? "" : " (known: " + known + ")"));
}

// GET /v1/models: every model the config routes, answered here without starting anything.
HttpResponse Proxy::models(const RequestHead& head) const {
  json data = json::array();
  for (const auto& s : config_.services) {
    for (const auto& m : s.proxy.models) {
      data.push_back({{"id", m}, {"object", "model"}, {"owned_by", s.name}});
    }
  }
  return json_response(head, http::status::ok, {{"object", "list"}, {"data", data}});
}

asio::awaitable<bool> Proxy::answer(Incoming& in, HttpResponse response) {
  // An unread body would be taken for the next request.
  if (!in.parser.is_done()) response.keep_alive(false);
  const bool keep = response.keep_alive();
  co_return co_await write_response(in.stream, response) && keep;
}

asio::awaitable<bool> Proxy::handle(Incoming& in, const ServiceSpec* service) {
  const RequestHead& head = in.head();
  if (service == nullptr && head.method() == http::verb::get && head.target() == "/v1/models") {
    co_return co_await answer(in, models(head));
  }
  std::string body;  // what routing read of the body: it goes first
  // Not a conditional expression around the co_await: g++ 12 destroys its result twice.
  Result<Target> target = Target{service, std::string(head.target()), true};
  if (service == nullptr && head.target().rfind("/upstream/", 0) == 0) {
    target = by_path(head.target());
  } else if (service == nullptr) {
    target = co_await by_model(in, body);
  }
  if (!target) co_return co_await answer(in, proxy_error(head, target.error()));
  const ServiceSpec& spec = *target->spec;
  Route& r = *routes_.at(spec.name);  // resolve() found it proxied
  ProxyStats& stats = r.counted();
  ProxyStats::add(stats.requests);
  Status entered;
  // Ready and held for requests already: nothing to wait for, no thread to change.
  if (r.concurrency > 0 || !r.pass()) {
    // Looked at before the wait for a start or a slot, as the request's last byte is read: a
    // client that shut its side with it (nc -N, an HTTP/1.0 script) waits for the answer; one
    // that closes during the wait has given up (proxy_exchange.cc, HangupWatch).
    const auto length = in.parser.content_length();
    if (in.parser.is_done() || (length && body.empty() && in.buffer.size() >= *length)) {
      target->client_shut = peek_client(in.stream.socket()) == 0;
    }
    entered = co_await enter_on_main(r, spec);
  }
  if (!entered) {
    ProxyStats::add(stats.errors);
    const bool waited_out = entered.error().code == ErrorCode::kTimeout;
    Error error = entered.error();
    if (waited_out) error.code = ErrorCode::kUnavailable;  // 503, not 504: come back later
    HttpResponse response = proxy_error(
        head, error,
        waited_out ? std::optional<int>(
                         static_cast<int>(std::max<int64_t>(1, spec.proxy.wait.count() / 10'000)))
                   : std::nullopt);
    stats.respond(response.result_int());
    co_return co_await answer(in, std::move(response));
  }
  const bool again = co_await exchange(in, *target, r, body);
  leave(r);
  co_return again;
}

asio::awaitable<Status> Proxy::enter_on_main(Route& r, const ServiceSpec& spec) {
  if (IoThreads::current() == 0) co_return co_await enter(r, spec);
  auto on_main = asio::co_spawn(executor_, enter(r, spec), asio::use_awaitable);
  co_return co_await std::move(on_main);
}

asio::awaitable<Status> Proxy::enter(Route& r, const ServiceSpec& spec) {
  const std::weak_ptr<bool> alive = alive_;
  const auto deadline = std::chrono::steady_clock::now() + spec.proxy.wait;
  if (r.concurrency > 0 && r.slots >= r.concurrency) {
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
  } else if (r.concurrency > 0) {
    ++r.slots;
  }
  // Draining, the route's hold stays with the requests in flight; this one waits for its turn.
  if (!held(r) || supervisor_.draining(spec.name)) {
    if (!held(r)) r.hold.release();
    const auto left =
        std::chrono::duration_cast<Millis>(deadline - std::chrono::steady_clock::now());
    const auto ensure_held = [this, &spec, left](auto done) {
      supervisor_.ensure_held(spec.name, std::max(left, Millis(1)), "serving proxied requests",
                              done);
    };
    auto hold = co_await await_result<Hold>(ensure_held);
    if (alive.expired()) co_return make_error(ErrorCode::kUnavailable, "daemon is shutting down");
    if (!*hold) {
      if (r.concurrency > 0) r.pass_slot();
      co_return hold->error();
    }
    // Another request may have taken a hold while this one waited: one is kept, either (the
    // one replaced lets go of its own).
    r.hold = std::move(**hold);
  }
  r.in_flight.fetch_add(1);
  if (r.concurrency == 0) r.open.store(true);
  if (!r.linger_armed) {
    r.requests_seen = r.requests();
    linger(r, kLinger);
  }
  co_return Status{};
}

void Proxy::leave(Route& r) {
  r.left();
  if (r.awaited.load() && r.in_flight.load() == 0) {
    asio::post(executor_, [this, &r, alive = std::weak_ptr<bool>(alive_)] {
      if (!alive.expired()) let_go_if_idle(r);
    });
  }
  if (r.concurrency == 0) return;
  if (IoThreads::current() == 0) {
    r.pass_slot();
  } else {
    asio::post(executor_, [&r, alive = std::weak_ptr<bool>(alive_)] {
      if (!alive.expired()) r.pass_slot();
    });
  }
}

bool Proxy::let_go_if_idle(Route& r) {
  if (r.in_flight.load() > 0) return false;
  if (!r.hold.active()) return true;
  // Shut the way past the main thread, then look again: a request that got in before the shut
  // is counted by now (Route::pass()), and keeps the hold.
  r.open.store(false);
  if (r.in_flight.load() > 0) {
    if (r.concurrency == 0) r.open.store(true);
    return false;
  }
  r.hold.release();
  return true;
}

void Proxy::linger(Route& r, std::chrono::steady_clock::duration after) {
  r.linger_armed = true;
  r.linger.expires_after(after);
  r.linger.async_wait(
      [this, &r, alive = std::weak_ptr<bool>(alive_)](boost::system::error_code ec) {
        if (alive.expired()) return;
        r.linger_armed = false;
        if (ec) return;
        if (!held(r)) {  // released, or that instance is gone and the hold with it
          r.open.store(false);
          r.hold.release();
          return;
        }
        const uint64_t requests = std::exchange(r.requests_seen, r.requests());
        // Draining, requests that came since wait for their turn: only those in flight count.
        const bool more = requests != r.requests_seen && !supervisor_.draining(r.service);
        if (r.in_flight.load() > 0 || more) {
          linger(r, kLinger);
          return;
        }
        if (!let_go_if_idle(r)) linger(r, kLinger);
      });
}

}  // namespace gpuvisor
