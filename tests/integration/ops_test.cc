// SPDX-License-Identifier: Apache-2.0
// Running as a system service: `gpuvisor check` on broken and shipped configs, and the daemon's
// notify protocol (READY=1, WATCHDOG=1, STOPPING=1) read from a socket of the test's own.
#include <gtest/gtest.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <csignal>
#include <cstddef>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "testkit/daemon.h"

namespace gpuvisor::itest {
namespace {

bool contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

TEST(CheckCommand, ABrokenConfigGivesEveryErrorWithItsPositionAndExitsOne) {
  const std::string dir = make_temp_dir("check");
  const std::string path = dir + "/gpuvisor.yaml";
  std::ofstream(path) << "daemon:\n  listen: nowhere\nservices:\n  web:\n    command: [x]\n"
                         "    vram_mb: lots\n  api:\n    comand: [y]\n";
  const CliResult r = run_gpuvisor({"check", "--config", path}, dir);
  EXPECT_EQ(1, r.exit_code) << r.err;
  EXPECT_TRUE(contains(r.err, path + ":2:11: 'listen' must be HOST:PORT")) << r.err;
  EXPECT_TRUE(contains(r.err, path + ":6:14: 'vram_mb' must be an integer, got 'lots'")) << r.err;
  EXPECT_TRUE(contains(r.err, path + ":8:5: unknown key 'comand'")) << r.err;
  EXPECT_TRUE(contains(r.err, path + ": 4 errors")) << r.err;  // api's missing 'command' too
  EXPECT_EQ("", r.out);
  // Nothing was started or written beside the config.
  EXPECT_FALSE(std::filesystem::exists(dir + "/state"));
}

TEST(CheckCommand, EveryExampleAndTheShippedConfigAreValid) {
  const std::string dir = make_temp_dir("check");
  std::vector<std::string> files = {GPUVISOR_SOURCE_DIR "/packaging/gpuvisor.yaml"};
  for (const auto& e : std::filesystem::directory_iterator(GPUVISOR_SOURCE_DIR "/examples")) {
    if (e.path().extension() == ".yaml") files.push_back(e.path().string());
  }
  ASSERT_GE(files.size(), 5u);
  for (const auto& file : files) {
    const CliResult r = run_gpuvisor({"check", "--config", file}, dir);
    EXPECT_EQ(0, r.exit_code) << file << ":\n" << r.err;
    EXPECT_TRUE(contains(r.out, "ok: ")) << r.out;
  }
}

TEST(CheckCommand, WithoutConfigTheEmbeddedDemoAndBadArgumentsExitTwo) {
  const std::string dir = make_temp_dir("check");
  const CliResult demo = run_gpuvisor({"check"}, dir);
  EXPECT_EQ(0, demo.exit_code) << demo.err;
  EXPECT_TRUE(contains(demo.out, "plugins in the embedded demo config")) << demo.out;
  const CliResult bad = run_gpuvisor({"check", "--config"}, dir);
  EXPECT_EQ(2, bad.exit_code);
  EXPECT_FALSE(bad.err.empty());
  EXPECT_EQ(2, run_gpuvisor({"check", "extra"}, dir).exit_code);
}

// The service manager's end of NOTIFY_SOCKET: an abstract datagram socket, as systemd's own.
class NotifySocket {
 public:
  NotifySocket() : name_("@gpuvisor-itest-notify-" + std::to_string(getpid())) {
    fd_ = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::memcpy(addr.sun_path + 1, name_.data() + 1, name_.size() - 1);
    const auto length = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + name_.size());
    EXPECT_EQ(0, bind(fd_, reinterpret_cast<sockaddr*>(&addr), length)) << std::strerror(errno);
  }
  ~NotifySocket() { close(fd_); }
  NotifySocket(const NotifySocket&) = delete;
  NotifySocket& operator=(const NotifySocket&) = delete;

  const std::string& name() const { return name_; }
  // The next message, waiting for it at most limit; "" when none came.
  std::string next(std::chrono::milliseconds limit = 10s) const {
    pollfd p{fd_, POLLIN, 0};
    if (poll(&p, 1, static_cast<int>(limit.count())) != 1) return "";
    char buffer[512];
    const ssize_t n = recv(fd_, buffer, sizeof buffer, 0);
    return n <= 0 ? "" : std::string(buffer, static_cast<size_t>(n));
  }
  // Reads messages until `want`; false if another kind of message is not in `skip` or none
  // comes in time.
  bool wait_for(const std::string& want, const std::vector<std::string>& skip = {}) const {
    for (;;) {
      const std::string got = next();
      if (got == want) return true;
      if (std::find(skip.begin(), skip.end(), got) == skip.end()) {
        ADD_FAILURE() << "waiting for " << want << ", got '" << got << "'";
        return false;
      }
    }
  }

 private:
  std::string name_;
  int fd_ = -1;
};

TEST(SystemdNotify, ReadyWhenListeningWatchdogPingsAndStoppingOnSigterm) {
  NotifySocket systemd;
  Daemon daemon("services:\n  web:\n    command: [$TESTSVC, --port, \"0\"]\n");
  // The daemon inherits the environment it starts with; the variables go again right after.
  setenv("NOTIFY_SOCKET", systemd.name().c_str(), 1);
  setenv("WATCHDOG_USEC", "200000", 1);  // a ping every 100 ms
  const bool started = daemon.start();
  unsetenv("NOTIFY_SOCKET");
  unsetenv("WATCHDOG_USEC");
  ASSERT_TRUE(started) << daemon.stderr_text();
  EXPECT_TRUE(systemd.wait_for("READY=1"));
  EXPECT_TRUE(systemd.wait_for("WATCHDOG=1"));
  EXPECT_TRUE(systemd.wait_for("WATCHDOG=1"));
  kill(daemon.pid(), SIGTERM);
  EXPECT_TRUE(systemd.wait_for("STOPPING=1", {"WATCHDOG=1"}));
  EXPECT_EQ(0, daemon.wait_exit());
}

// The unit's ExecReload sends SIGHUP: the daemon goes on serving.
TEST(SystemdNotify, HangupDoesNotEndTheDaemon) {
  Daemon daemon("services:\n  web:\n    command: [$TESTSVC, --port, \"0\"]\n");
  ASSERT_TRUE(daemon.start()) << daemon.stderr_text();
  kill(daemon.pid(), SIGHUP);
  EXPECT_TRUE(eventually([&] { return contains(daemon.stderr_text(), "SIGHUP"); }));
  const auto reply = daemon.call("GET", "/healthz");
  ASSERT_TRUE(reply.ok());
  EXPECT_EQ(200u, reply->status);
  EXPECT_EQ(0, daemon.terminate());
}

TEST(SystemdNotify, WithoutNotifySocketTheDaemonRunsAsBefore) {
  ASSERT_EQ(nullptr, std::getenv("NOTIFY_SOCKET"));
  Daemon daemon("services:\n  web:\n    command: [$TESTSVC, --port, \"0\"]\n");
  ASSERT_TRUE(daemon.start()) << daemon.stderr_text();
  EXPECT_EQ(0, daemon.terminate());
  EXPECT_FALSE(contains(daemon.stderr_text(), "sd_notify")) << daemon.stderr_text();
}

}  // namespace
}  // namespace gpuvisor::itest
