#include "runtime/oneshot.h"

#include <unistd.h>

#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http.hpp>
#include <charconv>
#include <cstdlib>
#include <fstream>
#include <memory>
#include <optional>

#include "core/url.h"
#include "runtime/child_process.h"

namespace gpuvisor {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using asio::ip::tcp;

namespace {

constexpr size_t kMaxBody = 64 * 1024;
constexpr size_t kMaxOutput = 1024 * 1024;

std::string failure(const boost::system::error_code& ec, Millis timeout) {
  if (ec == beast::error::timeout || ec == asio::error::operation_aborted) {
    return "timed out after " + format_duration(timeout);
  }
  return ec.message();
}

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

}  // namespace

asio::awaitable<HttpOutcome> http_request(std::string method, std::string url, std::string body,
                                          Millis timeout, std::shared_ptr<StreamControl> control) {
  HttpOutcome out;
  const auto parsed = parse_http_url(url);
  if (!parsed) {
    out.error = "bad URL " + url;
    co_return out;
  }
  beast::tcp_stream stream(co_await asio::this_coro::executor);
  stream.expires_after(timeout);
  if (control) {
    if (control->cancelled) {
      out.error = "cancelled";
      co_return out;
    }
    control->close = [&stream] { stream.close(); };
  }
  struct Unset {
    StreamControl* c;
    ~Unset() {
      if (c != nullptr) c->close = nullptr;
    }
  } unset{control.get()};
  auto ec = co_await connect(stream, parsed->host, parsed->port);
  if (ec) {
    out.error = failure(ec, timeout);
    out.refused = ec == asio::error::connection_refused;
    co_return out;
  }
  http::request<http::string_body> request{http::string_to_verb(method), parsed->target, 11};
  request.set(http::field::host, parsed->host + ":" + parsed->port);
  request.set(http::field::user_agent, "gpuvisor");
  if (!body.empty()) request.set(http::field::content_type, "application/json");
  request.body() = std::move(body);
  request.prepare_payload();
  request.keep_alive(false);
  co_await http::async_write(stream, request, asio::redirect_error(asio::use_awaitable, ec));
  if (ec) {
    out.error = failure(ec, timeout);
    co_return out;
  }
  beast::flat_buffer buffer;
  http::response_parser<http::string_body> parser;
  parser.body_limit(kMaxBody);  // replies to checks and hooks are small; a huge one is not read
  co_await http::async_read(stream, buffer, parser, asio::redirect_error(asio::use_awaitable, ec));
  if (ec && ec != http::error::body_limit) {
    out.error = control && control->cancelled ? "cancelled" : failure(ec, timeout);
    co_return out;
  }
  out.status = parser.get().result_int();
  out.body = std::move(parser.get().body());
  co_return out;
}

asio::awaitable<HttpOutcome> tcp_connect(std::string host, std::string port, Millis timeout) {
  HttpOutcome out;
  beast::tcp_stream stream(co_await asio::this_coro::executor);
  stream.expires_after(timeout);
  if (const auto ec = co_await connect(stream, host, port); ec) {
    out.error = failure(ec, timeout);
    out.refused = ec == asio::error::connection_refused;
  }
  co_return out;
}

std::string last_line(std::string text) {
  while (!text.empty() && (text.back() == '\n' || text.back() == '\r')) text.pop_back();
  const auto nl = text.rfind('\n');
  text = nl == std::string::npos ? text : text.substr(nl + 1);
  return text.size() > 200 ? text.substr(0, 200) : text;
}

asio::awaitable<CommandOutcome> run_command(std::vector<std::string> argv, Millis timeout,
                                            bool capture) {
  CommandOutcome out;
  auto executor = co_await asio::this_coro::executor;
  std::string output_path;
  if (capture) {
    // A file, not a pipe: the command's output never blocks it, whatever its size.
    char name[] = "/tmp/gpuvisor-out-XXXXXX";
    const int fd = mkstemp(name);
    if (fd < 0) {
      out.error = "cannot create a file for the command's output";
      co_return out;
    }
    close(fd);
    output_path = name;
  }
  auto child = ChildProcess::spawn(executor, ChildSpec{argv, {}, "", output_path});
  if (!child) {
    if (!output_path.empty()) unlink(output_path.c_str());
    out.error = child.error().message;
    co_return out;
  }
  // Shared with the handlers, which may still be queued after this frame is gone. wake never
  // expires: the exit cancels it.
  struct Wait {
    std::optional<ExitInfo> exit;
    bool timed_out = false;
    asio::steady_timer wake;
  };
  auto wait = std::make_shared<Wait>(Wait{std::nullopt, false, asio::steady_timer(executor)});
  wait->wake.expires_at(asio::steady_timer::time_point::max());
  (*child)->watch([wait](ExitInfo info) {
    wait->exit = std::move(info);
    wait->wake.cancel();
  });
  asio::steady_timer deadline(executor, timeout);
  deadline.async_wait([wait, tree = *child](const boost::system::error_code& ec) {
    if (ec || wait->exit) return;
    wait->timed_out = true;
    tree->stop(Millis(0), [](StopOutcome) {});  // its exit ends the wait below
  });
  boost::system::error_code ec;
  while (!wait->exit) {
    co_await wait->wake.async_wait(asio::redirect_error(asio::use_awaitable, ec));
  }
  deadline.cancel();
  if (!output_path.empty()) {
    std::ifstream in(output_path);
    out.output.resize(kMaxOutput);
    in.read(out.output.data(), static_cast<std::streamsize>(kMaxOutput));
    out.output.resize(static_cast<size_t>(in.gcount()));
    unlink(output_path.c_str());
  }
  if (wait->timed_out) {
    out.error = "timed out after " + format_duration(timeout);
  } else {
    out.exit = *wait->exit;
  }
  co_return out;
}

asio::awaitable<std::string> run_hook(HookSpec hook) {
  if (!hook.http.empty()) {
    const auto r = co_await http_request(hook.method, hook.http, hook.body, hook.timeout);
    const std::string what = hook.method + " " + hook.http;
    if (!r.error.empty()) co_return what + ": " + r.error;
    if (r.status < 200 || r.status >= 300) {
      const std::string body = last_line(r.body);
      co_return what + ": HTTP " + std::to_string(r.status) + (body.empty() ? "" : ": " + body);
    }
    co_return "";
  }
  const auto r = co_await run_command(hook.exec, hook.timeout, true);
  if (r.ok()) co_return "";
  const std::string said = last_line(r.output);
  co_return hook.exec.front() + ": " + r.describe() + (said.empty() ? "" : ": " + said);
}

}  // namespace gpuvisor
