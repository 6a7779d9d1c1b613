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
#include "api/plugin_routes.h"
#include "api/request_parts.h"
#include "api/responses.h"
#include "api/sse.h"
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

// 405 for an action route reached with another method.
HttpResponse post_only(const HttpRequest& request, const std::string& action) {
  HttpResponse response =
      error_response(request, make_error(ErrorCode::kMethodNotAllowed, action + " takes POST"));
  response.set(http::field::allow, "POST");
  return response;
}

asio::awaitable<bool> reply(boost::beast::tcp_stream& stream, HttpResponse response) {
  const bool keep = response.keep_alive();
  const bool written = co_await write_response(stream, response);
  co_return written&& keep;
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

// g++ 12 miscompiles braced initialiser lists inside coroutines ("array used as initializer"),
// so every list a coroutine needs is built here, outside one.
const std::vector<std::string> kAllParams{"timeout",  "force", "n",          "follow",   "since",
                                          "category", "mode",  "configured", "location", "state",
                                          "plugin",   "limit", "types"};
const std::vector<std::string> kStopParams{"force"};
const std::vector<std::string> kEnsureParams{"timeout"};

nlohmann::json phase_body(int phase, const std::vector<ServiceView>& views) {
  nlohmann::json services = nlohmann::json::array();
  for (const auto& v : views) services.push_back(to_json(v));
  return {{"phase", phase}, {"services", services}};
}
const std::vector<std::string> kEventParams{"since", "types"};

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
const std::vector<std::string> kLogParams{"n", "follow"};

nlohmann::json jobs_body(const std::vector<Job>& list) {
  nlohmann::json jobs = nlohmann::json::array();
  for (const auto& j : list) jobs.push_back(to_json(j));
  return {{"jobs", jobs}};
}

nlohmann::json result_body(const Job& job) {
  return {{"id", job.id}, {"result", job.result}};
}

nlohmann::json health_body() {
  return {{"status", "ok"}};
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

}  // namespace

Api::Api(asio::any_io_executor main, Supervisor& supervisor, EventBus& events, GpuInventory& gpus,
         const WorkerRegistry& workers, PluginRegistry& plugins, JobQueue& jobs,
         const JobStore& job_store, Proxy& proxy, const Metrics& metrics, std::string token,
         unsigned external_busy_percent)
    : main_(std::move(main)),
      supervisor_(supervisor),
      events_(events),
      gpus_(gpus),
      workers_(workers),
      plugins_(plugins),
      jobs_(jobs),
      job_store_(job_store),
      proxy_(proxy),
      metrics_(metrics),
      token_(std::move(token)),
      external_busy_percent_(external_busy_percent) {}

Result<nlohmann::json> Api::gpu_view(const std::string& what) const {
  auto snapshot = gpus_.snapshot();
  if (!snapshot) return snapshot.error();
  auto owners = supervisor_.owned_pids();
  supervisor_.observe(*snapshot, owners);
  if (what == "gpus") return gpus_json(*snapshot);
  owners.merge(workers_.owned_pids());
  const auto gpus = classify_gpus(*snapshot, owners, external_busy_percent_, process_name);
  if (what == "processes") return processes_json(gpus);
  return resources_json(gpus, read_system_memory(), external_busy_percent_);
}

std::string Api::metrics_text() const {
  Metrics::Scrape now;
  now.services = supervisor_.list();
  now.owners = supervisor_.owned_pids();
  now.owners.merge(workers_.owned_pids());
  if (gpus_.available()) {
    if (auto snapshot = gpus_.snapshot()) now.gpus = std::move(*snapshot);
  }
  if (auto jobs = job_store_.count_by_state()) now.jobs = std::move(*jobs);
  now.proxy = proxy_.counts();
  now.workers = workers_.all();
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
  const std::string target(request.target());
  if (target == "/healthz") {
    co_return co_await reply(stream, json_response(request, http::status::ok, health_body()));
  }
  // The page holds no data: what it shows it fetches through the API, with the token if set.
  if ((target == "/" || target == "/index.html") && request.method() == http::verb::get) {
    HttpResponse page{http::status::ok, request.version()};
    page.set(http::field::content_type, "text/html; charset=utf-8");
    page.set(http::field::cache_control, "no-cache");
    page.keep_alive(request.keep_alive());
    page.body() = kDashboardHtml;
    co_return co_await reply(stream, std::move(page));
  }
  const bool metrics = target == "/metrics";
  if (target.rfind("/api/", 0) != 0 && !metrics) {
    co_return co_await reply(
        stream, error_response(request, make_error(ErrorCode::kNotFound, "no route " + target)));
  }
  // One key guards the management API and the proxy alike.
  if (!authorized(request)) co_return co_await reply(stream, unauthorized(request));
  if (metrics) {
    HttpResponse response{http::status::ok, request.version()};
    response.set(http::field::content_type, "text/plain; version=0.0.4; charset=utf-8");
    response.keep_alive(request.keep_alive());
    response.body() = metrics_text();
    co_return co_await reply(stream, std::move(response));
  }
  auto peek = parse_request(target, "", kAllParams);
  if (!peek) co_return co_await reply(stream, error_response(request, peek.error()));
  const auto& seg = peek->segments;
  if (seg.size() < 3 || seg[1] != "v1") {
    co_return co_await reply(
        stream, error_response(request, make_error(ErrorCode::kNotFound, "no route " + target)));
  }
  const bool get = request.method() == http::verb::get;
  const bool post = request.method() == http::verb::post;

  if ((seg.size() >= 3 && seg[2] == "jobs") ||
      (seg.size() == 5 && seg[2] == "plugins" && seg[4] == "jobs")) {
    co_return co_await jobs_route(stream, request, *peek);
  }
  if (seg.size() >= 3 && seg[2] == "plugins") {
    co_return co_await reply(stream, plugin_response(plugins_, supervisor_, request, *peek));
  }
  if (seg.size() == 3 && seg[2] == "events" && get)
    co_return co_await events_stream(stream, request);
  if (seg.size() == 3 && seg[2] == "workers" && get) {
    co_return co_await reply(stream,
                             json_response(request, http::status::ok, workers_json(workers_)));
  }
  if (seg.size() == 3 && get &&
      (seg[2] == "gpus" || seg[2] == "processes" || seg[2] == "resources")) {
    auto body = gpu_view(seg[2]);
    if (!body) co_return co_await reply(stream, error_response(request, body.error()));
    co_return co_await reply(stream, json_response(request, http::status::ok, *body));
  }
  if (seg.size() == 5 && seg[2] == "phases" && seg[4] == "ensure") {
    if (!post) co_return co_await reply(stream, post_only(request, "ensure"));
    co_return co_await phase_ensure(stream, request, seg[3]);
  }
  if (seg.size() == 4 && seg[2] == "plan" && get) {
    auto plan = supervisor_.plan(seg[3]);
    if (!plan) co_return co_await reply(stream, error_response(request, plan.error()));
    co_return co_await reply(stream, json_response(request, http::status::ok, plan_json(*plan)));
  }
  if (seg.size() == 3 && seg[2] == "services" && get) {
    co_return co_await reply(
        stream, json_response(request, http::status::ok, services_body(supervisor_.list())));
  }
  if (seg.size() == 4 && seg[2] == "services" && get) {
    auto view = supervisor_.get(seg[3]);
    if (!view) co_return co_await reply(stream, error_response(request, view.error()));
    co_return co_await reply(stream, json_response(request, http::status::ok, to_json(*view)));
  }
  if (seg.size() == 5 && seg[2] == "services" && seg[4] == "logs" && get) {
    co_return co_await logs(stream, request, seg[3]);
  }
  if (seg.size() == 5 && seg[2] == "services" &&
      (seg[4] == "ensure" || seg[4] == "stop" || seg[4] == "restart")) {
    if (!post) co_return co_await reply(stream, post_only(request, seg[4]));
    co_return co_await service_action(stream, request, seg[3], seg[4]);
  }
  co_return co_await reply(
      stream,
      error_response(
          request, make_error(ErrorCode::kNotFound,
                              "no route " + std::string(request.method_string()) + " " + target)));
}

asio::awaitable<bool> Api::jobs_route(boost::beast::tcp_stream& stream, HttpRequest& request,
                                      const RequestParts& parts) {
  const auto& seg = parts.segments;
  const bool get = request.method() == http::verb::get;
  const bool post = request.method() == http::verb::post;
  const auto ok = [&](const nlohmann::json& body) {
    return json_response(request, http::status::ok, body);
  };
  if (seg[2] == "plugins") {  // POST /api/v1/plugins/{id}/jobs: submit
    if (!post) co_return co_await reply(stream, post_only(request, "submitting a job"));
    auto input = request.body().empty() ? nlohmann::json::object()
                                        : nlohmann::json::parse(request.body(), nullptr, false);
    if (input.is_discarded()) {
      co_return co_await reply(
          stream, error_response(request, make_error(ErrorCode::kBadRequest,
                                                     "the body must be the job's input, as "
                                                     "JSON")));
    }
    const auto submit = [this, &seg, &input](auto done) {
      jobs_.submit(seg[3], std::move(input), done);
    };
    auto job = co_await await_result<Job>(submit);
    if (!*job) co_return co_await reply(stream, error_response(request, job->error()));
    co_return co_await reply(stream, ok(to_json(**job)));
  }
  if (seg.size() == 3) {  // GET /api/v1/jobs
    if (!get)
      co_return co_await reply(
          stream,
          error_response(request, make_error(ErrorCode::kMethodNotAllowed, "jobs takes GET")));
    const auto state = parts.params.count("state") ? parts.params.at("state") : "";
    if (!state.empty() && !parse_job_state(state)) {
      co_return co_await reply(
          stream, error_response(request, make_error(ErrorCode::kBadRequest,
                                                     "bad state '" + state +
                                                         "': expected pending, running, "
                                                         "completed, failed or cancelled")));
    }
    const auto limit = int_param(parts, "limit", 100, 1, 10'000);
    if (!limit) co_return co_await reply(stream, error_response(request, limit.error()));
    const auto plugin = parts.params.count("plugin") ? parts.params.at("plugin") : "";
    auto list = job_store_.list(state, plugin, static_cast<size_t>(*limit));
    if (!list) co_return co_await reply(stream, error_response(request, list.error()));
    co_return co_await reply(stream, ok(jobs_body(*list)));
  }
  int64_t id = 0;
  const auto& text = seg[3];
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), id);
  if (ec != std::errc() || end != text.data() + text.size() || id <= 0) {
    co_return co_await reply(
        stream, error_response(
                    request, make_error(ErrorCode::kBadRequest,
                                        "bad job id '" + text + "': expected a positive integer")));
  }
  if (seg.size() == 4 && get) {
    auto job = job_store_.get(id);
    if (!job) co_return co_await reply(stream, error_response(request, job.error()));
    co_return co_await reply(stream, ok(to_json(*job)));
  }
  if (seg.size() == 5 && seg[4] == "result" && get) {
    auto job = job_store_.get(id);
    if (!job) co_return co_await reply(stream, error_response(request, job.error()));
    if (job->state != JobState::kCompleted) {
      co_return co_await reply(
          stream,
          error_response(request, make_error(ErrorCode::kConflict,
                                             "job " + text + " is " + to_string(job->state) +
                                                 (job->error.empty() ? "" : ": " + job->error))));
    }
    co_return co_await reply(stream, ok(result_body(*job)));
  }
  if (seg.size() == 5 && seg[4] == "stream" && get) {
    auto job = job_store_.get(id);
    if (!job) co_return co_await reply(stream, error_response(request, job.error()));
    co_return co_await job_stream(stream, request, *job);
  }
  if (seg.size() == 5 && seg[4] == "cancel") {
    if (!post) co_return co_await reply(stream, post_only(request, "cancel"));
    const auto cancel = [this, id](auto done) { jobs_.cancel(id, done); };
    auto job = co_await await_result<Job>(cancel);
    if (!*job) co_return co_await reply(stream, error_response(request, job->error()));
    co_return co_await reply(stream, ok(to_json(**job)));
  }
  co_return co_await reply(
      stream, error_response(request, make_error(ErrorCode::kNotFound,
                                                 "no route " + std::string(request.target()))));
}

