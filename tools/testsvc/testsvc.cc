// gpuvisor-testsvc: the service that gpuvisor's integration tests, benchmark and demo supervise.
// Every fault they need (slow start, crash, stubborn SIGTERM, hung health check, escaped
// grandchild) is chosen by a flag, so the tests never depend on a real GPU workload. It uses only
// libc and the standard library, no threads, so that start-up time measures the supervisor and
// not this program.
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <charconv>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace {

using Ns = std::int64_t;
constexpr Ns kNsPerMs = 1'000'000;

Ns MonotonicNs() {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<Ns>(ts.tv_sec) * 1'000'000'000 + ts.tv_nsec;
}

// Stdout/stderr are usually files or pipes owned by the supervisor, hence fully buffered: flush
// every line so the tests see it the moment it happens.
void Say(std::FILE* f, const std::string& line) {
  std::fputs((line + "\n").c_str(), f);
  std::fflush(f);
}

// The fake NVML hold this process wrote, removed on a clean exit (a killed process's hold is
// ignored by the fake anyway, since its PID is gone).
std::string g_hold_path;
// --exit-report: where to note the moment this process let go of its memory and exits.
std::string g_exit_report;

[[noreturn]] void Exit(int code) {
  if (!g_hold_path.empty()) unlink(g_hold_path.c_str());
  if (!g_exit_report.empty()) {
    const std::string line = "{\"pid\":" + std::to_string(getpid()) +
                             ",\"exit_ns\":" + std::to_string(MonotonicNs()) + "}\n";
    const int fd = open(g_exit_report.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (fd >= 0) {
      const ssize_t ignored = write(fd, line.data(), line.size());
      (void)ignored;  // a benchmark aid: a lost line shows there as a missing sample
      close(fd);
    }
  }
  std::fflush(nullptr);
  std::_Exit(code);
}

[[noreturn]] void UsageError(const std::string& msg) {
  Say(stderr, "testsvc: " + msg);
  Exit(2);
}

struct Options {
  std::string host = "127.0.0.1";
  int port = 0;
  std::string port_file, report, pid_file, grandchild_pid_file;
  Ns ready_after_ms = 0;
  std::optional<Ns> crash_after_ms;
  int crash_code = 3;
  std::optional<int> exit_at_start;
  bool ignore_sigterm = false;
  Ns term_delay_ms = 0;
  bool fork_grandchild = false;
  bool hang_health = false;
  std::optional<Ns> hang_health_after_ms;
  std::optional<Ns> log_every_ms;
  Ns vram_mb = 0;
  Ns sleep_residual_mb = 0;  // what /sleep leaves held, as vLLM's level-1 sleep does
  std::optional<Ns> gpu;
};

Ns ParseNumber(std::string_view flag, std::string_view text, Ns min, Ns max) {
  Ns value = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc() || end != text.data() + text.size() || value < min || value > max) {
    UsageError("bad number '" + std::string(text) + "' for " + std::string(flag));
  }
  return value;
}

Options ParseArgs(int argc, char** argv) {
  constexpr Ns kMaxMs = Ns{1} << 40;  // ~35 years; keeps deadline arithmetic far from overflow
  Options o;
  for (int i = 1; i < argc; ++i) {
    const std::string_view flag = argv[i];
    auto value = [&]() -> std::string_view {
      if (i + 1 >= argc) UsageError(std::string(flag) + " needs a value");
      return argv[++i];
    };
    auto ms = [&]() { return ParseNumber(flag, value(), 0, kMaxMs); };
    auto code = [&]() { return static_cast<int>(ParseNumber(flag, value(), 0, 255)); };
    // One flag per line reads as a table.
    // clang-format off
    if (flag == "--host") o.host = value();
    else if (flag == "--port") o.port = static_cast<int>(ParseNumber(flag, value(), 0, 65535));
    else if (flag == "--port-file") o.port_file = value();
    else if (flag == "--ready-after") o.ready_after_ms = ms();
    else if (flag == "--crash-after") o.crash_after_ms = ms();
    else if (flag == "--crash-code") o.crash_code = code();
    else if (flag == "--exit-at-start") o.exit_at_start = code();
    else if (flag == "--ignore-sigterm") o.ignore_sigterm = true;
    else if (flag == "--term-delay") o.term_delay_ms = ms();
    else if (flag == "--fork-setsid-grandchild") o.fork_grandchild = true;
    else if (flag == "--grandchild-pid-file") o.grandchild_pid_file = value();
    else if (flag == "--hang-health") o.hang_health = true;
    else if (flag == "--hang-health-after") o.hang_health_after_ms = ms();
    else if (flag == "--report") o.report = value();
    else if (flag == "--exit-report") g_exit_report = value();
    else if (flag == "--pid-file") o.pid_file = value();
    else if (flag == "--log-every") o.log_every_ms = ParseNumber(flag, value(), 1, kMaxMs);
    else if (flag == "--vram-mb") o.vram_mb = ParseNumber(flag, value(), 0, Ns{1} << 30);
    else if (flag == "--sleep-residual-mb")
      o.sleep_residual_mb = ParseNumber(flag, value(), 0, Ns{1} << 30);
    else if (flag == "--gpu") o.gpu = ParseNumber(flag, value(), 0, 63);
    else UsageError("unknown flag " + std::string(flag));
    // clang-format on
  }
  return o;
}

void WriteFileAtomic(const std::string& path, const std::string& content);

// A CUDA process's memory, simulated: the fake NVML library counts this file for as long as
// this PID lives, on each GPU: --gpu, else every one CUDA_VISIBLE_DEVICES lists, else 0.
void HoldVram(const Options& o) {
  const char* dir = std::getenv("FAKE_NVML_DIR");
  if (dir == nullptr || *dir == '\0') {
    Say(stderr, "testsvc: --vram-mb without FAKE_NVML_DIR: no simulated GPU to hold memory on");
    return;
  }
  std::string gpus = std::to_string(o.gpu.value_or(0));
  if (const char* visible = std::getenv("CUDA_VISIBLE_DEVICES");
      !o.gpu && visible != nullptr && *visible != '\0' &&
      std::string_view(visible).find_first_not_of("0123456789,") == std::string_view::npos) {
    gpus = visible;  // "0,1": already a JSON list's inside
  }
  const std::string holds = std::string(dir) + "/holds";
  mkdir(holds.c_str(), 0755);
  g_hold_path = holds + "/" + std::to_string(getpid()) + ".json";
  WriteFileAtomic(g_hold_path, "{\"pid\":" + std::to_string(getpid()) + ",\"gpus\":[" + gpus + "]" +
                                   ",\"mb\":" + std::to_string(o.vram_mb) + "}\n");
  Say(stdout, "testsvc: holding " + std::to_string(o.vram_mb) + " MiB on GPU " + gpus);
}

// Readers poll for these files; rename() makes sure they never see a half-written one.
void WriteFileAtomic(const std::string& path, const std::string& content) {
  const std::string tmp = path + ".tmp." + std::to_string(getpid());
  const int fd = open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  const bool ok =
      fd >= 0 && write(fd, content.data(), content.size()) == static_cast<ssize_t>(content.size());
  if (fd >= 0) close(fd);
  if (!ok || rename(tmp.c_str(), path.c_str()) != 0) {
    Say(stderr, "testsvc: cannot write " + path + ": " + std::strerror(errno));
    unlink(tmp.c_str());
    Exit(1);
  }
}

// Signals only write a byte here; the main loop does the work, woken by poll().
int g_signal_pipe[2] = {-1, -1};

void OnSignal(int signo) {
  const int saved = errno;
  const char byte = signo == SIGTERM ? 'T' : 'C';
  [[maybe_unused]] const ssize_t n = write(g_signal_pipe[1], &byte, 1);
  errno = saved;
}

void Handle(int signo) {
  struct sigaction sa {};
  sa.sa_handler = OnSignal;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = SA_RESTART | SA_NOCLDSTOP;
  sigaction(signo, &sa, nullptr);
}

// The deliberate orphan: a new session means it escapes the service's process group, which is
// exactly what the supervisor must still find and kill. It keeps no fd of ours (in particular not
// the supervisor's log pipes, so log readers still see EOF when the service itself exits).
// Writes its own PID file once it has left the session, so a reader never sees it half-way.
// ready_fd: written once setsid() is done, so the parent is ready only after it.
[[noreturn]] void RunGrandchild(int ready_fd) {
  setsid();
  const char done = 1;
  if (write(ready_fd, &done, 1) != 1) _exit(1);
  close(ready_fd);
  for (int s = 1; s < NSIG; ++s) signal(s, SIG_DFL);  // undo what our own parent ignored
  sigset_t none;
  sigemptyset(&none);
  sigprocmask(SIG_SETMASK, &none, nullptr);
  const int devnull = open("/dev/null", O_RDWR);
  for (int fd = 0; fd <= 2 && devnull >= 0; ++fd) dup2(devnull, fd);
  if (close_range(3, ~0U, 0) != 0) {
    for (int fd = 3; fd < 65536; ++fd) close(fd);
  }
  for (;;) pause();
}

// A numeric address only (or "localhost"): no resolver, so the binary links statically and
// starts without loading a library.
int Listen(const Options& o, int& port_out) {
  const std::string host = o.host == "localhost" ? "127.0.0.1" : o.host;
  sockaddr_storage at{};
  socklen_t at_len = 0;
  auto* v4 = reinterpret_cast<sockaddr_in*>(&at);
  auto* v6 = reinterpret_cast<sockaddr_in6*>(&at);
  if (inet_pton(AF_INET, host.c_str(), &v4->sin_addr) == 1) {
    v4->sin_family = AF_INET;
    v4->sin_port = htons(static_cast<uint16_t>(o.port));
    at_len = sizeof *v4;
  } else if (inet_pton(AF_INET6, host.c_str(), &v6->sin6_addr) == 1) {
    v6->sin6_family = AF_INET6;
    v6->sin6_port = htons(static_cast<uint16_t>(o.port));
    at_len = sizeof *v6;
  } else {
    Say(stderr, "testsvc: --host must be an IP address or localhost, got " + o.host);
    Exit(1);
  }
  const std::string port = std::to_string(o.port);
  int fd = socket(at.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  int err = errno;
  if (fd >= 0) {
    const int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(fd, reinterpret_cast<const sockaddr*>(&at), at_len) != 0 ||
        listen(fd, SOMAXCONN) != 0) {
      err = errno;
      close(fd);
      fd = -1;
    }
  }
  if (fd < 0) {
    Say(stderr, "testsvc: cannot listen on " + o.host + ":" + port + ": " + std::strerror(err));
    Exit(1);
  }
  sockaddr_storage addr{};
  socklen_t len = sizeof addr;
  getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  port_out = ntohs(addr.ss_family == AF_INET6 ? reinterpret_cast<sockaddr_in6*>(&addr)->sin6_port
                                              : reinterpret_cast<sockaddr_in*>(&addr)->sin_port);
  return fd;
}

struct Conn {
  int fd;
  std::string in, out;
  bool hung = false;         // a hung /health: read and discard until the peer gives up
  bool crash_after = false;  // GET /crash: exit once the response is out
  bool done = false;
  bool keep = false;         // HTTP/1.1 keep-alive: the next request may follow
  std::size_t consumed = 0;  // bytes of in that the request being answered took
  // GET /stream: chunks still to send, how often, and when the next is due.
  int stream_left = 0;
  Ns stream_every = 0;
  Ns stream_next = 0;
};

// The request's Content-Length (0 when absent), from its header block; case-insensitive.
std::size_t ContentLength(std::string head) {
  for (auto& ch : head) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
  const auto at = head.find("\ncontent-length:");
  if (at == std::string::npos) return 0;
  std::size_t n = 0;
  const char* p = head.c_str() + at + 16;
  while (*p == ' ') ++p;
  std::from_chars(p, head.c_str() + head.size(), n);
  return n;
}

std::string Response(int status, std::string_view content_type, std::string_view body,
                     bool keep = false) {
  const char* reason = status == 200 ? "OK" : status == 404 ? "Not Found" : "Bad Request";
  return "HTTP/1.1 " + std::to_string(status) + " " + reason +
         "\r\nContent-Type: " + std::string(content_type) +
         "\r\nContent-Length: " + std::to_string(body.size()) +
         "\r\nConnection: " + (keep ? "keep-alive" : "close") + "\r\n\r\n" + std::string(body);
}

// One SSE event as an HTTP chunk: "data: I T\n\n", T the CLOCK_MONOTONIC ns it was written
// at, so a client on this machine can tell how long it took to reach it.
std::string StreamChunk(int i) {
  const std::string event =
      "data: " + std::to_string(i) + " " + std::to_string(MonotonicNs()) + "\n\n";
  char size[16];
  std::snprintf(size, sizeof size, "%zx", event.size());
  return std::string(size) + "\r\n" + event + "\r\n";
}

// The value of name=... in a query string, or fallback.
long long QueryInt(const std::string& query, const std::string& name, long long fallback) {
  const auto at = ("&" + query).find("&" + name + "=");
  if (at == std::string::npos) return fallback;
  return std::atoll(query.c_str() + at + name.size() + 1);
}

class Server {
 public:
  Server(const Options& o, Ns start_ns) : o_(o), start_ns_(start_ns) {}

  void Run() {
    const Ns ready_at = start_ns_ + o_.ready_after_ms * kNsPerMs;
    std::optional<Ns> crash_at, term_at;
    if (o_.crash_after_ms) crash_at = start_ns_ + *o_.crash_after_ms * kNsPerMs;
    Ns next_tick = o_.log_every_ms ? start_ns_ + *o_.log_every_ms * kNsPerMs : 0;
    std::int64_t ticks = 0;
    std::vector<pollfd> fds;
    for (;;) {
      const Ns now = MonotonicNs();
      if (crash_at && now >= *crash_at) {
        Say(stderr, "testsvc: crashing");
        Exit(o_.crash_code);
      }
      if (term_at && now >= *term_at) {
        Say(stderr, "testsvc: term-delay over, exiting");
        Exit(0);
      }
      if (listen_fd_ < 0 && now >= ready_at) StartListening();
      while (o_.log_every_ms && now >= next_tick) {
        Say(stdout, "testsvc: tick " + std::to_string(++ticks));
        next_tick += *o_.log_every_ms * kNsPerMs;
      }

      std::optional<Ns> wake = crash_at;
      auto nearer = [&](Ns t) { wake = wake ? std::min(*wake, t) : t; };
      if (term_at) nearer(*term_at);
      if (listen_fd_ < 0) nearer(ready_at);
      if (o_.log_every_ms) nearer(next_tick);
      for (const Conn& c : conns_) {
        if (c.stream_left > 0) nearer(c.stream_next);
      }
      // Round up: waking a hair early would only spin until the deadline is really due.
      const int timeout =
          wake ? static_cast<int>(
                     std::min<Ns>((std::max<Ns>(*wake - now, 0) + kNsPerMs - 1) / kNsPerMs, 60'000))
               : -1;

      fds.clear();
      fds.push_back({g_signal_pipe[0], POLLIN, 0});
      fds.push_back({listen_fd_, POLLIN, 0});  // poll() skips a negative fd
      for (const Conn& c : conns_) {
        fds.push_back({c.fd, static_cast<short>(c.out.empty() ? POLLIN : POLLOUT), 0});
      }
      if (poll(fds.data(), fds.size(), timeout) < 0) {
        if (errno == EINTR) continue;
        Say(stderr, std::string("testsvc: poll: ") + std::strerror(errno));
        Exit(1);
      }
      if (fds[0].revents != 0 && DrainSignals() && !term_at) {
        if (o_.term_delay_ms == 0) {
          Say(stderr, "testsvc: SIGTERM");
          Exit(0);
        }
        Say(stderr, "testsvc: SIGTERM, exiting in " + std::to_string(o_.term_delay_ms) + " ms");
        term_at = MonotonicNs() + o_.term_delay_ms * kNsPerMs;
      }
      if (fds[1].revents != 0) Accept();
      // Accept() only appends, so the first conns_ line up with fds[2..].
      for (std::size_t i = 2; i < fds.size(); ++i) {
        if (fds[i].revents != 0) Service(conns_[i - 2]);
      }
      const Ns after = MonotonicNs();
      for (Conn& c : conns_) {
        if (c.done || c.stream_left <= 0 || after < c.stream_next) continue;
        c.out += StreamChunk(c.stream_left);
        if (--c.stream_left == 0) c.out += "0\r\n\r\n";
        c.stream_next += c.stream_every;
        Service(c);
      }
      std::erase_if(conns_, [](const Conn& c) { return c.done; });
    }
  }

 private:
  void StartListening() {
    int port = 0;
    listen_fd_ = Listen(o_, port);
    const Ns listen_ns = MonotonicNs();
    ready_ns_ = listen_ns;
    if (!o_.report.empty()) {
      // One O_APPEND write keeps lines whole when several instances share the report file.
      const std::string line = "{\"pid\":" + std::to_string(getpid()) +
                               ",\"start_ns\":" + std::to_string(start_ns_) +
                               ",\"listen_ns\":" + std::to_string(listen_ns) + "}\n";
      const int fd = open(o_.report.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
      if (fd < 0 || write(fd, line.data(), line.size()) != static_cast<ssize_t>(line.size())) {
        Say(stderr, "testsvc: cannot write report " + o_.report + ": " + std::strerror(errno));
      }
      if (fd >= 0) close(fd);
    }
    if (!o_.port_file.empty()) WriteFileAtomic(o_.port_file, std::to_string(port) + "\n");
    const bool v6 = o_.host.find(':') != std::string::npos;
    Say(stdout, "testsvc: listening on " + (v6 ? "[" + o_.host + "]" : o_.host) + ":" +
                    std::to_string(port));
  }

  // Returns true if a SIGTERM arrived; SIGCHLD bytes just reap the grandchild, so that a test
  // killing it sees it gone rather than lingering as our zombie.
  bool DrainSignals() {
    bool term = false;
    char buf[64];
    for (ssize_t n; (n = read(g_signal_pipe[0], buf, sizeof buf)) > 0;) {
      term = term || std::memchr(buf, 'T', static_cast<std::size_t>(n)) != nullptr;
    }
    while (waitpid(-1, nullptr, WNOHANG) > 0) {
    }
    return term;
  }

  void Accept() {
    for (;;) {
      const int fd = accept4(listen_fd_, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
      if (fd < 0) return;  // EAGAIN, or EMFILE: the backlog waits for the next round
      // Small writes (stream events) go out at once, as a streaming LLM server sends tokens.
      const int one = 1;
      setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
      conns_.push_back(Conn{fd, {}, {}});
    }
  }

  void Service(Conn& c) {
    if (!c.out.empty()) {
      const ssize_t n = write(c.fd, c.out.data(), c.out.size());
      if (n < 0 && (errno == EAGAIN || errno == EINTR)) return;
      if (n > 0) c.out.erase(0, static_cast<std::size_t>(n));
      if (n > 0 && !c.out.empty()) return;
      if (c.crash_after) {
        Say(stderr, "testsvc: crashing (GET /crash)");
        Exit(3);
      }
      if (c.stream_left > 0) return;  // more chunks come on their timer
      if (c.hung) return;             // a partial answer, then nothing more
      if (!c.keep) return Close(c);
      c.in.erase(0, c.consumed);
      c.consumed = 0;
      if (c.in.empty()) return;  // wait for the next request
    }
    char buf[4096];
    const ssize_t n = read(c.fd, buf, sizeof buf);
    if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) return Close(c);
    if (c.hung || c.stream_left > 0) return;
    if (n > 0) c.in.append(buf, static_cast<std::size_t>(n));
    // Requests may come in pieces; act only once the header block is complete.
    std::size_t end = c.in.find("\r\n\r\n");
    if (end == std::string::npos) end = c.in.find("\n\n");
    if (end == std::string::npos) {
      if (c.in.size() > 16384) {
        c.keep = false;
        c.out = Response(400, "text/plain", "request too large");
      }
      return;
    }
    // A body (POST /echo) is answered once it is all here.
    const std::size_t body_at = end + (c.in.compare(end, 4, "\r\n\r\n") == 0 ? 4 : 2);
    const std::size_t length = body_at + ContentLength(c.in.substr(0, end));
    if (c.in.size() < length) return;
    std::string head = c.in.substr(0, end);
    for (auto& ch : head) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
    c.keep = head.find("http/1.1") != std::string::npos &&
             head.find("connection: close") == std::string::npos;
    c.consumed = length;
    Respond(c);
    if (c.hung) c.keep = false;
    Service(c);  // the socket is almost always writable: answer without another poll round
  }

  void Respond(Conn& c) {
    const std::string line = c.in.substr(0, c.in.find_first_of("\r\n"));
    const std::size_t sp1 = line.find(' ');
    const std::size_t sp2 = line.find(' ', sp1 == std::string::npos ? sp1 : sp1 + 1);
    const std::string method = line.substr(0, sp1);
    std::string path = sp1 == std::string::npos ? "" : line.substr(sp1 + 1, sp2 - sp1 - 1);
    const std::size_t q = path.find('?');
    const std::string query = q == std::string::npos ? "" : path.substr(q + 1);
    path = path.substr(0, q);
    const Ns now = MonotonicNs();
    if (method == "GET" && path == "/health") {
      const bool hang = o_.hang_health || (o_.hang_health_after_ms &&
                                           now >= ready_ns_ + *o_.hang_health_after_ms * kNsPerMs);
      if (hang) {
        c.hung = true;
        return;
      }
      c.out = Response(200, "text/plain", "ok", c.keep);
    } else if (method == "GET" && path == "/") {
      c.out = Response(200, "application/json",
                       "{\"pid\":" + std::to_string(getpid()) +
                           ",\"uptime_ms\":" + std::to_string((now - start_ns_) / kNsPerMs) + "}",
                       c.keep);
    } else if (method == "POST" && path == "/echo") {
      // A job's work, played: its input comes back as its result.
      std::size_t end = c.in.find("\r\n\r\n");
      const std::size_t body_at = end == std::string::npos ? c.in.find("\n\n") + 2 : end + 4;
      c.out = Response(200, "application/json", c.in.substr(body_at, c.consumed - body_at), c.keep);
    } else if (method == "POST" && path == "/hang") {
      c.hung = true;  // a job that never finishes: only a cancel ends it
      // head=partial: the status line, then nothing (a head that never ends).
      if (query == "head=partial") c.out = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n";
      return;
    } else if (method == "POST" && path == "/sleep") {
      // As vLLM's sleep mode: the server stays up and gives its VRAM back, all of it or all but
      // a residual.
      if (o_.sleep_residual_mb > 0 && o_.vram_mb > 0) {
        Options asleep = o_;
        asleep.vram_mb = o_.sleep_residual_mb;
        HoldVram(asleep);
      } else if (!g_hold_path.empty()) {
        unlink(g_hold_path.c_str());
      }
      c.out = Response(200, "text/plain", "asleep", c.keep);
    } else if (method == "POST" && path == "/wake_up") {
      if (o_.vram_mb > 0) HoldVram(o_);
      c.out = Response(200, "text/plain", "awake", c.keep);
    } else if (path == "/v1/chat/completions" || path == "/v1/embeddings") {
      // Enough of an OpenAI server to route to: says which model it was asked for, and who.
      const std::size_t end = c.in.find("\r\n\r\n");
      const std::string body = c.in.substr(end + 4, c.consumed - end - 4);
      const auto model_at = body.find("\"model\"");
      const auto open =
          model_at == std::string::npos ? model_at : body.find('"', body.find(':', model_at));
      const std::string model = open == std::string::npos
                                    ? ""
                                    : body.substr(open + 1, body.find('"', open + 1) - open - 1);
      c.out = Response(200, "application/json",
                       "{\"object\":\"chat.completion\",\"model\":\"" + model + "\",\"path\":\"" +
                           path + "\",\"pid\":" + std::to_string(getpid()) + "}",
                       c.keep);
    } else if (method == "GET" && path == "/stream") {
      // Server-sent events, chunked: n events, interval_ms apart, the first at once.
      c.stream_left = static_cast<int>(QueryInt(query, "n", 5));
      c.stream_every = QueryInt(query, "interval_ms", 50) * kNsPerMs;
      c.stream_next = now;
      c.out =
          "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: "
          "chunked\r\nConnection: " +
          std::string(c.keep ? "keep-alive" : "close") + "\r\n\r\n";
      if (c.stream_left <= 0) c.out += "0\r\n\r\n";
    } else if (method == "GET" && path == "/crash") {
      c.out = Response(200, "text/plain", "crashing", c.keep);
      c.crash_after = true;
    } else {
      c.out = Response(404, "text/plain", "not found", c.keep);
    }
  }

  void Close(Conn& c) {
    close(c.fd);
    c.done = true;
  }

  const Options& o_;
  const Ns start_ns_;
  Ns ready_ns_ = 0;
  int listen_fd_ = -1;
  std::vector<Conn> conns_;
};

}  // namespace

int main(int argc, char** argv) {
  const Ns start_ns = MonotonicNs();  // first, so the benchmark sees our whole start-up
  const Options o = ParseArgs(argc, argv);
  if (o.exit_at_start) {
    Say(stderr, "testsvc: exiting at start with " + std::to_string(*o.exit_at_start));
    Exit(*o.exit_at_start);
  }
  if (!o.pid_file.empty()) WriteFileAtomic(o.pid_file, std::to_string(getpid()) + "\n");
  if (o.vram_mb > 0) HoldVram(o);

  // Fork before any signal set-up, so the grandchild inherits none of it.
  if (o.fork_grandchild) {
    int ready[2];
    if (pipe2(ready, O_CLOEXEC) != 0) {
      Say(stderr, std::string("testsvc: pipe2: ") + std::strerror(errno));
      Exit(1);
    }
    const pid_t pid = fork();
    if (pid < 0) {
      Say(stderr, std::string("testsvc: fork: ") + std::strerror(errno));
      Exit(1);
    }
    if (pid == 0) {
      close(ready[0]);
      RunGrandchild(ready[1]);
    }
    close(ready[1]);
    // The grandchild has its own session before anyone can see this service ready, and the
    // file that names it exists by then too.
    char done = 0;
    if (read(ready[0], &done, 1) != 1) {
      Say(stderr, "testsvc: the grandchild did not start");
      Exit(1);
    }
    close(ready[0]);
    if (!o.grandchild_pid_file.empty()) {
      WriteFileAtomic(o.grandchild_pid_file, std::to_string(pid) + "\n");
    }
  }

  signal(SIGPIPE, SIG_IGN);
  if (pipe2(g_signal_pipe, O_NONBLOCK | O_CLOEXEC) != 0) {
    Say(stderr, std::string("testsvc: pipe2: ") + std::strerror(errno));
    Exit(1);
  }
  if (o.ignore_sigterm) {
    signal(SIGTERM, SIG_IGN);
  } else {
    Handle(SIGTERM);
  }
  if (o.fork_grandchild) Handle(SIGCHLD);

  Server(o, start_ns).Run();
}
