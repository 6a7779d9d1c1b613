// Black-box harness: runs the real `gpuvisor` binary on port 0 in a temp dir, talks to it over
// real HTTP, and watches its event stream to wait for states (no sleeps, no fixed ports).
#pragma once

#include <sys/types.h>

#include <chrono>
#include <functional>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "cli/http_client.h"

namespace gpuvisor::itest {

using namespace std::chrono_literals;

// A fresh directory under the test temp dir, unique per call.
std::string make_temp_dir(const std::string& tag);
// A TCP port that was free a moment ago (for services whose health URL must name it).
int free_port();
bool pid_alive(pid_t pid);
// Checks pred with a growing pause between looks (1 ms up to 50 ms) until it holds or limit
// passes: waiting on something the test cannot be told about (a process's end, a file).
bool eventually(const std::function<bool()>& pred, std::chrono::milliseconds limit = 10s);
// Waits on the process's pidfd until it has exited (a zombie counts as gone); false if it still
// runs after limit.
bool wait_gone(pid_t pid, std::chrono::milliseconds limit = 10s);
pid_t read_pid_file(const std::string& path);
size_t count_lines(const std::string& path);
// A reply's body as JSON: null when there was no reply, discarded when it is not JSON.
nlohmann::json body(const Result<HttpReply>& reply);
// One test service named name on port, with an HTTP health check; args: more of its argv
// (", --flag, value"); extra: more YAML lines (health keys first, indented 6; service keys after,
// indented 4).
std::string service_yaml(const std::string& name, int port, const std::string& args,
                         const std::string& extra = "");

struct CliResult {
  int exit_code = -1;
  std::string out;
  std::string err;
};

// Runs the gpuvisor binary with args and nothing added (no daemon, no --url: `check`,
// `--help`), its output kept in dir.
CliResult run_gpuvisor(const std::vector<std::string>& args, const std::string& dir);

class Daemon {
 public:
  // config: YAML where $TESTSVC is the test service binary and $DIR this daemon's directory.
  explicit Daemon(const std::string& config, const std::string& dir = "");
  ~Daemon();  // SIGKILL if still running; services are the test's to check

  // Starts `gpuvisor serve` and waits for its "listening on" line; false if it exited instead.
  bool start(const std::vector<std::string>& extra_args = {});
  // SIGTERM and wait for the exit (SIGKILL after limit); returns the exit status.
  int terminate(std::chrono::milliseconds limit = std::chrono::seconds(30));
  void kill9();
  // Exit status of a daemon that exited on its own (bad config), waiting for it.
  int wait_exit();

  const std::string& dir() const { return dir_; }
  const std::string& url() const { return url_; }
  pid_t pid() const { return pid_; }
  std::string stderr_text() const;

  Result<HttpReply> call(const std::string& method, const std::string& target,
                         std::chrono::milliseconds timeout = 30s) const;
  // With a JSON body.
  Result<HttpReply> call(const std::string& method, const std::string& target,
                         const std::string& body, std::chrono::milliseconds timeout = 30s) const;
  nlohmann::json service(const std::string& name) const;
  // Runs the gpuvisor CLI against this daemon.
  CliResult cli(const std::vector<std::string>& args) const;

  // Reads the event stream from the beginning until pred accepts an event's JSON; false after
  // limit (a broken test, not a timing check).
  // query: more of the events URL's query string, e.g. "&types=job.".
  bool wait_event(const std::function<bool(const nlohmann::json&)>& pred,
                  std::chrono::milliseconds limit = 20s, const std::string& query = "") const;
  bool wait_state(const std::string& service, const std::string& state,
                  std::chrono::milliseconds limit = 20s) const;

 private:
  std::string dir_;
  std::string config_path_;
  std::string url_;
  pid_t pid_ = -1;
  int stdout_fd_ = -1;
};

}  // namespace gpuvisor::itest