asio::awaitable<bool> Api::service_action(boost::beast::tcp_stream& stream, HttpRequest& request,
                                          const std::string& name, const std::string& action) {
  auto parts = parse_request(request.target(), request.body(),
                             action == "stop" ? kStopParams : kEnsureParams);
  if (!parts) co_return co_await reply(stream, error_response(request, parts.error()));

  std::shared_ptr<Result<ServiceView>> result;
  if (action == "stop") {
    const auto force = bool_param(*parts, "force", false);
    if (!force) co_return co_await reply(stream, error_response(request, force.error()));
    const auto start = [this, &name, force = *force](auto done) {
      supervisor_.stop(name, force, done);
    };
    result = co_await await_service(start);
  } else {
    const auto timeout = duration_param(*parts, "timeout", kDefaultEnsureTimeout);
    if (!timeout) co_return co_await reply(stream, error_response(request, timeout.error()));
    const bool restart = action == "restart";
    const auto start = [this, &name, restart, t = *timeout](auto done) {
      if (restart) {
        supervisor_.restart(name, t, done);
      } else {
        supervisor_.ensure(name, t, done);
      }
    };
    result = co_await await_service(start);
  }
  if (!*result) co_return co_await reply(stream, error_response(request, result->error()));
  co_return co_await reply(stream, json_response(request, http::status::ok, to_json(**result)));
}

