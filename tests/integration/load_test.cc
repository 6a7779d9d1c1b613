// Load: one daemon on a simulated 24 GB GPU with four services of 16 GB each, all of the same
// priority, so that only one runs at a time and each start evicts the one before. At once:
// 1,000 management calls (ensure, stop and every read-only view, the event stream included) and
// 500 keep-alive proxy connections asking different services in turn. Every request must get a
// whole, well-formed reply; the daemon must still answer afterwards; its event ids must go up
// one by one; and once everything is stopped, no process of the services may be left.
//
// The clients are coroutines on one io_context in this thread. Nothing waits by the clock: the
// only timer is an overall deadline that fails the test with what was still unanswered (a
// deadlock detector, far above what the run needs).
#include <gtest/gtest.h>
#include <sys/resource.h>
#include <unistd.h>

#include <array>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http.hpp>
#include <deque>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <set>
#include <sstream>

#include "testkit/daemon.h"
#include "testkit/fake_gpu.h"

namespace gpuvisor::itest {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using asio::ip::tcp;
using nlohmann::json;
using Response = http::response<http::string_body>;

constexpr int kServices = 4;
constexpr int kCalls = 1000;
constexpr int kConnections = 500;
constexpr int kRequestsPerConnection = 4;
constexpr auto kDeadline = 120s;
const char* const kNames[kServices] = {"a", "b", "c", "d"};

const auto kAwait = asio::use_awaitable;

// One client: a management call or a proxy connection, and how far it got.
struct Client {
  explicit Client(std::string w) : what(std::move(w)) {}
  std::string what;
  std::string stage = "not started";
  bool done = false;
  std::string failure;                  // why its reply was wrong or missing; empty if it was right
  beast::tcp_stream* stream = nullptr;  // while connected: the deadline cuts it
};

struct LoadRun {
  asio::io_context io;
  tcp::endpoint daemon;
  std::deque<Client> clients;
  size_t open = 0;  // clients not done yet
  asio::steady_timer deadline{io};
  bool deadline_passed = false;
  std::vector<std::string> unanswered;  // what the deadline found still open, and where
  beast::tcp_stream* watcher = nullptr;
  std::string watcher_failure;
  // What came back.
  std::map<std::string, std::map<unsigned, int>> statuses;  // kind -> HTTP status -> count
  std::vector<std::pair<std::string, pid_t>> served;        // proxied 200s: service, its pid
  int reconnects = 0;
  int retry_after = 0;  // proxied 503s that carried Retry-After
  std::vector<uint64_t> event_ids;
  std::map<pid_t, std::string> pid_owner;  // from the events
  int evictions = 0;                       // plan decisions that stopped something
  std::map<std::string, int> errors;       // "STATUS message" (digits as #) -> count

  void count(const std::string& kind, const Response& r) {
    ++statuses[kind][r.result_int()];
    if (r.result_int() < 300) return;
    const auto j = json::parse(r.body(), nullptr, false);
    std::string m = j.is_object() && j.contains("error") && j["error"].is_object()
                        ? j["error"].value("message", "")
                        : r.body();
    for (auto& ch : m) ch = ch >= '0' && ch <= '9' ? '#' : ch;
    ++errors[kind + " " + std::to_string(r.result_int()) + " " + m.substr(0, 160)];
  }

