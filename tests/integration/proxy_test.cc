// The on-demand proxy through the real daemon and the test service: routing by path and by
// model, starting a service for a request, keeping it busy under requests, streaming, limits,
// idle stops and the key.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdlib>
#include <utility>

#include "testkit/daemon.h"

namespace gpuvisor::itest {
namespace {

// A service "NAME" on port, proxied, with extra settings appended to its proxy map.
std::string proxied(const std::string& name, int port, const std::string& proxy_extra = "",
                    const std::string& service_extra = "", const std::string& args = "") {
  const std::string p = std::to_string(port);
  return "  " + name + ":\n    command: [$TESTSVC, --port, \"" + p + "\"" + args +
         "]\n    health: {http: \"http://127.0.0.1:" + p + "/health\"}\n" +
         "    proxy: {url: \"http://127.0.0.1:" + p + "\"" + proxy_extra + "}\n" + service_extra;
}

// A raw HTTP client on the daemon's port, for what HttpClient hides: reading a response in
// pieces, and hanging up in the middle.
class RawClient {
 public:
  explicit RawClient(const std::string& url) {
    const auto colon = url.rfind(':');
    fd_ = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(static_cast<uint16_t>(std::atoi(url.c_str() + colon + 1)));
    inet_pton(AF_INET, "127.0.0.1", &addr.sin_addr);
    connected_ = connect(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0;
  }
  ~RawClient() { hang_up(); }
  bool send(const std::string& request) {
    return connected_ &&
           write(fd_, request.data(), request.size()) == static_cast<ssize_t>(request.size());
  }
  // Reads until text has arrived (true) or the connection ends or limit passes (false).
  bool read_until(const std::string& text, int limit_ms = 20'000) {
    for (int waited = 0; received_.find(text) == std::string::npos; waited += 10) {
      pollfd p{fd_, POLLIN, 0};
      if (waited > limit_ms) return false;
      if (poll(&p, 1, 10) <= 0) continue;
      char buf[4096];
      const ssize_t n = read(fd_, buf, sizeof buf);
      if (n <= 0) return false;
      received_.append(buf, static_cast<size_t>(n));
    }
    return true;
  }
  // Reads until the peer closes (true) or limit passes (false).
  bool read_to_end(int limit_ms = 20'000) {
    for (int waited = 0;; waited += 10) {
      pollfd p{fd_, POLLIN, 0};
      if (waited > limit_ms) return false;
      if (poll(&p, 1, 10) <= 0) continue;
      char buf[4096];
      const ssize_t n = read(fd_, buf, sizeof buf);
      if (n <= 0) return true;
      received_.append(buf, static_cast<size_t>(n));
    }
  }
  // Sends the request and shuts the sending side with it, in one segment (corked until the
  // shutdown), as `nc -N` or an HTTP/1.0 script does on a quiet machine: the request is all
  // there is. Without the cork a loaded machine may deliver the FIN much later, which the
  // proxy must then take for a client that gave up.
  bool send_and_shut(const std::string& request) {
    const int on = 1;
    setsockopt(fd_, IPPROTO_TCP, TCP_CORK, &on, sizeof on);
    const bool sent = send(request);
    shutdown(fd_, SHUT_WR);
    return sent;
  }
  const std::string& received() const { return received_; }
  std::string take() { return std::exchange(received_, {}); }
  void hang_up() {
    if (fd_ >= 0) close(fd_);
    fd_ = -1;
  }

 private:
  int fd_ = -1;
  bool connected_ = false;
  std::string received_;
};

std::string post(const std::string& target, const std::string& json) {
  return "POST " + target + " HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n" +
         "Content-Length: " + std::to_string(json.size()) + "\r\n\r\n" + json;
}

TEST(Proxy, OpenAiRequestsGoToTheServiceThatServesTheirModelStartingItFirst) {
  const int a = free_port();
  const int b = free_port();
  Daemon d("services:\n" + proxied("small", a, ", models: [llama3, llama3:8b]") +
           proxied("big", b, ", models: [qwen]"));
  ASSERT_TRUE(d.start()) << d.stderr_text();
  const auto reply =
      d.call("POST", "/v1/chat/completions", R"({"model": "llama3:8b", "messages": []})");
  ASSERT_TRUE(reply);
  ASSERT_EQ(200u, reply->status) << reply->body;
  const auto answer = nlohmann::json::parse(reply->body);
  EXPECT_EQ("llama3:8b", answer["model"]);
  EXPECT_EQ("/v1/chat/completions", answer["path"]);
  EXPECT_EQ(d.service("small")["pid"], answer["pid"]);  // started for the request
  EXPECT_EQ("stopped", d.service("big")["state"]);

  const auto models = body(d.call("GET", "/v1/models"));
  ASSERT_EQ(3u, models["data"].size()) << models.dump();
  EXPECT_EQ("qwen", models["data"][2]["id"]);
  EXPECT_EQ("big", models["data"][2]["owned_by"]);
  const auto unknown = d.call("POST", "/v1/chat/completions", R"({"model": "gpt-9"})");
  EXPECT_EQ(404u, unknown->status);
  EXPECT_EQ("no service serves model 'gpt-9' (known: llama3, llama3:8b, qwen)",
            body(unknown)["error"]["message"]);
  const auto nameless = d.call("POST", "/v1/embeddings", R"({"input": "x"})");
  EXPECT_EQ(400u, nameless->status);
  EXPECT_EQ("stopped", d.service("big")["state"]);  // nothing started for bad requests
}

TEST(Proxy, UpstreamPathsForwardBodiesAndQueries) {
  const int port = free_port();
  Daemon d("services:\n" + proxied("svc", port) + proxied("other", free_port()) +
           "  plain:\n    command: [$TESTSVC, --port, \"" + std::to_string(free_port()) + "\"]\n");
  ASSERT_TRUE(d.start()) << d.stderr_text();
  const auto echoed = d.call("POST", "/upstream/svc/echo?x=1", R"({"text": "hi"})");
  ASSERT_TRUE(echoed);
  EXPECT_EQ(200u, echoed->status);
  EXPECT_EQ(R"({"text": "hi"})", echoed->body);
  // Bodies that do not come in one piece with their head: small enough to be sent whole (under
  // 64 KiB), and larger ones relayed as they come; each byte arrives, in order.
  for (const size_t size : {size_t{40'000}, size_t{300'000}}) {
    std::string big(size, 'x');
    for (size_t i = 0; i < big.size(); i += 997) big[i] = static_cast<char>('a' + i % 26);
    const auto large = d.call("POST", "/upstream/svc/echo", big);
    ASSERT_TRUE(large);
    EXPECT_EQ(200u, large->status);
    EXPECT_TRUE(large->body == big)
        << "a " << size << "-byte body came back as " << large->body.size() << " bytes";
  }
  EXPECT_EQ(404u, d.call("GET", "/upstream/svc/nope")->status);  // the service's own 404
  EXPECT_EQ("no service 'ghost'", body(d.call("GET", "/upstream/ghost/x"))["error"]["message"]);
  EXPECT_EQ("service 'plain' has no proxy url: it is not proxied",
            body(d.call("GET", "/upstream/plain/"))["error"]["message"]);
}

TEST(Proxy, AStreamReachesTheClientAsTheServiceWritesIt) {
  const int port = free_port();
  Daemon d("services:\n" + proxied("svc", port));
  ASSERT_TRUE(d.start()) << d.stderr_text();
  ASSERT_EQ(0, d.cli({"ensure", "svc"}).exit_code);
  RawClient c(d.url());
  ASSERT_TRUE(c.send("GET /upstream/svc/stream?n=3&interval_ms=400 HTTP/1.1\r\nHost: x\r\n\r\n"));
  // The first event is here while the service still has two to write: nothing was buffered.
  ASSERT_TRUE(c.read_until("data: 3 ")) << c.received();
  EXPECT_EQ(std::string::npos, c.received().find("data: 2 ")) << c.received();
  EXPECT_EQ("busy", d.service("svc")["state"]);                // a request in flight: never evicted
  ASSERT_TRUE(c.read_until("\r\n0\r\n\r\n")) << c.received();  // then the end, in order
  EXPECT_LT(c.received().find("data: 2 "), c.received().find("data: 1 "));
}

// Regression: the last chunk, "0\r\n\r\n", went out twice. curl stops at the first; Node's
// parser and httpx take the second for the start of the next response and fail.
TEST(Proxy, AChunkedResponseEndsOnceAndTheConnectionCarriesTheNextRequest) {
  const int port = free_port();
  Daemon d("services:\n" + proxied("svc", port));
  ASSERT_TRUE(d.start()) << d.stderr_text();
  RawClient c(d.url());
  const std::string stream =
      "GET /upstream/svc/stream?n=3&interval_ms=5 HTTP/1.1\r\nHost: x\r\n\r\n";
  // Pipelined: the next answer follows the last chunk at once, with nothing in between.
  ASSERT_TRUE(c.send(stream + "GET /upstream/svc/health HTTP/1.1\r\nHost: x\r\n\r\n"));
  ASSERT_TRUE(c.read_until("\r\n\r\nok")) << c.received();
  EXPECT_NE(std::string::npos, c.received().find("\r\n0\r\n\r\nHTTP/1.1 200 OK\r\n"))
      << c.received();
  c.take();
  // And alone: nothing comes after its end.
  ASSERT_TRUE(c.send(stream));
  ASSERT_TRUE(c.read_until("\r\n0\r\n\r\n")) << c.received();
  EXPECT_FALSE(c.read_until("\r\n0\r\n\r\n0", 300)) << c.received();
  EXPECT_EQ(c.received().size() - 7, c.received().rfind("\r\n0\r\n\r\n")) << c.received();
}

TEST(Proxy, AClientThatShutsItsSideWithItsRequestStillGetsTheWholeAnswer) {
  const int port = free_port();
  Daemon d("services:\n" + proxied("svc", port));
  ASSERT_TRUE(d.start()) << d.stderr_text();
  ASSERT_EQ(0, d.cli({"ensure", "svc"}).exit_code);
  RawClient c(d.url());
  ASSERT_TRUE(
      c.send_and_shut("GET /upstream/svc/stream?n=3&interval_ms=100 HTTP/1.1\r\nHost: x\r\n\r\n"));
  ASSERT_TRUE(c.read_to_end()) << c.received();
  EXPECT_NE(std::string::npos, c.received().find("data: 1 ")) << c.received();
  EXPECT_NE(std::string::npos, c.received().find("Connection: close\r\n")) << c.received();
  EXPECT_EQ(c.received().size() - 5, c.received().rfind("0\r\n\r\n")) << c.received();
}

TEST(Proxy, ABodyAfterExpect100ContinueIsAskedForThenStreamedThrough) {
  const int port = free_port();
  Daemon d("services:\n" + proxied("svc", port));
  ASSERT_TRUE(d.start()) << d.stderr_text();
  // Larger than what comes with a head, so that it is streamed rather than sent whole.
  const std::string body(200'000, 'b');
  RawClient c(d.url());
  ASSERT_TRUE(
      c.send("POST /upstream/svc/echo HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
             "Content-Length: " +
             std::to_string(body.size()) + "\r\n\r\n"));
  // Asked for once the service is up (it was started for this request), not after a timeout.
  ASSERT_TRUE(c.read_until("HTTP/1.1 100 Continue\r\n\r\n")) << c.received();
  ASSERT_TRUE(c.send(body));
  ASSERT_TRUE(c.read_until(body)) << c.received().substr(0, 300);
  EXPECT_EQ(0u, c.received().find("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\n"))
      << c.received().substr(0, 300);
  // The service got the body, not the Expect: no interim answer of its own came through.
  EXPECT_EQ(c.received().find("100 Continue"), c.received().rfind("100 Continue"));
}

TEST(Proxy, ANonChunkedStreamToAnHttp10ClientEndsWithTheConnection) {
  const int port = free_port();
  Daemon d("services:\n" + proxied("svc", port));
  ASSERT_TRUE(d.start()) << d.stderr_text();
  RawClient c(d.url());
  ASSERT_TRUE(c.send("GET /upstream/svc/stream?n=2&interval_ms=5 HTTP/1.0\r\n\r\n"));
  ASSERT_TRUE(c.read_to_end()) << c.received();
  const std::string& all = c.received();
  EXPECT_EQ(std::string::npos, all.find("chunked")) << all;  // 1.0 has no chunked coding
  EXPECT_NE(std::string::npos, all.find("Connection: close\r\n")) << all;
  EXPECT_EQ(all.size() - 2, all.rfind("\n\n")) << all;  // ends with the last event, unframed
  EXPECT_NE(std::string::npos, all.find("data: 1 ")) << all;
}

// Proxied connections run on threads of their own, and an API call from one of them runs on
// the main thread: a SIGTERM while both are open must still end the daemon cleanly.
TEST(Proxy, ADaemonStopsCleanlyWithAStreamAndAnEventStreamOpenOnItsThreads) {
  const int port = free_port();
  Daemon d("services:\n" + proxied("svc", port));
  ASSERT_TRUE(d.start()) << d.stderr_text();
  RawClient events(d.url());
  ASSERT_TRUE(events.send("GET /api/v1/events HTTP/1.1\r\nHost: x\r\n\r\n"));
  ASSERT_TRUE(events.read_until("\r\n\r\n")) << events.received();
  RawClient stream(d.url());
  ASSERT_TRUE(
      stream.send("GET /upstream/svc/stream?n=100&interval_ms=200 HTTP/1.1\r\nHost: x\r\n\r\n"));
  ASSERT_TRUE(stream.read_until("data: 100 ")) << stream.received();
  EXPECT_EQ(0, d.terminate()) << d.stderr_text();
}

TEST(Proxy, AClientThatHangsUpEndsItsUpstreamRequestAndTheServiceIsIdleAgain) {
  const int port = free_port();
  Daemon d("services:\n" + proxied("svc", port));
  ASSERT_TRUE(d.start()) << d.stderr_text();
  ASSERT_EQ(0, d.cli({"ensure", "svc"}).exit_code);
  // The n-th time the service went busy, or came back idle.
  const auto nth = [](const std::string& to, int n) {
    return [to, n, seen = 0](const nlohmann::json& e) mutable {
      return e["type"] == "service.state_changed" && e["data"]["to"] == to &&
             (to != "ready" || e["data"]["reason"] == "idle again") && ++seen == n;
    };
  };
  // No answer at all, then an answer whose head never ends: either way the hang-up ends it.
  int round = 0;
  for (const std::string target : {"/upstream/svc/hang", "/upstream/svc/hang?head=partial"}) {
    ++round;
    {
      RawClient c(d.url());
      ASSERT_TRUE(c.send(post(target, "{}")));
      ASSERT_TRUE(d.wait_event(nth("busy", round))) << target;
    }  // hangs up
    EXPECT_TRUE(d.wait_event(nth("ready", round))) << target << "\n" << d.stderr_text();
  }
}

TEST(Proxy, ARequestThatWaitsTooLongForItsServiceGets503WithRetryAfter) {
  const int port = free_port();
  Daemon d("services:\n" + proxied("slow", port, ", wait: 300ms", "", ", --ready-after, \"5000\""));
  ASSERT_TRUE(d.start()) << d.stderr_text();
  const auto reply = d.call("GET", "/upstream/slow/");
  ASSERT_TRUE(reply);
  EXPECT_EQ(503u, reply->status) << reply->body;
  EXPECT_EQ("1", reply->headers.at("retry-after"));
  EXPECT_EQ("starting", d.service("slow")["state"]);  // the start goes on for the next one
}

TEST(Proxy, AConcurrencyLimitQueuesRequestsAndTurnsAwayThoseThatWaitTooLong) {
  const int port = free_port();
  Daemon d("services:\n" + proxied("svc", port, ", concurrency: 1, wait: 300ms"));
  ASSERT_TRUE(d.start()) << d.stderr_text();
  ASSERT_EQ(0, d.cli({"ensure", "svc"}).exit_code);
  RawClient first(d.url());
  ASSERT_TRUE(first.send(post("/upstream/svc/hang", "{}")));
  ASSERT_TRUE(d.wait_event([](const nlohmann::json& e) {
    return e["type"] == "service.state_changed" && e["data"]["to"] == "busy";
  }));
  const auto second = d.call("POST", "/upstream/svc/echo", "{}");
  ASSERT_TRUE(second);
  EXPECT_EQ(503u, second->status);
  EXPECT_EQ("'svc' has 1 requests running and no slot freed within 300ms",
            body(second)["error"]["message"]);
  first.hang_up();  // its slot goes to the next request
  const auto third = d.call("POST", "/upstream/svc/echo", "{\"n\": 3}");
  EXPECT_EQ(200u, third->status) << third->body;
}

TEST(Proxy, IdleTtlStopsAServiceNobodyUses) {
  const int port = free_port();
  Daemon d("services:\n" + proxied("svc", port, "", "    idle_ttl: 200ms\n"));
  ASSERT_TRUE(d.start()) << d.stderr_text();
  EXPECT_EQ(200u, d.call("POST", "/upstream/svc/echo", "{}")->status);
  EXPECT_TRUE(d.wait_event([](const nlohmann::json& e) {
    return e["type"] == "service.state_changed" && e["data"]["to"] == "stopping" &&
           e["data"]["reason"] == "idle for 200ms (idle_ttl)";
  })) << d.stderr_text();
  EXPECT_TRUE(d.wait_state("svc", "stopped"));
  EXPECT_EQ(200u, d.call("POST", "/upstream/svc/echo", "{}")->status);  // and back on demand
}

TEST(Proxy, WithAKeyTheProxyWantsItAndDoesNotPassItOn) {
  setenv("GPUVISOR_TOKEN", "s3cret", 1);
  const int port = free_port();
  Daemon d("services:\n" + proxied("svc", port));
  ASSERT_TRUE(d.start()) << d.stderr_text();
  RawClient c(d.url());
  ASSERT_TRUE(c.send(post("/upstream/svc/echo", "{}")));
  EXPECT_TRUE(c.read_until("HTTP/1.1 401")) << c.received();
  unsetenv("GPUVISOR_TOKEN");
  const auto keyed = HttpClient::create(d.url(), "s3cret");
  ASSERT_TRUE(keyed);
  const auto reply = keyed->request("POST", "/upstream/svc/echo", Millis(30'000), "{\"k\": 1}");
  ASSERT_TRUE(reply);
  EXPECT_EQ(200u, reply->status);
}

TEST(Proxy, AListenPortForwardsEverythingToItsServiceStartingItOnDemand) {
  const int port = free_port();
  const int own = free_port();
  Daemon d("services:\n" + proxied("svc", port,
                                   ", listen: \"127.0.0.1:" + std::to_string(own) + "\"",
                                   "    idle_ttl: 300ms\n"));
  ASSERT_TRUE(d.start()) << d.stderr_text();
  EXPECT_EQ("stopped", d.service("svc")["state"]);
  // Any path, as it came: the service sees /echo, not /upstream/svc/echo.
  RawClient c("http://127.0.0.1:" + std::to_string(own));
  ASSERT_TRUE(c.send(post("/echo?x=1", R"({"k": 1})")));
  ASSERT_TRUE(c.read_until(R"({"k": 1})")) << c.received();
  EXPECT_EQ(0u, c.received().find("HTTP/1.1 200 OK\r\n")) << c.received();
  c.hang_up();
  EXPECT_TRUE(d.wait_state("svc", "stopped")) << "idle_ttl counts for the port too";
  const auto metrics = d.call("GET", "/metrics");
  EXPECT_NE(std::string::npos,
            metrics->body.find("gpuvisor_proxy_requests_total{service=\"svc\"} 1\n"))
      << metrics->body;
}

TEST(Proxy, AListenPortTakenAtStartUpNamesTheServiceThatWantedIt) {
  const int taken = free_port();
  const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(taken));
  inet_pton(AF_INET, "127.0.0.1", &addr.sin_addr);
  ASSERT_EQ(0, bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr));
  ASSERT_EQ(0, listen(fd, 1));
  Daemon d("services:\n" +
           proxied("comfy", free_port(), ", listen: \"127.0.0.1:" + std::to_string(taken) + "\""));
  EXPECT_FALSE(d.start());
  close(fd);
  EXPECT_NE(std::string::npos, d.stderr_text().find("service 'comfy' (proxy.listen): cannot listen "
                                                    "on 127.0.0.1:" +
                                                    std::to_string(taken)))
      << d.stderr_text();
}

TEST(Proxy, BadListenPortsAreConfigErrors) {
  Daemon d(
      "daemon: {listen: \"127.0.0.1:7799\"}\n"
      "services:\n"
      "  a:\n    command: [x]\n    proxy: {url: \"http://127.0.0.1:1\", listen: "
      "\"127.0.0.1:8188\"}\n"
      "  b:\n    command: [x]\n    proxy: {url: \"http://127.0.0.1:2\", listen: \"0.0.0.0:8188\"}\n"
      "  c:\n    command: [x]\n    proxy: {url: \"http://127.0.0.1:3\", listen: \"127.0.0.1:3\"}\n"
      "  e:\n    command: [x]\n    proxy: {url: \"http://127.0.0.1:4\", listen: "
      "\"127.0.0.1:7799\"}\n"
      "  f:\n    command: [x]\n    proxy: {url: \"http://127.0.0.1:5\", listen: \"8188\"}\n"
      "  g:\n    command: [x]\n    proxy: {url: \"http://127.0.0.1:6\", listen: "
      "\"127.0.0.1:0\"}\n");
  EXPECT_FALSE(d.start());
  const std::string err = d.stderr_text();
  EXPECT_NE(std::string::npos,
            err.find("service 'b': proxy.listen '0.0.0.0:8188' is already service 'a''s "
                     "proxy.listen; a port serves one service"))
      << err;
  EXPECT_NE(std::string::npos,
            err.find("service 'c': proxy.listen '127.0.0.1:3' is the service's own proxy.url: it "
                     "would forward to itself"))
      << err;
  EXPECT_NE(std::string::npos,
            err.find("service 'e': proxy.listen '127.0.0.1:7799' is already the daemon's own "
                     "address (daemon.listen)"))
      << err;
  EXPECT_NE(std::string::npos, err.find("HOST:PORT with a port 1-65535, e.g. 127.0.0.1:8188"))
      << err;
}

TEST(Proxy, BadProxySettingsAreConfigErrors) {
  Daemon d(
      "services:\n"
      "  a:\n    command: [x]\n    proxy: {url: \"http://127.0.0.1:1\", models: [m]}\n"
      "  b:\n    command: [x]\n    proxy: {url: \"http://127.0.0.1:2\", models: [m]}\n"
      "  c:\n    command: [x]\n    proxy: {models: [n], wait: soon}\n"
      "  e:\n    command: [x]\n    proxy: ftp://x\n");
  EXPECT_FALSE(d.start());
  const std::string err = d.stderr_text();
  EXPECT_NE(std::string::npos,
            err.find("service 'b': model 'm' is already served by 'a'; a model names one service"))
      << err;
  EXPECT_NE(std::string::npos, err.find("service 'c': 'proxy' needs 'url'")) << err;
  EXPECT_NE(std::string::npos, err.find("'wait': bad duration 'soon'")) << err;
  EXPECT_NE(std::string::npos, err.find("a URL starting with http://")) << err;
}

}  // namespace
}  // namespace gpuvisor::itest