asio::awaitable<bool> Api::phase_ensure(boost::beast::tcp_stream& stream, HttpRequest& request,
                                        const std::string& phase_text) {
  auto parts = parse_request(request.target(), request.body(), kEnsureParams);
  if (!parts) co_return co_await reply(stream, error_response(request, parts.error()));
  int phase = 0;
  const auto [end, ec] =
      std::from_chars(phase_text.data(), phase_text.data() + phase_text.size(), phase);
  if (ec != std::errc() || end != phase_text.data() + phase_text.size() || phase < 0) {
    co_return co_await reply(
        stream, error_response(request, make_error(ErrorCode::kBadRequest,
                                                   "bad phase '" + phase_text +
                                                       "': expected a non-negative integer")));
  }
  const auto timeout = duration_param(*parts, "timeout", kDefaultEnsureTimeout);
  if (!timeout) co_return co_await reply(stream, error_response(request, timeout.error()));
  const auto start = [this, phase, t = *timeout](auto done) {
    supervisor_.ensure_phase(phase, t, done);
  };
  const auto result = co_await await_result<std::vector<ServiceView>>(start);
  if (!*result) co_return co_await reply(stream, error_response(request, result->error()));
  co_return co_await reply(stream,
                           json_response(request, http::status::ok, phase_body(phase, **result)));
}

