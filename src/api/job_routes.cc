// The job routes of Api (docs/api.md, "Jobs"): submit, list, look up, cancel, stream.
#include <charconv>
#include <limits>
#include <memory>

#include "api/await.h"
#include "api/json_views.h"
#include "api/responses.h"
#include "api/routes.h"
#include "api/sse.h"
#include "core/json_text.h"

namespace gpuvisor {

namespace asio = boost::asio;
namespace http = boost::beast::http;

namespace {

Result<int64_t> job_id(const std::string& text) {
  int64_t id = 0;
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), id);
  if (ec != std::errc() || end != text.data() + text.size() || id <= 0) {
    return make_error(ErrorCode::kBadRequest,
                      "bad job id '" + text + "': expected a positive integer");
  }
  return id;
}

nlohmann::json jobs_body(const std::vector<Job>& list) {
  nlohmann::json out = nlohmann::json::array();
  for (const auto& j : list) out.push_back(to_json(j));
  return {{"jobs", out}};
}

bool ended(const std::string& state) {
  const auto parsed = parse_job_state(state);
  return parsed && is_final(*parsed);
}

}  // namespace

HttpResponse Api::jobs(const Call& call) {
  const auto& params = call.match.parts.params;
  const auto state = params.count("state") ? params.at("state") : "";
  if (!state.empty() && !parse_job_state(state)) {
    return error_response(call.request,
                          make_error(ErrorCode::kBadRequest, "bad state '" + state +
                                                                 "': expected pending, running, "
                                                                 "completed, failed or cancelled"));
  }
  const auto limit = int_param(call.match.parts, "limit", 100, 1, 10'000);
  if (!limit) return error_response(call.request, limit.error());
  const auto plugin_id = params.count("plugin") ? params.at("plugin") : "";
  auto list = job_store_.list(state, plugin_id, static_cast<size_t>(*limit));
  if (!list) return error_response(call.request, list.error());
  return ok(call.request, jobs_body(*list));
}

HttpResponse Api::job(const Call& call) {
  const auto id = job_id(call.arg("id"));
  if (!id) return error_response(call.request, id.error());
  auto found = job_store_.get(*id);
  if (!found) return error_response(call.request, found.error());
  return ok(call.request, to_json(*found));
}

HttpResponse Api::job_result(const Call& call) {
  const auto id = job_id(call.arg("id"));
  if (!id) return error_response(call.request, id.error());
  auto found = job_store_.get(*id);
  if (!found) return error_response(call.request, found.error());
  if (found->state != JobState::kCompleted) {
    return error_response(call.request,
                          make_error(ErrorCode::kConflict,
                                     "job " + call.arg("id") + " is " + to_string(found->state) +
                                         (found->error.empty() ? "" : ": " + found->error)));
  }
  return ok(call.request, {{"id", found->id}, {"result", found->result}});
}

asio::awaitable<bool> Api::submit_job(Call& call) {
  const auto& request = call.request;
  auto input = request.body().empty() ? nlohmann::json::object()
                                      : nlohmann::json::parse(request.body(), nullptr, false);
  if (input.is_discarded()) {
    co_return co_await reply(
        call.stream,
        error_response(request, make_error(ErrorCode::kBadRequest,
                                           "the body must be the job's input, as JSON")));
  }
  const auto submit = [this, &call, &input](auto done) {
    jobs_.submit(call.arg("id"), std::move(input), done);
  };
  auto submitted = co_await await_result<Job>(submit);
  if (!*submitted) {
    co_return co_await reply(call.stream, error_response(request, submitted->error()));
  }
  co_return co_await reply(call.stream, ok(request, to_json(**submitted)));
}

asio::awaitable<bool> Api::cancel_job(Call& call) {
  const auto id = job_id(call.arg("id"));
  if (!id) co_return co_await reply(call.stream, error_response(call.request, id.error()));
  const auto cancel = [this, id = *id](auto done) { jobs_.cancel(id, done); };
  auto cancelled = co_await await_result<Job>(cancel);
  if (!*cancelled) {
    co_return co_await reply(call.stream, error_response(call.request, cancelled->error()));
  }
  co_return co_await reply(call.stream, ok(call.request, to_json(**cancelled)));
}

// Finished jobs deleted now, by age and by count (absent: the configured retention).
asio::awaitable<bool> Api::prune_jobs(Call& call) {
  const auto& parts = call.match.parts;
  std::optional<Millis> older_than;
  std::optional<int64_t> keep;
  if (parts.params.count("older_than")) {
    const auto d = duration_param(parts, "older_than", Millis(0));
    if (!d) co_return co_await reply(call.stream, error_response(call.request, d.error()));
    older_than = *d;
  }
  if (parts.params.count("keep")) {
    const auto n = int_param(parts, "keep", 0, 0, std::numeric_limits<int32_t>::max());
    if (!n) co_return co_await reply(call.stream, error_response(call.request, n.error()));
    keep = *n;
  }
  const auto prune = [this, older_than, keep](auto done) { jobs_.prune(older_than, keep, done); };
  auto pruned = co_await await_result<int64_t>(prune);
  if (!*pruned) {
    co_return co_await reply(call.stream, error_response(call.request, pruned->error()));
  }
  nlohmann::json deleted = nlohmann::json::object();
  deleted["deleted"] = **pruned;
  co_return co_await reply(call.stream, ok(call.request, deleted));
}

// One job's story as SSE: the job as it is now (event "job"), what the event history still
// holds about it (job.* events, chunks included), then its events as they come; after the one
// that ends it, the job as it ended (with its result), and the stream closes. A job already
// over gets its history and its final state at once.
asio::awaitable<bool> Api::job_stream(Call& call) {
  const auto id = job_id(call.arg("id"));
  if (!id) co_return co_await reply(call.stream, error_response(call.request, id.error()));
  auto found = job_store_.get(*id);
  if (!found) co_return co_await reply(call.stream, error_response(call.request, found.error()));
  auto queue = std::make_shared<SseQueue>(call.stream.get_executor());
  const uint64_t subscription = follow_job(queue, *found);
  co_await queue->run(call.stream);
  if (subscription != 0) events_.unsubscribe(subscription);
  co_return false;
}

uint64_t Api::follow_job(const std::shared_ptr<SseQueue>& queue, const Job& job) {
  const auto snapshot = [queue](const Job& j) {
    queue->push(sse_frame("", "job", json_text(to_json(j))));
  };
  const auto about = [id = job.id](const Event& e) {
    return e.type.rfind("job.", 0) == 0 && e.data.value("id", int64_t{0}) == id;
  };
  const bool over = is_final(job.state);
  if (!over) snapshot(job);
  for (const auto& e : events_.since(0)) {
    if (about(e)) queue->push(sse_frame(std::to_string(e.id), e.type, json_text(e.to_json())));
  }
  if (over) {
    snapshot(job);
    queue->finish();
    return 0;
  }
  return events_.subscribe([this, queue, about, snapshot](const Event& e) {
    if (!about(e)) return;
    queue->push(sse_frame(std::to_string(e.id), e.type, json_text(e.to_json())));
    if (!ended(e.data.value("state", ""))) return;
    // Published once durable: the store has the job as it ended.
    if (auto final_job = job_store_.get(e.data.value("id", int64_t{0}))) snapshot(*final_job);
    queue->finish();
  });
}

}  // namespace gpuvisor
