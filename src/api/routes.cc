#include "api/routes.h"

#include <boost/asio/async_result.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/http/field.hpp>
#include <charconv>
#include <memory>

#include "api/await.h"
#include "api/dashboard.h"
#include "api/gpu_views.h"
#include "api/json_views.h"
#include "api/request_parts.h"
#include "api/responses.h"
#include "api/sse.h"
#include "core/duration.h"
#include "core/json_text.h"
#include "resources/gpu_status.h"

namespace gpuvisor {

namespace asio = boost::asio;
namespace http = boost::beast::http;

namespace {

constexpr Millis kDefaultEnsureTimeout{300'000};

template <typename Start>
asio::awaitable<std::shared_ptr<Result<ServiceView>>> await_service(const Start& start) {
  return await_result<ServiceView>(start);
}

// Compares every byte whatever the first difference, so the reply time does not reveal how
// much of a guessed token was right.
bool same_secret(std::string_view given, const std::string& expected) {
  unsigned char diff = given.size() == expected.size() ? 0 : 1;
  for (size_t i = 0; i < expected.size(); ++i) {
    diff |= static_cast<unsigned char>(expected[i] ^ (i < given.size() ? given[i] : 0));
  }
  return diff == 0;
}

// The API takes small JSON; uploads go to services, through the proxy.
constexpr size_t kApiBodyLimit = 1024 * 1024;

HttpResponse unauthorized(const RequestHead& request) {
  HttpResponse response = error_response(
      request, make_error(ErrorCode::kUnauthorized, "missing or wrong bearer token"));
  response.set(http::field::www_authenticate, "Bearer");
  return response;
}

// The id a reconnecting client saw last (Last-Event-ID, or ?since=); 0 when none.
Result<uint64_t> last_event_id(const HttpRequest& request, const RequestParts& parts) {
  std::string text;
  if (const auto it = request.find("Last-Event-ID"); it != request.end()) {
    text = std::string(it->value());
  } else if (const auto p = parts.params.find("since"); p != parts.params.end()) {
    text = p->second;
  }
  uint64_t id = 0;
  if (text.empty()) return id;
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), id);
  if (ec != std::errc() || end != text.data() + text.size()) {
    return make_error(ErrorCode::kBadRequest,
                      "bad event id '" + text + "': expected a non-negative integer");
  }
  return id;
}

nlohmann::json phase_body(int phase, const std::vector<ServiceView>& views) {
  nlohmann::json services = nlohmann::json::array();
  for (const auto& v : views) services.push_back(to_json(v));
  return {{"phase", phase}, {"services", services}};
}

// ?types=job.,service.state_changed: exact types, or prefixes ending in '.'; empty: all.
std::vector<std::string> split_types(const RequestParts& parts) {
  std::vector<std::string> out;
  const auto it = parts.params.find("types");
  if (it == parts.params.end()) return out;
  size_t start = 0;
  while (start <= it->second.size()) {
    const auto comma = it->second.find(',', start);
    const auto one = it->second.substr(start, comma - start);
    if (!one.empty()) out.push_back(one);
    if (comma == std::string::npos) break;
    start = comma + 1;
  }
  return out;
}

bool wanted(const std::vector<std::string>& types, const std::string& type) {
  if (types.empty()) return true;
  return std::any_of(types.begin(), types.end(), [&](const std::string& t) {
    return t == type || (t.back() == '.' && type.rfind(t, 0) == 0);
  });
}

nlohmann::json services_body(const std::vector<ServiceView>& views) {
  nlohmann::json list = nlohmann::json::array();
  for (const auto& v : views) list.push_back(to_json(v));
  return {{"services", list}};
}

nlohmann::json logs_body(const std::string& name, const std::vector<LogLine>& lines) {
  nlohmann::json out = nlohmann::json::array();
  for (const auto& line : lines) out.push_back({{"seq", line.seq}, {"text", line.text}});
  return {{"service", name}, {"lines", out}};
}

// g++ 12 miscompiles braced initialiser lists inside coroutines ("array used as initializer"),
// so a body a coroutine needs is built here, outside one.
nlohmann::json health_body() {
  return {{"status", "ok"}};
}

}  // namespace

