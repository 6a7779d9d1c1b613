#include "testkit/daemon.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "core/url.h"
#include "runtime/pidfd.h"
#include "runtime/proc.h"

extern char** environ;

namespace gpuvisor::itest {

namespace fs = std::filesystem;

std::string make_temp_dir(const std::string& tag) {
  static int counter = 0;
  const char* base = std::getenv("TEST_TMPDIR");
  const fs::path dir =
      fs::path(base != nullptr ? base : "/tmp") /
      ("gvi-" + tag + "-" + std::to_string(getpid()) + "-" + std::to_string(++counter));
  fs::remove_all(dir);
  fs::create_directories(dir);
  return dir.string();
}

int free_port() {
  const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof addr;
  bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr);
  getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  close(fd);
  return ntohs(addr.sin_port);
}

bool pid_alive(pid_t pid) {
  const auto st = read_proc_stat(pid);
  return st && st->state != 'Z';
}

bool eventually(const std::function<bool()>& pred, std::chrono::milliseconds limit) {
  const auto end = std::chrono::steady_clock::now() + limit;
  auto pause = std::chrono::milliseconds(1);
  while (!pred()) {
    if (std::chrono::steady_clock::now() > end) return false;
    // poll() with no descriptors: a bounded pause between two looks, not a wait for an event.
    poll(nullptr, 0, static_cast<int>(pause.count()));
    pause = std::min(pause * 2, std::chrono::milliseconds(50));
  }
  return true;
}

bool wait_gone(pid_t pid, std::chrono::milliseconds limit) {
  const Pidfd fd = Pidfd::open(pid);
  if (!fd.valid()) return true;  // already reaped
  pollfd exited{fd.fd(), POLLIN, 0};
  int rc = 0;
  do {
    rc = poll(&exited, 1, static_cast<int>(limit.count()));
  } while (rc < 0 && errno == EINTR);
  return rc > 0;
}

pid_t read_pid_file(const std::string& path) {
  pid_t pid = 0;
  std::ifstream(path) >> pid;
  return pid;
}

nlohmann::json body(const Result<HttpReply>& reply) {
  return reply ? nlohmann::json::parse(reply->body, nullptr, false) : nlohmann::json();
}

std::string service_yaml(const std::string& name, int port, const std::string& args,
                         const std::string& extra) {
  return "  " + name + ":\n    command: [$TESTSVC, --port, \"" + std::to_string(port) + "\"" +
         args + "]\n    health:\n      http: http://127.0.0.1:" + std::to_string(port) +
         "/health\n" + extra;
}

size_t count_lines(const std::string& path) {
  std::ifstream in(path);
  size_t n = 0;
  std::string line;
  while (std::getline(in, line)) ++n;
  return n;
}