  void finish(Client& c) {
    c.done = true;
    c.stream = nullptr;
    if (--open > 0) return;
    deadline.cancel();
    if (watcher != nullptr) watcher->close();
  }
};

std::string error_body_problem(const Response& r) {
  const auto j = json::parse(r.body(), nullptr, false);
  const bool ok = j.is_object() && j.contains("error") && j["error"].is_object() &&
                  j["error"].contains("code") && j["error"]["code"].is_string() &&
                  j["error"].contains("message") && j["error"]["message"].is_string() &&
                  !j["error"]["message"].get<std::string>().empty();
  return ok ? ""
            : "HTTP " + std::to_string(r.result_int()) +
                  " without a JSON error body: " + r.body().substr(0, 300);
}

asio::awaitable<bool> connect(LoadRun& run, Client& c, beast::tcp_stream& s) {
  c.stage = "connecting";
  c.stream = &s;
  boost::system::error_code ec;
  co_await s.async_connect(run.daemon, asio::redirect_error(kAwait, ec));
  if (ec) c.failure = "cannot connect: " + ec.message();
  co_return !ec;
}

// One request on an open connection and its whole reply; false (c.failure says why) if the
// connection ended first.
asio::awaitable<bool> exchange(Client& c, beast::tcp_stream& s, beast::flat_buffer& buffer,
                               http::verb verb, const std::string& target, Response& out) {
  http::request<http::string_body> req{verb, target, 11};
  req.set(http::field::host, "127.0.0.1");
  req.keep_alive(true);
  req.prepare_payload();
  boost::system::error_code ec;
  c.stage = "sending " + target;
  co_await http::async_write(s, req, asio::redirect_error(kAwait, ec));
  if (ec) {
    c.failure = "sending " + target + ": " + ec.message();
    co_return false;
  }
  c.stage = "waiting for the reply to " + target;
  http::response_parser<http::string_body> parser;
  parser.body_limit(64 << 20);
  co_await http::async_read(s, buffer, parser, asio::redirect_error(kAwait, ec));
  if (ec) {
    c.failure = "no whole reply to " + target + ": " + ec.message();
    co_return false;
  }
  out = parser.release();
  co_return true;
}

// What a management call's reply must be; empty if it is right.
using Check = std::function<std::string(const Response&)>;

std::string must_be_ok(const Response& r) {
  return r.result_int() == 200 ? "" : "HTTP " + std::to_string(r.result_int()) + ": " + r.body();
}

// 200 with a JSON object that has key.
Check ok_with(const std::string& key) {
  return [key](const Response& r) -> std::string {
    if (auto bad = must_be_ok(r); !bad.empty()) return bad;
    const auto j = json::parse(r.body(), nullptr, false);
    return j.is_object() && j.contains(key) ? "" : "no '" + key + "' in " + r.body();
  };
}

// ensure and stop race each other, evictions and the proxy's busy holds: any of these statuses,
// a service object on success and an error body otherwise.
Check raced(const std::string& service, const std::set<std::string>& states) {
  return [service, states](const Response& r) -> std::string {
    const unsigned s = r.result_int();
    if (s == 200) {
      const auto j = json::parse(r.body(), nullptr, false);
      if (!j.is_object() || j.value("name", "") != service ||
          states.count(j.value("state", "")) == 0) {
        return "200 that is not '" + service + "' in an expected state: " + r.body();
      }
      return "";
    }
    if (s != 409 && s != 503 && s != 504) return "unexpected HTTP " + std::to_string(s);
    return error_body_problem(r);
  };
}

asio::awaitable<void> management_call(LoadRun& run, Client& c, http::verb verb, std::string target,
                                      std::string kind, Check check) {
  beast::tcp_stream s(run.io);
  beast::flat_buffer buffer;
  Response reply;
  if (co_await connect(run, c, s) && co_await exchange(c, s, buffer, verb, target, reply)) {
    run.count(kind, reply);
    c.failure = check(reply);
  }
  run.finish(c);
}

// Reads an SSE response's head and frames; on_frame returns false to stop. False (c.failure or
// why says why) if the stream ended or was not one.
asio::awaitable<bool> read_events(beast::tcp_stream& s, std::string& why,
                                  const std::function<bool(const SseMessage&)>& on_frame) {
  const std::string req = "GET /api/v1/events HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";
  boost::system::error_code ec;
  co_await asio::async_write(s, asio::buffer(req), asio::redirect_error(kAwait, ec));
  std::string received;
  bool head = false;
  SseParser parser;
  std::array<char, 16384> chunk{};
  while (!ec) {
    const size_t n =
        co_await s.async_read_some(asio::buffer(chunk), asio::redirect_error(kAwait, ec));
    if (ec) break;
    if (head) {
      if (!parser.feed(std::string_view(chunk.data(), n), on_frame)) co_return true;
      continue;
    }
    received.append(chunk.data(), n);
    const auto end = received.find("\r\n\r\n");
    if (end == std::string::npos) continue;
    if (received.rfind("HTTP/1.1 200", 0) != 0 ||
        received.find("text/event-stream") == std::string::npos) {
      why = "not an event stream: " + received.substr(0, 300);
      co_return false;
    }
    head = true;
    if (!parser.feed(std::string_view(received).substr(end + 4), on_frame)) co_return true;
  }
  why = "the event stream ended: " + ec.message();
  co_return false;
}

// A management call on the event stream: its head and the first frame of the history.
asio::awaitable<void> events_call(LoadRun& run, Client& c) {
  beast::tcp_stream s(run.io);
  if (co_await connect(run, c, s)) {
    c.stage = "reading the event stream";
    bool framed = false;
    const std::function<bool(const SseMessage&)> first = [&](const SseMessage& m) {
      framed = !m.id.empty();
      return false;
    };
    co_await read_events(s, c.failure, first);
    if (framed) {
      ++run.statuses["events"][200];
    } else if (c.failure.empty()) {
      c.failure = "a first frame without an id";
    }
  }
  run.finish(c);
}

asio::awaitable<void> proxy_connection(LoadRun& run, Client& c, int index) {
  beast::tcp_stream s(run.io);
  beast::flat_buffer buffer;
  bool connected = co_await connect(run, c, s);
  for (int k = 0; connected && k < kRequestsPerConnection && c.failure.empty(); ++k) {
    const std::string service = kNames[(index + k) % kServices];
    Response reply;
    if (!co_await exchange(c, s, buffer, http::verb::get, "/upstream/" + service + "/", reply)) {
      break;
    }
    const unsigned status = reply.result_int();
    run.count("proxy", reply);
    if (status == 200) {
      const auto j = json::parse(reply.body(), nullptr, false);
      if (!j.is_object() || !j.contains("pid") || !j["pid"].is_number_integer()) {
        c.failure = "a 200 from '" + service + "' that is not the test service's: " + reply.body();
      } else {
        run.served.emplace_back(service, j["pid"].get<pid_t>());
      }
    } else if (status == 409 || status == 503 || status == 502) {
      // 409: refused a place (another service busy or starting) or stopped under the request;
      // 503: the wait ran out (with Retry-After) or the start failed; 502: an API stop took
      // the service away while the request was on its way. Each says why.
      c.failure = error_body_problem(reply);
      if (status == 503 && reply.count(http::field::retry_after) > 0) ++run.retry_after;
    } else {
      c.failure = "proxied GET /upstream/" + service + "/: unexpected HTTP " +
                  std::to_string(status) + ": " + reply.body();
    }
    if (!reply.keep_alive() && k + 1 < kRequestsPerConnection) {  // the daemon closed it
      ++run.reconnects;
      s.close();
      c.stream = nullptr;
      buffer.clear();
      connected = co_await connect(run, c, s);
    }
  }
  run.finish(c);
}

// Follows the whole event stream while the load runs, and starts the load once it is on.
asio::awaitable<void> watch_events(LoadRun& run, std::function<void()> start_load) {
  beast::tcp_stream s(run.io);
  boost::system::error_code ec;
  co_await s.async_connect(run.daemon, asio::redirect_error(kAwait, ec));
  if (ec) {
    run.watcher_failure = "cannot connect: " + ec.message();
    co_return;
  }
  run.watcher = &s;
  bool started = false;
  std::string why;
  const std::function<bool(const SseMessage&)> on_frame = [&](const SseMessage& m) {
    if (!started) {
      started = true;
      start_load();
    }
    const auto e = json::parse(m.data, nullptr, false);
    if (!e.is_object() || !e.contains("id")) {
      run.watcher_failure = "a frame without a JSON event: " + m.data;
      return false;
    }
    run.event_ids.push_back(e["id"].get<uint64_t>());
    const auto& data = e["data"];
    if (e["type"] == "service.state_changed" && data.value("pid", 0) != 0) {
      run.pid_owner[data["pid"].get<pid_t>()] = data["service"].get<std::string>();
    }
    if (e["type"] == "plan.decided" && data.contains("evict") && !data["evict"].empty()) {
      ++run.evictions;
    }
    return true;
  };
  co_await read_events(s, why, on_frame);
  run.watcher = nullptr;
  // Closed by the last client (or the deadline): anything else is the stream failing early.
  if (run.open > 0 && !run.deadline_passed && run.watcher_failure.empty()) {
    run.watcher_failure = why;
  }
  if (!started) run.deadline.cancel();  // no load to wait for
}

void raise_fd_limit() {
  rlimit limit{};
  if (getrlimit(RLIMIT_NOFILE, &limit) == 0 && limit.rlim_cur < limit.rlim_max) {
    limit.rlim_cur = limit.rlim_max;
    setrlimit(RLIMIT_NOFILE, &limit);
  }
}

// A process of this test's simulated GPU (the fake NVML directory is in its environment).
bool ours(pid_t pid, const std::string& marker) {
  if (!pid_alive(pid)) return false;
  std::ifstream in("/proc/" + std::to_string(pid) + "/environ");
  std::string env(std::istreambuf_iterator<char>(in), {});
  return env.find(marker + '\0') != std::string::npos;
}

std::string four_big_services(const std::string& dir) {
  std::string yaml = "services:\n";
  for (const char* name : kNames) {
    const std::string p = std::to_string(free_port());
    yaml += std::string("  ") + name + ":\n    command: [$TESTSVC, --port, \"" + p +
            "\", --vram-mb, \"16000\", --report, " + dir +
            "/report]\n    vram_mb: 16000\n    priority: 5\n    stop_grace: 5s\n"
            "    health: {tcp: \"127.0.0.1:" +
            p + "\"}\n    proxy: {url: \"http://127.0.0.1:" + p + "\", wait: 20s}\n";
  }
  return yaml;
}

TEST(Load, ConcurrentCallsAndProxiedConnectionsWhileServicesSwapAreAllAnswered) {
  raise_fd_limit();
  const std::string dir = make_temp_dir("load");
  FakeGpu gpu(dir);
  std::ofstream(dir + "/gpu/devices.json") << R"({"devices": [{"total_mb": 24576}]})";
  Daemon d(four_big_services(dir), dir);
  ASSERT_TRUE(d.start({"--log-level", "warn"})) << d.stderr_text();
  ASSERT_EQ(200u, d.call("POST", "/api/v1/services/a/ensure")->status) << d.stderr_text();

  LoadRun run;
  const auto colon = d.url().rfind(':');
  run.daemon = tcp::endpoint(asio::ip::make_address("127.0.0.1"),
                             static_cast<uint16_t>(std::stoi(d.url().substr(colon + 1))));
  const auto add = [&run](std::string what) -> Client& {
    ++run.open;
    return run.clients.emplace_back(std::move(what));
  };
  const auto start_load = [&] {
    for (int i = 0; i < kCalls; ++i) {
      const std::string name = kNames[(i / 10) % kServices];
      const std::string svc = "/api/v1/services/" + name;
      const auto call = [&](http::verb verb, const std::string& target, const std::string& kind,
                            Check check) {
        Client& c = add(std::string(http::to_string(verb)) + " " + target);
        asio::co_spawn(run.io, management_call(run, c, verb, target, kind, std::move(check)),
                       asio::detached);
      };
      switch (i % 10) {
        case 0:
        case 1:
        case 2:
        case 3:
          call(http::verb::post, svc + "/ensure?timeout=30s", "ensure",
               raced(name, {"ready", "busy"}));
          break;
        case 4:
          call(http::verb::post, svc + "/stop", "stop", raced(name, {"stopped"}));
          break;
        case 5:
          call(http::verb::get, "/api/v1/services", "services", ok_with("services"));
          break;
        case 6:
          call(http::verb::get, svc, "service", ok_with("state"));
          break;
        case 7:
          if (i % 20 < 10) {
            call(http::verb::get, "/api/v1/gpus", "gpus", ok_with("gpus"));
          } else {
            call(http::verb::get, "/api/v1/processes", "processes", ok_with("processes"));
          }
          break;
        case 8:
          if (i % 20 < 10) {
            call(http::verb::get, "/api/v1/resources", "resources", ok_with("gpus"));
          } else {
            call(http::verb::get, "/api/v1/plan/" + name, "plan", ok_with("ok"));
          }
          break;
        default:
          if (i % 30 < 10) {
            call(http::verb::get, "/metrics", "metrics", [](const Response& r) -> std::string {
              if (auto bad = must_be_ok(r); !bad.empty()) return bad;
              return r.body().find("gpuvisor_service_state{") != std::string::npos
                         ? ""
                         : "metrics without service states";
            });
          } else if (i % 30 < 20) {
            call(http::verb::get, "/healthz", "healthz", ok_with("status"));
          } else {
            Client& c = add("GET /api/v1/events (first frame)");
            asio::co_spawn(run.io, events_call(run, c), asio::detached);
          }
      }
    }
    for (int i = 0; i < kConnections; ++i) {
      Client& c = add("proxy connection " + std::to_string(i));
      asio::co_spawn(run.io, proxy_connection(run, c, i), asio::detached);
    }
  };

  ++run.open;  // the load itself: done once the watcher has started it
  Client& starter = run.clients.emplace_back("the event watcher starting the load");
  run.deadline.expires_after(kDeadline);
  run.deadline.async_wait([&run](boost::system::error_code ec) {
    if (ec) return;
    run.deadline_passed = true;
    for (auto& c : run.clients) {
      if (!c.done) run.unanswered.push_back(c.what + ": " + c.stage);
      if (c.stream != nullptr) c.stream->close();
    }
    if (run.watcher != nullptr) run.watcher->close();
  });
  asio::co_spawn(run.io,
                 watch_events(run,
                              [&] {
                                start_load();
                                run.finish(starter);
                              }),
                 asio::detached);
  const auto t0 = std::chrono::steady_clock::now();
  run.io.run();
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();

  // Every request answered, each reply as it should be.
  std::vector<std::string> unanswered = run.unanswered, wrong;
  for (const auto& c : run.clients) {
    if (!c.done) unanswered.push_back(c.what + ": " + c.stage);
    if (c.done && !c.failure.empty() && !run.deadline_passed) {
      wrong.push_back(c.what + ": " + c.failure);
    }
  }
  const auto first = [](const std::vector<std::string>& v) {
    std::string out;
    for (size_t i = 0; i < v.size() && i < 20; ++i) out += "\n  " + v[i];
    return out;
  };
  EXPECT_FALSE(run.deadline_passed)
      << unanswered.size() << " clients unanswered after " << kDeadline.count()
      << " s (a deadlock?)" << first(unanswered) << "\n"
      << d.stderr_text().substr(d.stderr_text().size() > 4000 ? d.stderr_text().size() - 4000 : 0);
  EXPECT_TRUE(unanswered.empty()) << first(unanswered);
  EXPECT_TRUE(wrong.empty()) << wrong.size() << " wrong replies:" << first(wrong);
  EXPECT_TRUE(run.watcher_failure.empty()) << run.watcher_failure;

  std::ostringstream figures;
  int requests = 0;
  for (const auto& [kind, by_status] : run.statuses) {
    figures << "  " << kind << ":";
    for (const auto& [status, n] : by_status) {
      figures << " " << status << " x" << n;
      requests += n;
    }
    figures << "\n";
  }
  std::cout << "load: " << requests << " replies in " << seconds << " s, " << run.evictions
            << " evictions, " << run.event_ids.size() << " events, " << run.retry_after
            << " proxied 503s with Retry-After, " << run.reconnects << " reconnects\n"
            << figures.str();
  for (const auto& [m, n] : run.errors) std::cout << "  " << n << " x " << m << "\n";
  EXPECT_EQ(kCalls + kConnections * kRequestsPerConnection, requests) << figures.str();

  // The event ids count up one by one from the first: the watcher saw the whole history.
  ASSERT_FALSE(run.event_ids.empty());
  EXPECT_EQ(1u, run.event_ids.front());
  for (size_t i = 1; i < run.event_ids.size(); ++i) {
    ASSERT_EQ(run.event_ids[i - 1] + 1, run.event_ids[i]) << "at position " << i;
  }
  // Each proxied 200 came from a process of the service it asked for.
  for (const auto& [service, pid] : run.served) {
    const auto owner = run.pid_owner.find(pid);
    ASSERT_NE(run.pid_owner.end(), owner) << "pid " << pid << " of no service served " << service;
    EXPECT_EQ(service, owner->second) << "pid " << pid;
  }

  // The daemon still answers, and once everything is stopped nothing of the services is left.
  ASSERT_TRUE(pid_alive(d.pid())) << d.stderr_text();
  const auto health = d.call("GET", "/healthz");
  ASSERT_TRUE(health) << health.error().message;
  EXPECT_EQ(200u, health->status);
  std::set<pid_t> pids;
  for (const auto& [pid, owner] : run.pid_owner) pids.insert(pid);
  std::ifstream report(dir + "/report");
  for (std::string line; std::getline(report, line);) {
    pids.insert(json::parse(line)["pid"].get<pid_t>());
  }
  // Named: a range-for over a member of a temporary would outlive the temporary (C++20).
  const json listed = json::parse(d.call("GET", "/api/v1/services")->body);
  for (const auto& s : listed["services"]) {
    if (s.value("pid", 0) != 0) pids.insert(s["pid"].get<pid_t>());
  }
  EXPECT_LT(1u, pids.size());  // services did start, and more than one process of them
  for (const char* name : kNames) {
    const auto stopped = d.call("POST", std::string("/api/v1/services/") + name + "/stop");
    ASSERT_TRUE(stopped) << stopped.error().message;
    EXPECT_EQ(200u, stopped->status) << stopped->body;
    EXPECT_EQ("stopped", json::parse(stopped->body)["state"]) << stopped->body;
  }
  const std::string marker = "FAKE_NVML_DIR=" + dir + "/gpu";
  for (const pid_t pid : pids) EXPECT_FALSE(ours(pid, marker)) << "pid " << pid << " is left";
  for (const auto& entry : std::filesystem::directory_iterator("/proc")) {
    const std::string name = entry.path().filename();
    if (name.find_first_not_of("0123456789") != std::string::npos) continue;
    const pid_t pid = std::stoi(name);
    if (pid == getpid() || pid == d.pid()) continue;
    EXPECT_FALSE(ours(pid, marker)) << "pid " << pid << " of this test's GPU is left";
  }
  EXPECT_EQ(0, d.terminate());
}

}  // namespace
}  // namespace gpuvisor::itest