Api::Api(asio::any_io_executor main, Supervisor& supervisor, EventBus& events, GpuInventory& gpus,
         const WorkerRegistry& workers, OutsideWorkers& outside, Leases& leases,
         OwnershipSource& owners, PluginRegistry& plugins, JobQueue& jobs,
         const JobStore& job_store, Proxy& proxy, const Metrics& metrics, std::string token,
         unsigned external_busy_percent)
    : main_(std::move(main)),
      supervisor_(supervisor),
      events_(events),
      gpus_(gpus),
      workers_(workers),
      outside_(outside),
      leases_(leases),
      owners_(owners),
      plugins_(plugins),
      jobs_(jobs),
      job_store_(job_store),
      proxy_(proxy),
      metrics_(metrics),
      token_(std::move(token)),
      external_busy_percent_(external_busy_percent) {
  add_routes();
}

void Api::add(RouteSpec spec, Handler handler) {
  table_.add(std::move(spec));
  handlers_.push_back(handler);
}

// docs/api.md, route by route. /healthz is not here: it answers any method and no query (see
// route()).
void Api::add_routes() {
  using http::verb;
  // These take no parameters but accept and ignore the names other routes take, as docs/api.md
  // promises, for clients that send one set of parameters everywhere.
  const std::vector<std::string> ignored{"timeout", "force", "n", "follow", "since"};
  constexpr bool kBodyParams = true;  // a JSON object body holds parameters too
  add({{verb::get}, "/", {}}, &Api::dashboard);
  add({{verb::get}, "/index.html", {}}, &Api::dashboard);
  add({{verb::get}, "/metrics", {}}, &Api::metrics_page);
  add({{verb::get}, "/api/v1/services", ignored}, &Api::services);
  add({{verb::get}, "/api/v1/services/{name}", ignored}, &Api::service);
  add({{verb::post}, "/api/v1/services/{name}/ensure", {"timeout"}, kBodyParams}, &Api::ensure);
  add({{verb::post}, "/api/v1/services/{name}/stop", {"force"}, kBodyParams}, &Api::stop);
  add({{verb::post}, "/api/v1/services/{name}/restart", {"timeout"}, kBodyParams}, &Api::restart);
  add({{verb::get}, "/api/v1/services/{name}/logs", {"n", "follow"}}, &Api::logs);
  add({{verb::post}, "/api/v1/phases/{n}/ensure", {"timeout"}, kBodyParams}, &Api::phase_ensure);
  add({{verb::get}, "/api/v1/plan/{name}", ignored}, &Api::plan);
  add({{verb::get}, "/api/v1/queue", ignored}, &Api::queue);
  add({{verb::get}, "/api/v1/gpus", ignored}, &Api::gpus);
  add({{verb::get}, "/api/v1/processes", ignored}, &Api::gpus);
  add({{verb::get}, "/api/v1/resources", ignored}, &Api::gpus);
  add({{verb::get}, "/api/v1/events", {"since", "types"}}, &Api::events_stream);
  add({{verb::post}, "/api/v1/events", {}}, &Api::publish_event);
  add({{verb::get}, "/api/v1/workers", {}}, &Api::workers);
  add({{verb::post}, "/api/v1/workers", {}}, &Api::register_worker);
  add({{verb::patch}, "/api/v1/workers/{pid}", {}}, &Api::update_worker);
  add({{verb::delete_}, "/api/v1/workers/{pid}", {}}, &Api::unregister_worker);
  add({{verb::get}, "/api/v1/leases", {}}, &Api::leases);
  add({{verb::post}, "/api/v1/leases", {}}, &Api::grant_lease);
  add({{verb::delete_}, "/api/v1/leases/{id}", {}}, &Api::release_lease);
  add({{verb::get}, "/api/v1/plugins", {"category", "mode", "location", "configured"}},
      &Api::plugins);
  add({{verb::get}, "/api/v1/plugins/stats", {}}, &Api::plugin_stats);
  add({{verb::get}, "/api/v1/plugins/{id}", {}}, &Api::plugin);
  add({{verb::get}, "/api/v1/plugins/{id}/config", {}}, &Api::plugin_config);
  add({{verb::put}, "/api/v1/plugins/{id}/config", {}}, &Api::put_plugin_config);
  add({{verb::delete_}, "/api/v1/plugins/{id}/config", {}}, &Api::delete_plugin_config);
  add({{verb::post}, "/api/v1/plugins/{id}/jobs", {}}, &Api::submit_job);
  add({{verb::get}, "/api/v1/jobs", {"state", "plugin", "limit"}}, &Api::jobs);
  add({{verb::get}, "/api/v1/jobs/{id}", {}}, &Api::job);
  add({{verb::get}, "/api/v1/jobs/{id}/result", {}}, &Api::job_result);
  add({{verb::get}, "/api/v1/jobs/{id}/stream", {}}, &Api::job_stream);
  add({{verb::post}, "/api/v1/jobs/{id}/cancel", {}}, &Api::cancel_job);
  add({{verb::post}, "/api/v1/jobs/prune", {"older_than", "keep"}, kBodyParams}, &Api::prune_jobs);
}