asio::awaitable<bool> Api::events_stream(boost::beast::tcp_stream& stream, HttpRequest& request) {
  auto parts = parse_request(request.target(), "", kEventParams);
  if (!parts) co_return co_await reply(stream, error_response(request, parts.error()));
  const auto after = last_event_id(request, *parts);
  if (!after) co_return co_await reply(stream, error_response(request, after.error()));
  const auto types = split_types(*parts);
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

// One job's story as SSE: the job as it is now (event "job"), what the event history still
// holds about it (job.* events, chunks included), then its events as they come; after the one
// that ends it, the job as it ended (with its result), and the stream closes. A job already
// over gets its history and its final state at once.
asio::awaitable<bool> Api::job_stream(boost::beast::tcp_stream& stream, HttpRequest& request,
                                      const Job& job) {
  (void)request;
  auto queue = std::make_shared<SseQueue>(stream.get_executor());
  const auto snapshot = [queue](const Job& j) {
    queue->push(sse_frame("", "job", json_text(to_json(j))));
  };
  const auto ended = [](const std::string& state) {
    const auto parsed = parse_job_state(state);
    return parsed && is_final(*parsed);
  };
  const auto about = [id = job.id](const Event& e) {
    return e.type.rfind("job.", 0) == 0 && e.data.value("id", int64_t{0}) == id;
  };
  const bool over = is_final(job.state);
  if (!over) snapshot(job);
  for (const auto& e : events_.since(0)) {
    if (about(e)) queue->push(sse_frame(std::to_string(e.id), e.type, json_text(e.to_json())));
  }
  uint64_t subscription = 0;
  if (over) {
    snapshot(job);
    queue->finish();
  } else {
    subscription = events_.subscribe([this, queue, about, snapshot, ended](const Event& e) {
      if (!about(e)) return;
      queue->push(sse_frame(std::to_string(e.id), e.type, json_text(e.to_json())));
      if (!ended(e.data.value("state", ""))) return;
      // Published once durable: the store has the job as it ended.
      if (auto final_job = job_store_.get(e.data.value("id", int64_t{0}))) snapshot(*final_job);
      queue->finish();
    });
  }
  co_await queue->run(stream);
  if (subscription != 0) events_.unsubscribe(subscription);
  co_return false;
}

asio::awaitable<bool> Api::logs(boost::beast::tcp_stream& stream, HttpRequest& request,
                                const std::string& name) {
  auto parts = parse_request(request.target(), "", kLogParams);
  if (!parts) co_return co_await reply(stream, error_response(request, parts.error()));
  const auto n = int_param(*parts, "n", 100, 0, 100'000);
  const auto follow = bool_param(*parts, "follow", false);
  if (!n || !follow) {
    co_return co_await reply(stream, error_response(request, !n ? n.error() : follow.error()));
  }
  auto tail = supervisor_.logs(name);
  if (!tail) {
    co_return co_await reply(stream, error_response(request, supervisor_.get(name).error()));
  }
  const auto lines = tail->last(static_cast<size_t>(*n));
  if (!*follow) {
    co_return co_await reply(stream,
                             json_response(request, http::status::ok, logs_body(name, lines)));
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
