// One bounded action, run without blocking the executor: an HTTP request or a command. Health
// checks, services' sleep and wake hooks, and remote providers' commands all use these.
#pragma once

#include <boost/asio/awaitable.hpp>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "core/duration.h"
#include "core/service_spec.h"
#include "runtime/exit_info.h"

namespace gpuvisor {

// Ends a request or a stream from outside: cancel() closes its connection at once.
struct StreamControl {
  bool cancelled = false;
  std::function<void()> close;  // set while the stream runs
  void cancel() {
    cancelled = true;
    if (close) close();
  }
};

struct HttpOutcome {
  std::string error;     // why no reply came ("connection refused", "timed out after 2s"), or empty
  bool refused = false;  // nothing listens: cheap to retry soon
  unsigned status = 0;
  std::string body;  // up to 64 KiB
};

// method and body as given (body sent as JSON when not empty); url: http://host:port/path.
// control, if given, can end it early (the outcome's error is then "cancelled").
boost::asio::awaitable<HttpOutcome> http_request(std::string method, std::string url,
                                                 std::string body, Millis timeout,
                                                 std::shared_ptr<StreamControl> control = nullptr);

// Connects and hangs up: error empty when something accepted the connection.
boost::asio::awaitable<HttpOutcome> tcp_connect(std::string host, std::string port, Millis timeout);

struct CommandOutcome {
  std::string error;   // could not run, or timed out ("timed out after 5s"), or empty
  ExitInfo exit;       // how it ended, when error is empty
  std::string output;  // stdout and stderr together, up to 1 MiB, when asked for
  bool ok() const { return error.empty() && exit.success(); }
  // The error, else how it ended ("exited with status 3", ExitInfo::describe()).
  std::string describe() const { return error.empty() ? exit.describe() : error; }
};

// The last non-empty line of a command's output, at most 200 characters: what an error
// message quotes of it.
std::string last_line(std::string text);

// Runs argv as a ChildProcess (its tree killed whole at the timeout) and waits for its exit.
boost::asio::awaitable<CommandOutcome> run_command(std::vector<std::string> argv, Millis timeout,
                                                   bool capture);

// Runs a sleep or wake hook (its HTTP request, or its command): empty on success, else what went
// wrong ("POST http://...: HTTP 500: out of memory").
boost::asio::awaitable<std::string> run_hook(HookSpec hook);

}  // namespace gpuvisor
