#include "supervisor/probe.h"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/post.hpp>

#include "core/url.h"
#include "runtime/oneshot.h"

namespace gpuvisor {

namespace asio = boost::asio;

namespace {

asio::awaitable<ProbeResult> http_check(std::string url, Millis timeout) {
  const auto r = co_await http_request("GET", std::move(url), "", timeout);
  if (!r.error.empty()) co_return ProbeResult{false, r.error, r.refused};
  const std::string detail = "HTTP " + std::to_string(r.status);
  co_return ProbeResult{r.status >= 200 && r.status < 400, detail};
}

asio::awaitable<ProbeResult> tcp_check(std::string endpoint, Millis timeout) {
  const auto hp = parse_host_port(endpoint);
  if (!hp) co_return ProbeResult{false, "bad health endpoint " + endpoint};
  const auto r = co_await tcp_connect(hp->host, hp->port, timeout);
  if (!r.error.empty()) co_return ProbeResult{false, r.error, r.refused};
  co_return ProbeResult{true, "connected"};
}

asio::awaitable<ProbeResult> exec_check(std::vector<std::string> argv, Millis timeout) {
  const auto r = co_await run_command(std::move(argv), timeout, false);
  if (r.ok()) co_return ProbeResult{true, "exit 0"};
  if (!r.error.empty()) co_return ProbeResult{false, r.error};
  co_return ProbeResult{false, "check " + r.exit.describe()};
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
