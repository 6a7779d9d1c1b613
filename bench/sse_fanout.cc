// Event fan-out: N clients hold /api/v1/events open (filtered to job events); one job is
// submitted at a time, and the time from sending the submission to each client reading its
// job.queued event is one sample. The next job goes once every client has the last one.
//
//   bench_sse_fanout [--clients N] [--events M]
#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <iostream>
#include <memory>
#include <string>
#include <vector>

#include "core/url.h"
#include "harness.h"
#include "stats.h"
#include "testkit/daemon.h"

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using gpuvisor::itest::Daemon;

namespace {

struct Bench;

// One SSE client: counts the job.queued events it has read.
struct Listener : std::enable_shared_from_this<Listener> {
  explicit Listener(asio::io_context& io, Bench& b) : socket(io), bench(b) {}
  void start(const asio::ip::tcp::endpoint& ep);
  void read();

  asio::ip::tcp::socket socket;
  Bench& bench;
  std::string request =
      "GET /api/v1/events?types=job.queued HTTP/1.1\r\nHost: b\r\nAccept: "
      "text/event-stream\r\n\r\n";
  std::string pending;
  char buf[8192];
  int seen = 0;
  bool connected = false;
};

struct Bench {
  asio::io_context io;
  asio::ip::tcp::endpoint endpoint;
  std::vector<std::shared_ptr<Listener>> listeners;
  int connected = 0;
  int events = 0;
  int sent = 0;
  int got_current = 0;  // clients that have the current event
  double sent_at = 0;
  std::vector<double> samples;
  beast::tcp_stream submitter{io};
  beast::flat_buffer sbuf;
  http::request<http::string_body> sreq;
  http::response<http::string_body> sres;

  void on_connected() {
    if (++connected == static_cast<int>(listeners.size())) submit();
  }
  void on_event(Listener& l) {
    samples.push_back(gpuvisor::bench::monotonic_ms() - sent_at);
    ++l.seen;
    if (++got_current == static_cast<int>(listeners.size())) {
      got_current = 0;
      if (sent < events) {
        submit();
      } else {
        for (auto& x : listeners) x->socket.close();
        submitter.close();
      }
    }
  }
  void submit() {
    ++sent;
    sreq = {http::verb::post, "/api/v1/plugins/bench_hang/jobs", 11};
    sreq.set(http::field::host, "b");
    sreq.body() = "{}";
    sreq.prepare_payload();
    sreq.keep_alive(true);
    sent_at = gpuvisor::bench::monotonic_ms();
    http::async_write(submitter, sreq, [this](beast::error_code ec, size_t) {
      if (ec) return;
      sres = {};
      http::async_read(submitter, sbuf, sres, [](beast::error_code, size_t) {});
    });
  }
};

void Listener::start(const asio::ip::tcp::endpoint& ep) {
  socket.async_connect(ep, [self = shared_from_this()](beast::error_code ec) {
    if (ec) return;
    asio::async_write(self->socket, asio::buffer(self->request),
                      [self](beast::error_code ec2, size_t) {
                        if (!ec2) self->read();
                      });
  });
}

void Listener::read() {
  socket.async_read_some(
      asio::buffer(buf), [self = shared_from_this()](beast::error_code ec, size_t n) {
        if (ec) return;
        self->pending.append(self->buf, n);
        if (!self->connected && self->pending.find("\r\n\r\n") != std::string::npos) {
          self->connected = true;
          self->bench.on_connected();
        }
        for (size_t at; (at = self->pending.find("event: job.queued")) != std::string::npos;) {
          self->pending.erase(0, at + 17);
          self->bench.on_event(*self);
        }
        self->read();
      });
}

}  // namespace

int main(int argc, char** argv) {
  int clients = 1000, events = 50;
  if (!gpuvisor::bench::read_flags(argc, argv, {{"--clients", &clients}, {"--events", &events}},
                                   "bench_sse_fanout [--clients N] [--events M]")) {
    return 2;
  }
  Daemon d(gpuvisor::bench::hang_plugin_config());
  if (!d.start({"--log-level", "warn"})) {
    std::cerr << "daemon did not start:\n" << d.stderr_text();
    return 1;
  }
  Bench b;
  b.events = events;
  const auto url = gpuvisor::parse_http_url(d.url() + "/");
  b.endpoint = {asio::ip::make_address(url->host),
                static_cast<unsigned short>(std::stoi(url->port))};
  b.submitter.connect(b.endpoint);
  for (int i = 0; i < clients; ++i) {
    b.listeners.push_back(std::make_shared<Listener>(b.io, b));
    b.listeners.back()->start(b.endpoint);
  }
  b.io.run();
  d.terminate();  // stops the service it started, too
  std::cout << "SSE fan-out: " << clients << " clients, " << b.sent << " events, "
            << b.samples.size() << " deliveries\n"
            << gpuvisor::bench::format("  delivery latency", gpuvisor::bench::summarize(b.samples),
                                       "ms")
            << "\n";
  return b.samples.size() == static_cast<size_t>(clients) * static_cast<size_t>(events) ? 0 : 1;
}
