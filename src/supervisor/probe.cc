#include "supervisor/probe.h"

#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http.hpp>
#include <charconv>
#include <csignal>

#include "core/url.h"
#include "runtime/spawn.h"

namespace gpuvisor {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using asio::ip::tcp;

namespace {

std::string failure(const boost::system::error_code& ec, Millis timeout) {
  if (ec == beast::error::timeout || ec == asio::error::operation_aborted) {
    return "timed out after " + format_duration(timeout);
  }
  return ec.message();
}

ProbeResult connect_failure(const boost::system::error_code& ec, Millis timeout) {
  return ProbeResult{false, failure(ec, timeout), ec == asio::error::connection_refused};
}

// Connects with the stream's deadline already set; shared by the HTTP and TCP checks.
asio::awaitable<boost::system::error_code> connect(beast::tcp_stream& stream,
                                                   const std::string& host,
                                                   const std::string& port) {
  boost::system::error_code ec;
  // A literal address needs no resolver (whose async form runs on a thread of its own).
  if (const auto address = asio::ip::make_address(host, ec); !ec) {
    unsigned short number = 0;
    std::from_chars(port.data(), port.data() + port.size(), number);
    co_await stream.async_connect(tcp::endpoint(address, number),
                                  asio::redirect_error(asio::use_awaitable, ec));
    co_return ec;
  }
  ec.clear();
  tcp::resolver resolver(co_await asio::this_coro::executor);
  auto endpoints =
      co_await resolver.async_resolve(host, port, asio::redirect_error(asio::use_awaitable, ec));
  if (ec) co_return ec;
  co_await stream.async_connect(endpoints, asio::redirect_error(asio::use_awaitable, ec));
  co_return ec;
}

asio::awaitable<ProbeResult> http_check(std::string url, Millis timeout) {
  const auto parsed = parse_http_url(url);
  if (!parsed) co_return ProbeResult{false, "bad health URL " + url};
  beast::tcp_stream stream(co_await asio::this_coro::executor);
  stream.expires_after(timeout);
  auto ec = co_await connect(stream, parsed->host, parsed->port);
  if (ec) co_return connect_failure(ec, timeout);

  http::request<http::empty_body> request{http::verb::get, parsed->target, 11};
  request.set(http::field::host, parsed->host + ":" + parsed->port);
  request.set(http::field::user_agent, "gpuvisor-probe");
  request.keep_alive(false);
  co_await http::async_write(stream, request, asio::redirect_error(asio::use_awaitable, ec));
  if (ec) co_return ProbeResult{false, failure(ec, timeout)};

  beast::flat_buffer buffer;
  http::response_parser<http::string_body> parser;
  parser.body_limit(64 * 1024);  // health bodies are small; a huge one is not worth reading
  co_await http::async_read(stream, buffer, parser, asio::redirect_error(asio::use_awaitable, ec));
  if (ec) co_return ProbeResult{false, failure(ec, timeout)};
  const unsigned status = parser.get().result_int();
  if (status >= 200 && status < 400) co_return ProbeResult{true, "HTTP " + std::to_string(status)};
  co_return ProbeResult{false, "HTTP " + std::to_string(status)};
}

asio::awaitable<ProbeResult> tcp_check(std::string endpoint, Millis timeout) {
  const auto hp = parse_host_port(endpoint);
  if (!hp) co_return ProbeResult{false, "bad health endpoint " + endpoint};
  beast::tcp_stream stream(co_await asio::this_coro::executor);
  stream.expires_after(timeout);
  const auto ec = co_await connect(stream, hp->host, hp->port);
  if (ec) co_return connect_failure(ec, timeout);
  co_return ProbeResult{true, "connected"};
}

asio::awaitable<ProbeResult> exec_check(std::vector<std::string> argv, Millis timeout) {
  auto executor = co_await asio::this_coro::executor;
  auto spawned = spawn_process(SpawnRequest{argv, merged_environment({}), "", "", ""});
  if (!spawned) co_return ProbeResult{false, spawned.error().message};
  // Shared with the deadline's handler, which may still be queued after this frame is gone.
  struct Wait {
    asio::posix::stream_descriptor pidfd;
    pid_t pid;
    bool timed_out = false;
    bool reaped = false;
  };
  auto wait = std::make_shared<Wait>(
      Wait{asio::posix::stream_descriptor(executor, spawned->pidfd.release()), spawned->pid});
  asio::steady_timer deadline(executor, timeout);
  deadline.async_wait([wait](const boost::system::error_code& ec) {
    if (ec || wait->reaped) return;
    wait->timed_out = true;
    // The check is our unreaped child, so neither its PID nor its group can be reused yet.
    syscall(SYS_pidfd_send_signal, wait->pidfd.native_handle(), SIGKILL, nullptr, 0);
    kill(-wait->pid, SIGKILL);
  });
  boost::system::error_code ec;
  co_await wait->pidfd.async_wait(asio::posix::stream_descriptor::wait_read,
                                  asio::redirect_error(asio::use_awaitable, ec));
  deadline.cancel();
  int status = 0;
  waitpid(wait->pid, &status, 0);
  wait->reaped = true;
  const bool timed_out = wait->timed_out;
  if (timed_out) co_return ProbeResult{false, "timed out after " + format_duration(timeout)};
  if (WIFEXITED(status) && WEXITSTATUS(status) == 0) co_return ProbeResult{true, "exit 0"};
  if (WIFSIGNALED(status)) {
    co_return ProbeResult{false, "check killed by signal " + std::to_string(WTERMSIG(status))};
  }
  co_return ProbeResult{false, "check exited with status " + std::to_string(WEXITSTATUS(status))};
}

}  // namespace

void AsioProber::check(const HealthSpec& health, Millis timeout,
                       std::function<void(ProbeResult)> done) {
  auto finish = [done = std::move(done)](std::exception_ptr error, ProbeResult result) {
    // The checks report errors as values; an exception here is a bug, reported as a failure.
    if (error) result = ProbeResult{false, "internal error in health check"};
    done(std::move(result));
  };
  if (!health.http.empty()) {
    asio::co_spawn(executor_, http_check(health.http, timeout), std::move(finish));
  } else if (!health.tcp.empty()) {
    asio::co_spawn(executor_, tcp_check(health.tcp, timeout), std::move(finish));
  } else if (!health.exec.empty()) {
    asio::co_spawn(executor_, exec_check(health.exec, timeout), std::move(finish));
  } else {
    asio::post(executor_, [finish] { finish(nullptr, ProbeResult{true, "no health check"}); });
  }
}

}  // namespace gpuvisor