namespace {

std::string replace_all(std::string text, const std::string& from, const std::string& to) {
  for (size_t at = text.find(from); at != std::string::npos; at = text.find(from, at + to.size())) {
    text.replace(at, from.size(), to);
  }
  return text;
}

// Spawns argv with stdout to a pipe (returned) and stderr to err_path.
pid_t spawn(const std::vector<std::string>& argv, const std::string& err_path, int* stdout_fd,
            const std::string& out_path = "") {
  int pipefd[2] = {-1, -1};
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  if (stdout_fd != nullptr) {
    pipe2(pipefd, O_CLOEXEC);
    posix_spawn_file_actions_adddup2(&actions, pipefd[1], STDOUT_FILENO);
  } else {
    posix_spawn_file_actions_addopen(&actions, STDOUT_FILENO, out_path.c_str(),
                                     O_WRONLY | O_CREAT | O_TRUNC, 0644);
  }
  posix_spawn_file_actions_addopen(&actions, STDERR_FILENO, err_path.c_str(),
                                   O_WRONLY | O_CREAT | O_APPEND, 0644);
  posix_spawn_file_actions_addopen(&actions, STDIN_FILENO, "/dev/null", O_RDONLY, 0);
  std::vector<char*> args;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  pid_t pid = -1;
  posix_spawn(&pid, args[0], &actions, nullptr, args.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  if (stdout_fd != nullptr) {
    close(pipefd[1]);
    *stdout_fd = pipefd[0];
  }
  return pid;
}

std::string slurp(const std::string& path) {
  std::ifstream in(path);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

}  // namespace

Daemon::Daemon(const std::string& config, const std::string& dir)
    : dir_(dir.empty() ? make_temp_dir("daemon") : dir) {
  config_path_ = dir_ + "/gpuvisor.yaml";
  std::ofstream(config_path_) << replace_all(replace_all(config, "$TESTSVC", GPUVISOR_TESTSVC),
                                             "$DIR", dir_);
}

Daemon::~Daemon() {
  // SIGTERM, so the daemon stops what it started and a test leaves nothing running; SIGKILL
  // only if it does not exit in time.
  if (pid_ > 0) terminate(30s);
  if (stdout_fd_ >= 0) close(stdout_fd_);
}

bool Daemon::start(const std::vector<std::string>& extra_args) {
  std::vector<std::string> argv = {GPUVISOR_BIN, "serve",       "--config",    config_path_,
                                   "--listen",   "127.0.0.1:0", "--state-dir", dir_ + "/state"};
  argv.insert(argv.end(), extra_args.begin(), extra_args.end());
  if (stdout_fd_ >= 0) close(stdout_fd_);
  pid_ = spawn(argv, dir_ + "/daemon.err", &stdout_fd_);
  // The daemon prints one line once it listens: read it, bounded by a deadline.
  std::string out;
  const auto deadline = std::chrono::steady_clock::now() + 20s;
  while (std::chrono::steady_clock::now() < deadline) {
    pollfd p{stdout_fd_, POLLIN, 0};
    if (poll(&p, 1, 100) <= 0) continue;
    char buf[512];
    const ssize_t n = read(stdout_fd_, buf, sizeof buf);
    if (n <= 0) return false;  // exited before listening
    out.append(buf, static_cast<size_t>(n));
    const auto at = out.find("listening on ");
    const auto nl = out.find('\n', at);
    if (at != std::string::npos && nl != std::string::npos) {
      url_ = out.substr(at + 13, nl - at - 13);
      return true;
    }
  }
  return false;
}

int Daemon::wait_exit() {
  int status = 0;
  waitpid(pid_, &status, 0);
  pid_ = -1;
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

int Daemon::terminate(std::chrono::milliseconds limit) {
  kill(pid_, SIGTERM);
  const Pidfd pidfd = Pidfd::open(pid_);
  pollfd p{pidfd.fd(), POLLIN, 0};
  if (pidfd.valid() && poll(&p, 1, static_cast<int>(limit.count())) == 0) kill(pid_, SIGKILL);
  return wait_exit();
}

void Daemon::kill9() {
  kill(pid_, SIGKILL);
  wait_exit();
}

std::string Daemon::stderr_text() const {
  return slurp(dir_ + "/daemon.err");
}

Result<HttpReply> Daemon::call(const std::string& method, const std::string& target,
                               std::chrono::milliseconds timeout) const {
  return call(method, target, "", timeout);
}

Result<HttpReply> Daemon::call(const std::string& method, const std::string& target,
                               const std::string& body, std::chrono::milliseconds timeout) const {
  auto client = HttpClient::create(url_, "");
  if (!client) return client.error();
  return client->request(method, target, timeout, body);
}

nlohmann::json Daemon::service(const std::string& name) const {
  auto reply = call("GET", "/api/v1/services/" + name);
  if (!reply) return nlohmann::json::object();
  return nlohmann::json::parse(reply->body, nullptr, false);
}

CliResult run_gpuvisor(const std::vector<std::string>& args, const std::string& dir) {
  std::vector<std::string> argv = {GPUVISOR_BIN};
  argv.insert(argv.end(), args.begin(), args.end());
  static int counter = 0;
  const std::string base = dir + "/cli" + std::to_string(++counter);
  const pid_t pid = spawn(argv, base + ".err", nullptr, base + ".out");
  int status = 0;
  waitpid(pid, &status, 0);
  return CliResult{WIFEXITED(status) ? WEXITSTATUS(status) : -1, slurp(base + ".out"),
                   slurp(base + ".err")};
}

CliResult Daemon::cli(const std::vector<std::string>& args) const {
  std::vector<std::string> all = args;
  all.push_back("--url");
  // A daemon that was never started: a URL where, a moment ago, nothing listened.
  all.push_back(url_.empty() ? "http://127.0.0.1:" + std::to_string(free_port()) : url_);
  return run_gpuvisor(all, dir_);
}

bool Daemon::wait_event(const std::function<bool(const nlohmann::json&)>& pred,
                        std::chrono::milliseconds limit, const std::string& query) const {
  const auto parsed = parse_http_url(url_ + "/");
  const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(std::stoi(parsed->port)));
  inet_pton(AF_INET, parsed->host.c_str(), &addr.sin_addr);
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    close(fd);
    return false;
  }
  const std::string request = "GET /api/v1/events?since=0" + query + " HTTP/1.1\r\nHost: x\r\n\r\n";
  if (write(fd, request.data(), request.size()) < 0) {
    close(fd);
    return false;
  }
  SseParser parser;
  bool found = false;
  bool head_done = false;
  std::string head;
  const auto deadline = std::chrono::steady_clock::now() + limit;
  while (!found && std::chrono::steady_clock::now() < deadline) {
    pollfd p{fd, POLLIN, 0};
    if (poll(&p, 1, 50) <= 0) continue;
    char buf[4096];
    const ssize_t n = read(fd, buf, sizeof buf);
    if (n <= 0) break;
    std::string_view chunk(buf, static_cast<size_t>(n));
    if (!head_done) {
      head.append(chunk);
      const auto end = head.find("\r\n\r\n");
      if (end == std::string::npos) continue;
      head_done = true;
      chunk = std::string_view(head).substr(end + 4);
    }
    parser.feed(chunk, [&](const SseMessage& m) {
      const auto j = nlohmann::json::parse(m.data, nullptr, false);
      if (!j.is_discarded() && pred(j)) found = true;
      return !found;
    });
  }
  close(fd);
  return found;
}

bool Daemon::wait_state(const std::string& service, const std::string& state,
                        std::chrono::milliseconds limit) const {
  // The current state first: the event that led there may have left the history.
  if (this->service(service).value("state", "") == state) return true;
  return wait_event(
      [&](const nlohmann::json& e) {
        const auto& d = e["data"];
        return e["type"] == "service.state_changed" && d.value("service", "") == service &&
               d.value("to", "") == state && this->service(service).value("state", "") == state;
      },
      limit);
}

}  // namespace gpuvisor::itest