Result<nlohmann::json> Api::gpu_view(const std::string& what) const {
  auto snapshot = gpus_.snapshot();
  if (!snapshot) return snapshot.error();
  // Only a look: measurements are recorded by the GPU watch and by placements, which measure.
  if (what == "gpus") return gpus_json(*snapshot);
  const auto gpus =
      classify_gpus(*snapshot, owners_.snapshot(), external_busy_percent_, process_name);
  if (what == "processes") return processes_json(gpus);
  return resources_json(gpus, read_system_memory(), external_busy_percent_);
}

std::string Api::metrics_text() const {
  Metrics::Scrape now;
  now.services = supervisor_.list();
  now.owners = owners_.snapshot();
  if (gpus_.available()) {
    if (auto snapshot = gpus_.snapshot()) now.gpus = std::move(*snapshot);
  }
  if (auto jobs = job_store_.count_by_state()) now.jobs = std::move(*jobs);
  now.proxy = proxy_.counts();
  now.workers = workers_.all();
  now.queued = supervisor_.queue().size();
  now.unix_ms = unix_ms_now();
  return metrics_.render(now);
}

bool Api::authorized(const RequestHead& request) const {
  if (token_.empty()) return true;
  const auto auth = request.find(http::field::authorization);
  return auth != request.end() && same_secret(auth->value(), "Bearer " + token_);
}

// Not a coroutine itself: a proxied request goes straight to the proxy's, without a frame of
// this one's on every request.
asio::awaitable<bool> Api::handle(Incoming& in) {
  if (Proxy::owns(in.head().target()) && authorized(in.head())) return proxy_.handle(in);
  // The daemon's state lives on the main thread: the API runs there, whatever thread the
  // connection is on.
  if (IoThreads::current() == 0) return serve(in);
  return serve_on_main(in);
}

asio::awaitable<bool> Api::serve_on_main(Incoming& in) {
  auto on_main = asio::co_spawn(main_, serve(in), asio::use_awaitable);
  co_return co_await std::move(on_main);
}

asio::awaitable<bool> Api::serve(Incoming& in) {
  // A refused upload to a service is not read: the connection ends after the answer instead.
  if (Proxy::owns(in.head().target())) {
    HttpResponse response = unauthorized(in.head());
    if (!in.parser.is_done()) response.keep_alive(false);
    const bool keep = response.keep_alive();
    co_return co_await reply(in.stream, std::move(response)) && keep;
  }
  auto request = co_await read_whole(in, kApiBodyLimit);
  if (!request) {
    HttpResponse response = error_response(in.head(), request.error());
    response.keep_alive(false);
    co_await reply(in.stream, std::move(response));
    co_return false;
  }
  co_return co_await route(in.stream, *request);
}

