// AsioProber against real sockets on the loopback interface.
#include "supervisor/probe.h"

#include <gtest/gtest.h>

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/read_until.hpp>
#include <boost/asio/streambuf.hpp>
#include <boost/asio/write.hpp>
#include <optional>

#include "lib/fakes.h"

namespace gpuvisor {
namespace {

namespace asio = boost::asio;
using asio::ip::tcp;
using testing::run_until;

// Answers one request with a fixed reply.
class OneShotServer {
 public:
  OneShotServer(asio::io_context& io, std::string reply)
      : acceptor_(io, tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0)),
        socket_(io),
        reply_(std::move(reply)) {
    acceptor_.async_accept(socket_, [this](boost::system::error_code ec) {
      if (ec) return;
      asio::async_read_until(socket_, buffer_, "\r\n\r\n",
                             [this](boost::system::error_code, size_t) {
                               asio::write(socket_, asio::buffer(reply_));
                               socket_.close();
                             });
    });
  }
  std::string url() const {
    return "http://127.0.0.1:" + std::to_string(acceptor_.local_endpoint().port()) + "/health";
  }

 private:
  tcp::acceptor acceptor_;
  tcp::socket socket_;
  asio::streambuf buffer_;
  std::string reply_;
};

// A port nobody listens on: bound, then closed.
int closed_port(asio::io_context& io) {
  tcp::acceptor a(io, tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0));
  return a.local_endpoint().port();
}

class ProbeTest : public ::testing::Test {
 protected:
  ProbeResult check(const HealthSpec& health) {
    std::optional<ProbeResult> result;
    prober_.check(health, Millis(2'000), [&](ProbeResult r) { result = std::move(r); });
    EXPECT_TRUE(run_until(io_, [&] { return result.has_value(); }));
    return result.value_or(ProbeResult{});
  }

  asio::io_context io_;
  AsioProber prober_{io_.get_executor()};
};

TEST_F(ProbeTest, HttpOkIsHealthy) {
  OneShotServer server(io_, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok");
  HealthSpec h;
  h.http = server.url();
  const auto r = check(h);
  EXPECT_TRUE(r.ok) << r.detail;
  EXPECT_EQ("HTTP 200", r.detail);
}

TEST_F(ProbeTest, HttpErrorStatusIsUnhealthyButNotRefused) {
  OneShotServer server(io_,
                       "HTTP/1.1 503 Loading\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
  HealthSpec h;
  h.http = server.url();
  const auto r = check(h);
  EXPECT_FALSE(r.ok);
  EXPECT_FALSE(r.refused);
  EXPECT_EQ("HTTP 503", r.detail);
}

TEST_F(ProbeTest, NothingListeningIsRefusedForHttpAndTcp) {
  const int port = closed_port(io_);
  HealthSpec h;
  h.http = "http://127.0.0.1:" + std::to_string(port) + "/health";
  auto r = check(h);
  EXPECT_FALSE(r.ok);
  EXPECT_TRUE(r.refused) << r.detail;
  HealthSpec t;
  t.tcp = "127.0.0.1:" + std::to_string(port);
  r = check(t);
  EXPECT_FALSE(r.ok);
  EXPECT_TRUE(r.refused) << r.detail;
}

TEST_F(ProbeTest, ExecChecksTheExitStatus) {
  HealthSpec h;
  h.exec = {"/bin/sh", "-c", "exit 0"};
  EXPECT_TRUE(check(h).ok);
  h.exec = {"/bin/sh", "-c", "exit 3"};
  const auto r = check(h);
  EXPECT_FALSE(r.ok);
  EXPECT_EQ("check exited with status 3", r.detail);
}

}  // namespace
}  // namespace gpuvisor
