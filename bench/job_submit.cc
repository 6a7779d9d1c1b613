// Durable job submissions per second through the API: C connections (keep-alive) each POST
// jobs back to back for a fixed time; every 200 means the job is in SQLite, fsynced. The plugin's
// one running job hangs, so what is measured is submission, not execution. At the end the
// daemon is killed and the database is counted: every acknowledged job must be there.
//
//   bench_job_submit [--seconds N] [--connections C]
#include <sqlite3.h>

#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>
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

struct Client : std::enable_shared_from_this<Client> {
  Client(asio::io_context& io, asio::ip::tcp::endpoint ep, const bool& stop, size_t& acked,
         std::vector<double>& latencies)
      : stream(io), endpoint(ep), stopping(stop), ok(acked), lat(latencies) {}

  void start() {
    stream.async_connect(endpoint, [self = shared_from_this()](beast::error_code ec) {
      if (!ec) self->send();
    });
  }
  void send() {
    if (stopping) return;
    req = {http::verb::post, "/api/v1/plugins/bench_hang/jobs", 11};
    req.set(http::field::host, "bench");
    req.set(http::field::content_type, "application/json");
    req.body() = R"({"prompt": "a cat in a hat", "steps": 20})";
    req.prepare_payload();
    req.keep_alive(true);
    t0 = gpuvisor::bench::monotonic_ms();
    http::async_write(stream, req, [self = shared_from_this()](beast::error_code ec, size_t) {
      if (ec) return;
      self->res = {};
      http::async_read(self->stream, self->buf, self->res, [self](beast::error_code ec2, size_t) {
        if (ec2) return;
        if (self->res.result_int() == 200) {
          ++self->ok;
          self->lat.push_back(gpuvisor::bench::monotonic_ms() - self->t0);
        }
        self->send();
      });
    });
  }

  beast::tcp_stream stream;
  asio::ip::tcp::endpoint endpoint;
  const bool& stopping;
  size_t& ok;
  std::vector<double>& lat;
  beast::flat_buffer buf;
  http::request<http::string_body> req;
  http::response<http::string_body> res;
  double t0 = 0;
};

long long count_jobs(const std::string& db_path) {
  sqlite3* db = nullptr;
  long long n = -1;
  if (sqlite3_open_v2(db_path.c_str(), &db, SQLITE_OPEN_READONLY, nullptr) == SQLITE_OK) {
    sqlite3_stmt* st = nullptr;
    if (sqlite3_prepare_v2(db, "SELECT COUNT(*) FROM jobs", -1, &st, nullptr) == SQLITE_OK &&
        sqlite3_step(st) == SQLITE_ROW) {
      n = sqlite3_column_int64(st, 0);
    }
    sqlite3_finalize(st);
  }
  sqlite3_close(db);
  return n;
}

}  // namespace

int main(int argc, char** argv) {
  int seconds = 10, connections = 32;
  if (!gpuvisor::bench::read_flags(argc, argv,
                                   {{"--seconds", &seconds}, {"--connections", &connections}},
                                   "bench_job_submit [--seconds N] [--connections C]")) {
    return 2;
  }
  const std::string yaml = gpuvisor::bench::hang_plugin_config();
  Daemon d(yaml);
  if (!d.start({"--log-level", "warn"})) {
    std::cerr << "daemon did not start:\n" << d.stderr_text();
    return 1;
  }
  const auto url = gpuvisor::parse_http_url(d.url() + "/");
  asio::io_context io;
  const asio::ip::tcp::endpoint ep(asio::ip::make_address(url->host),
                                   static_cast<unsigned short>(std::stoi(url->port)));
  bool stop = false;
  size_t acked = 0;
  std::vector<double> latencies;
  for (int i = 0; i < connections; ++i) {
    std::make_shared<Client>(io, ep, stop, acked, latencies)->start();
  }
  asio::steady_timer timer(io, std::chrono::seconds(seconds));
  timer.async_wait([&](beast::error_code) { stop = true; });
  const double t0 = gpuvisor::bench::monotonic_ms();
  io.run();  // each client stops after its reply in flight
  const double elapsed_s = (gpuvisor::bench::monotonic_ms() - t0) / 1000;
  d.kill9();  // acknowledged means on disk: nothing may depend on a clean shutdown
  const long long stored = count_jobs(d.dir() + "/state/jobs.db");
  // A second daemon on the same state adopts the service the first left running, and stops it.
  Daemon cleanup(yaml, d.dir());
  if (cleanup.start({"--log-level", "warn"})) cleanup.terminate();
  std::cout << "job submissions: " << connections << " connections, " << elapsed_s << " s\n"
            << "  acknowledged " << acked << " (" << static_cast<long long>(acked / elapsed_s)
            << "/s), in the database after kill -9: " << stored << "\n";
  std::cout << gpuvisor::bench::format("  submit latency", gpuvisor::bench::summarize(latencies),
                                       "ms")
            << "\n";
  if (stored < static_cast<long long>(acked)) {
    std::cerr << "LOST: " << acked - static_cast<size_t>(stored) << " acknowledged jobs\n";
    return 1;
  }
  return 0;
}