asio::awaitable<bool> Api::route(boost::beast::tcp_stream& stream, HttpRequest& request) {
  const std::string_view target = request.target();
  // The liveness check answers any method without the token; a query makes it a 404.
  if (target == "/healthz") {
    co_return co_await reply(stream, ok(request, health_body()));
  }
  // One key guards the management API, /metrics and the proxy alike. It is asked before the
  // route is looked up, so that without it the API does not say which paths exist.
  const std::string_view path = target.substr(0, target.find('?'));
  if ((path.rfind("/api/", 0) == 0 || path == "/metrics") && !authorized(request)) {
    co_return co_await reply(stream, unauthorized(request));
  }
  auto routed = table_.match(request);
  if (const auto* miss = std::get_if<RouteMiss>(&routed)) {
    co_return co_await reply(stream, miss_response(request, *miss));
  }
  Call call{stream, request, std::move(std::get<RouteMatch>(routed))};
  const Handler handler = handlers_.at(call.match.route);
  if (const auto* respond = std::get_if<Respond>(&handler)) {
    co_return co_await reply(stream, (this->*(*respond))(call));
  }
  co_return co_await (this->*std::get<Serve>(handler))(call);
}

// The page holds no data: what it shows it fetches through the API, with the token if set.
HttpResponse Api::dashboard(const Call& call) {
  HttpResponse page{http::status::ok, call.request.version()};
  page.set(http::field::content_type, "text/html; charset=utf-8");
  page.set(http::field::cache_control, "no-cache");
  page.keep_alive(call.request.keep_alive());
  page.body() = kDashboardHtml;
  return page;
}

HttpResponse Api::metrics_page(const Call& call) {
  HttpResponse response{http::status::ok, call.request.version()};
  response.set(http::field::content_type, "text/plain; version=0.0.4; charset=utf-8");
  response.keep_alive(call.request.keep_alive());
  response.body() = metrics_text();
  return response;
}

HttpResponse Api::services(const Call& call) {
  return ok(call.request, services_body(supervisor_.list()));
}

HttpResponse Api::service(const Call& call) {
  auto view = supervisor_.get(call.arg("name"));
  if (!view) return error_response(call.request, view.error());
  return ok(call.request, to_json(*view));
}

HttpResponse Api::queue(const Call& call) {
  nlohmann::json list = nlohmann::json::array();
  size_t position = 0;
  for (const auto& q : supervisor_.queue()) {
    list.push_back({{"service", q.service},
                    {"position", ++position},
                    {"priority", q.priority},
                    {"waiting_for", q.waiting_for},
                    {"draining", q.draining},
                    {"since_ms", q.since_unix_ms},
                    {"waited_ms", q.waited_ms}});
  }
  return ok(call.request, {{"queue", list}});
}

HttpResponse Api::plan(const Call& call) {
  auto decided = supervisor_.plan(call.arg("name"));
  if (!decided) return error_response(call.request, decided.error());
  return ok(call.request, plan_json(*decided));
}

HttpResponse Api::gpus(const Call& call) {
  auto body = gpu_view(call.match.parts.segments.back());
  if (!body) return error_response(call.request, body.error());
  return ok(call.request, *body);
}

HttpResponse Api::workers(const Call& call) {
  return ok(call.request, workers_json(workers_));
}

asio::awaitable<bool> Api::ensure(Call& call) {
  return service_action(call, "ensure");
}
asio::awaitable<bool> Api::stop(Call& call) {
  return service_action(call, "stop");
}
asio::awaitable<bool> Api::restart(Call& call) {
  return service_action(call, "restart");
}

