// SPDX-License-Identifier: Apache-2.0
// The admission queue: a request or an ensure blocked only by a busy service waits for it to go
// idle instead of being refused, within its own bound, and the queue is visible while it waits.
// Two 16 GB services on a simulated 24 GB GPU; a streamed proxied response keeps one busy.
#include <gtest/gtest.h>

#include <atomic>
#include <future>
#include <sstream>
#include <thread>

#include "testkit/daemon.h"
#include "testkit/fake_gpu.h"

namespace gpuvisor::itest {
namespace {

const char* kOneGpu = R"({"devices": [{"name": "Sim 24G", "total_mb": 24576}]})";

std::string proxied(const std::string& name, int port, int priority, const std::string& wait) {
  const std::string p = std::to_string(port);
  return "  " + name + ":\n    command: [$TESTSVC, --port, \"" + p +
         "\", --vram-mb, \"16000\"]\n    vram_mb: 16000\n    priority: " +
         std::to_string(priority) + "\n    health: {http: \"http://127.0.0.1:" + p +
         "/health\"}\n    proxy: {url: \"http://127.0.0.1:" + p + "\", wait: " + wait + "}\n";
}

// Every eviction so far, from /metrics.
int evictions(Daemon& d) {
  const auto reply = d.call("GET", "/metrics");
  int n = 0;
  if (!reply) return -1;
  std::istringstream in(reply->body);
  for (std::string line; std::getline(in, line);) {
    if (line.rfind("gpuvisor_evictions_total{", 0) == 0) {
      n += std::atoi(line.c_str() + line.rfind(' ') + 1);
    }
  }
  return n;
}

TEST(Queue, AnEnsureBlockedByABusyServiceWaitsAndSucceedsOnceItIsIdle) {
  const std::string dir = make_temp_dir("queue");
  FakeGpu gpu(dir, kOneGpu);
  Daemon d(
      "services:\n" + proxied("a", free_port(), 10, "1m") + proxied("b", free_port(), 20, "1m"),
      dir);
  ASSERT_TRUE(d.start()) << d.stderr_text();
  // a streams for about 2 s: busy all along.
  auto stream = std::async(
      std::launch::async, [&] { return d.call("GET", "/upstream/a/stream?n=20&interval_ms=100"); });
  ASSERT_TRUE(d.wait_state("a", "busy"));

  auto ensured = std::async(std::launch::async, [&] { return d.cli({"ensure", "b"}); });
  ASSERT_TRUE(eventually([&] { return !body(d.call("GET", "/api/v1/queue"))["queue"].empty(); }))
      << d.service("b").dump();
  const auto queue = body(d.call("GET", "/api/v1/queue"))["queue"];
  EXPECT_EQ("b", queue[0]["service"]);
  EXPECT_EQ(nlohmann::json{"a"}, queue[0]["waiting_for"]);
  const auto shown = d.cli({"queue"});
  EXPECT_NE(std::string::npos, shown.out.find("WAITING FOR")) << shown.out;
  EXPECT_EQ("starting", d.service("b")["state"]);
  EXPECT_NE(std::string::npos, d.call("GET", "/metrics")->body.find("gpuvisor_queue_depth 1"));

  const auto done = ensured.get();
  EXPECT_EQ(0, done.exit_code) << done.err;  // waited, not refused
  const auto streamed = stream.get();
  ASSERT_TRUE(streamed.ok());
  EXPECT_EQ(200u, streamed->status);  // a finished its work before it was evicted
  EXPECT_EQ("stopped", d.service("a")["state"]);
  EXPECT_EQ("ready", d.service("b")["state"]);
  EXPECT_TRUE(body(d.call("GET", "/api/v1/queue"))["queue"].empty());
  EXPECT_TRUE(d.wait_event(
      [](const nlohmann::json& e) { return e["data"]["service"] == "b" && e["data"]["placed"]; },
      20s, "&types=queue.dequeued"));
}

TEST(Queue, ARequestThatWaitsPastItsBoundGets503WithRetryAfter) {
  const std::string dir = make_temp_dir("queue503");
  FakeGpu gpu(dir, kOneGpu);
  Daemon d(
      "services:\n" + proxied("a", free_port(), 10, "1m") + proxied("b", free_port(), 20, "1s"),
      dir);
  ASSERT_TRUE(d.start()) << d.stderr_text();
  auto stream = std::async(
      std::launch::async, [&] { return d.call("GET", "/upstream/a/stream?n=40&interval_ms=100"); });
  ASSERT_TRUE(d.wait_state("a", "busy"));
  const auto late = d.call("GET", "/upstream/b/health");
  ASSERT_TRUE(late.ok());
  EXPECT_EQ(503u, late->status) << late->body;
  EXPECT_TRUE(late->headers.count("retry-after")) << late->body;
  EXPECT_NE(std::string::npos, late->body.find("waiting for busy a")) << late->body;
  // Nobody waits for b any more: it leaves the queue, and a is left alone.
  EXPECT_TRUE(d.wait_event([](const nlohmann::json& e) { return e["data"]["service"] == "b"; }, 20s,
                           "&types=queue.timeout"));
  EXPECT_EQ("stopped", d.service("b")["state"]);
  ASSERT_TRUE(stream.get().ok());
  EXPECT_TRUE(eventually([&] { return d.service("a")["state"] == "ready"; }));  // left alone
}

TEST(Queue, FourAlternatingRequestsForTwoModelsThatDoNotFitCauseAtMostTwoSwaps) {
  const std::string dir = make_temp_dir("queueabab");
  FakeGpu gpu(dir, kOneGpu);
  Daemon d(
      "services:\n" + proxied("a", free_port(), 10, "1m") + proxied("b", free_port(), 10, "1m"),
      dir);
  ASSERT_TRUE(d.start()) << d.stderr_text();
  std::vector<std::future<Result<HttpReply>>> replies;
  for (const char* name : {"a", "b", "a", "b"}) {
    replies.push_back(std::async(std::launch::async, [&d, name] {
      return d.call("GET", std::string("/upstream/") + name + "/stream?n=5&interval_ms=100");
    }));
  }
  for (auto& r : replies) {
    const auto reply = r.get();
    ASSERT_TRUE(reply.ok()) << reply.error().message;
    EXPECT_EQ(200u, reply->status) << reply->body;
  }
  EXPECT_LE(evictions(d), 2);
}

// Requests for the loaded model keep it busy without a gap; past daemon.queue_max_wait it takes
// no new work, finishes what it has, and the queued one gets its turn. The held-back requests are
// served after, none refused.
TEST(Queue, AQueuedModelIsNotStarvedByAStreamOfRequestsForTheLoadedOne) {
  const std::string dir = make_temp_dir("queuefair");
  FakeGpu gpu(dir, kOneGpu);
  Daemon d("daemon: {queue_max_wait: 1s}\nservices:\n" + proxied("a", free_port(), 10, "1m") +
               proxied("b", free_port(), 10, "15s"),
           dir);
  ASSERT_TRUE(d.start()) << d.stderr_text();
  std::atomic<bool> b_served{false};
  const auto deadline = std::chrono::steady_clock::now() + 40s;
  // Two loops of 2 s streams, the second a second behind the first (its first stream is half as
  // long): a always has a request in flight, and never goes idle by itself.
  const auto loop = [&](int first_n) {
    std::vector<unsigned> statuses;
    for (int n = first_n; !b_served.load() && std::chrono::steady_clock::now() < deadline; n = 20) {
      const auto r =
          d.call("GET", "/upstream/a/stream?n=" + std::to_string(n) + "&interval_ms=100");
      statuses.push_back(r.ok() ? r->status : 0);
    }
    return statuses;
  };
  auto first = std::async(std::launch::async, loop, 20);
  ASSERT_TRUE(d.wait_state("a", "busy"));
  auto second = std::async(std::launch::async, loop, 10);
  const auto b = d.call("GET", "/upstream/b/health");
  b_served = true;
  ASSERT_TRUE(b.ok());
  EXPECT_EQ(200u, b->status) << b->body;  // not starved past its 15 s bound
  for (auto* loop_done : {&first, &second}) {
    for (const unsigned status : loop_done->get())
      EXPECT_EQ(200u, status);  // held back, not refused
  }
  EXPECT_TRUE(d.wait_event(
      [](const nlohmann::json& e) {
        return e["data"]["service"] == "a" && e["data"]["for"] == "b";
      },
      20s, "&types=queue.draining"));
  EXPECT_TRUE(d.wait_event([](const nlohmann::json& e) { return e["data"]["service"] == "a"; }, 20s,
                           "&types=queue.drained"));
}

// Jobs collate as requests do: the next job of a plugin takes its service over from the one
// before, so a placement queued behind the service does not take the gap between them.
TEST(Queue, JobsForTheLoadedServiceAreAllRunBeforeASwap) {
  const std::string dir = make_temp_dir("queuejobs");
  FakeGpu gpu(dir, kOneGpu);
  const int port_a = free_port();
  Daemon d("services:\n" + proxied("a", port_a, 10, "1m") + proxied("b", free_port(), 10, "1m") +
               "plugins:\n  manifests:\n"
               "    - {name: work, category: demo, mode: http, service: a,\n"
               "       http: {method: GET, url: \"http://127.0.0.1:" +
               std::to_string(port_a) + "/stream?n=8&interval_ms=100\"}}\n",
           dir);
  ASSERT_TRUE(d.start()) << d.stderr_text();
  std::vector<int64_t> ids;
  for (int i = 0; i < 3; ++i)
    ids.push_back(body(d.call("POST", "/api/v1/plugins/demo_work/jobs"))["id"]);
  ASSERT_TRUE(d.wait_state("a", "busy"));
  const auto ensured = d.cli({"ensure", "b", "--timeout", "1m"});
  EXPECT_EQ(0, ensured.exit_code) << ensured.err;
  for (const int64_t id : ids) {
    EXPECT_EQ("completed", body(d.call("GET", "/api/v1/jobs/" + std::to_string(id)))["state"]);
  }
  EXPECT_EQ(1, evictions(d));  // a, once, after its last job
}

// A job's wait for its service is bounded by its plugin's queue_timeout, and the failure says
// what it waited for.
TEST(Queue, AJobWaitsNoLongerThanItsPluginsQueueTimeout) {
  const std::string dir = make_temp_dir("queuejob");
  FakeGpu gpu(dir, kOneGpu);
  const int port_b = free_port();
  Daemon d("services:\n" + proxied("a", free_port(), 10, "1m") + proxied("b", port_b, 20, "1m") +
               "plugins:\n  manifests:\n"
               "    - {name: echo, category: demo, mode: http, service: b, queue_timeout: 1s,\n"
               "       http: {url: \"http://127.0.0.1:" +
               std::to_string(port_b) + "/echo\"}}\n",
           dir);
  ASSERT_TRUE(d.start()) << d.stderr_text();
  auto stream = std::async(
      std::launch::async, [&] { return d.call("GET", "/upstream/a/stream?n=40&interval_ms=100"); });
  ASSERT_TRUE(d.wait_state("a", "busy"));
  const int64_t id = body(d.call("POST", "/api/v1/plugins/demo_echo/jobs"))["id"];
  EXPECT_TRUE(d.wait_event(
      [&](const nlohmann::json& e) { return e["type"] == "job.failed" && e["data"]["id"] == id; }));
  const auto job = body(d.call("GET", "/api/v1/jobs/" + std::to_string(id)));
  EXPECT_EQ("failed", job["state"]);
  EXPECT_NE(std::string::npos, job["error"].get<std::string>().find("waiting for busy a"))
      << job.dump();
  EXPECT_EQ("1s", body(d.call("GET", "/api/v1/plugins/demo_echo"))["queue_timeout"]);
  ASSERT_TRUE(stream.get().ok());
}

}  // namespace
}  // namespace gpuvisor::itest