asio::awaitable<bool> Api::service_action(Call& call, std::string_view action) {
  auto& stream = call.stream;
  const auto& request = call.request;
  const auto& params = call.match.parts;
  const std::string& name = call.arg("name");
  std::shared_ptr<Result<ServiceView>> result;
  if (action == "stop") {
    const auto force = bool_param(params, "force", false);
    if (!force) co_return co_await reply(stream, error_response(request, force.error()));
    const auto start = [this, &name, force = *force](auto done) {
      supervisor_.stop(name, force, done);
    };
    result = co_await await_service(start);
  } else {
    const auto timeout = duration_param(params, "timeout", kDefaultEnsureTimeout);
    if (!timeout) co_return co_await reply(stream, error_response(request, timeout.error()));
    const bool again = action == "restart";
    const auto start = [this, &name, again, t = *timeout](auto done) {
      if (again) {
        supervisor_.restart(name, t, done);
      } else {
        supervisor_.ensure(name, t, done);
      }
    };
    result = co_await await_service(start);
  }
  if (!*result) co_return co_await reply(stream, error_response(request, result->error()));
  co_return co_await reply(stream, ok(request, to_json(**result)));
}

asio::awaitable<bool> Api::phase_ensure(Call& call) {
  auto& stream = call.stream;
  const auto& request = call.request;
  const std::string& phase_text = call.arg("n");
  int phase = 0;
  const auto [end, ec] =
      std::from_chars(phase_text.data(), phase_text.data() + phase_text.size(), phase);
  if (ec != std::errc() || end != phase_text.data() + phase_text.size() || phase < 0) {
    co_return co_await reply(
        stream, error_response(request, make_error(ErrorCode::kBadRequest,
                                                   "bad phase '" + phase_text +
                                                       "': expected a non-negative integer")));
  }
  const auto timeout = duration_param(call.match.parts, "timeout", kDefaultEnsureTimeout);
  if (!timeout) co_return co_await reply(stream, error_response(request, timeout.error()));
  const auto start = [this, phase, t = *timeout](auto done) {
    supervisor_.ensure_phase(phase, t, done);
  };
  const auto result = co_await await_result<std::vector<ServiceView>>(start);
  if (!*result) co_return co_await reply(stream, error_response(request, result->error()));
  co_return co_await reply(stream, ok(request, phase_body(phase, **result)));
}

asio::awaitable<bool> Api::events_stream(Call& call) {
  auto& stream = call.stream;
  const auto after = last_event_id(call.request, call.match.parts);
  if (!after) co_return co_await reply(stream, error_response(call.request, after.error()));
  const auto types = split_types(call.match.parts);
  auto queue = std::make_shared<SseQueue>(stream.get_executor());
  auto frame = [](const Event& e) {
    return sse_frame(std::to_string(e.id), e.type, json_text(e.to_json()));
  };
  // A reconnecting client names the last event it saw; it gets what it missed first.
  for (const auto& e : events_.since(*after)) {
    if (wanted(types, e.type)) queue->push(frame(e));
  }
  const uint64_t id = events_.subscribe([queue, frame, types](const Event& e) {
    if (wanted(types, e.type)) queue->push(frame(e));
  });
  co_await queue->run(stream);
  events_.unsubscribe(id);
  co_return false;
}

asio::awaitable<bool> Api::logs(Call& call) {
  auto& stream = call.stream;
  const auto& request = call.request;
  const std::string& name = call.arg("name");
  const auto n = int_param(call.match.parts, "n", 100, 0, 100'000);
  const auto follow = bool_param(call.match.parts, "follow", false);
  if (!n || !follow) {
    co_return co_await reply(stream, error_response(request, !n ? n.error() : follow.error()));
  }
  auto tail = supervisor_.logs(name);
  if (!tail) {
    co_return co_await reply(stream, error_response(request, supervisor_.get(name).error()));
  }
  const auto lines = tail->last(static_cast<size_t>(*n));
  if (!*follow) {
    co_return co_await reply(stream, ok(request, logs_body(name, lines)));
  }
  auto queue = std::make_shared<SseQueue>(stream.get_executor());
  auto frame = [](const LogLine& line) {
    return sse_frame(std::to_string(line.seq), "log", line.text);
  };
  for (const auto& line : lines) queue->push(frame(line));
  const uint64_t id = tail->subscribe([queue, frame](const LogLine& l) { queue->push(frame(l)); });
  co_await queue->run(stream);
  tail->unsubscribe(id);
  co_return false;
}

}  // namespace gpuvisor
