// SPDX-License-Identifier: Apache-2.0
// The notify protocol: what is said when, the watchdog's pace on a fake clock, and the datagram
// on real sockets, abstract and on disk.
#include "app/sd_notify.h"

#include <gtest/gtest.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstddef>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "lib/temp_dir.h"

namespace gpuvisor {
namespace {

using std::chrono::milliseconds;

struct Recorded {
  std::vector<std::string> sent;
  SdNotifier::Send send() {
    return [this](const std::string& state) { sent.push_back(state); };
  }
};

TEST(SdNotifier, ReadyThenAPingAtEveryHalfInterval) {
  FakeClock clock;
  Recorded r;
  SdNotifier notifier(clock, milliseconds(1000), r.send());
  EXPECT_TRUE(r.sent.empty());
  notifier.ready();
  EXPECT_EQ(r.sent, (std::vector<std::string>{"READY=1", "WATCHDOG=1"}));
  clock.advance(milliseconds(499));
  EXPECT_EQ(2u, r.sent.size());
  clock.advance(milliseconds(1));
  clock.advance(milliseconds(500));
  EXPECT_EQ(r.sent,
            (std::vector<std::string>{"READY=1", "WATCHDOG=1", "WATCHDOG=1", "WATCHDOG=1"}));
  // While services stop, the pings go on.
  notifier.stopping();
  clock.advance(milliseconds(500));
  EXPECT_EQ(r.sent, (std::vector<std::string>{"READY=1", "WATCHDOG=1", "WATCHDOG=1", "WATCHDOG=1",
                                              "STOPPING=1", "WATCHDOG=1"}));
}

TEST(SdNotifier, NoWatchdogNoPings) {
  FakeClock clock;
  Recorded r;
  SdNotifier notifier(clock, milliseconds(0), r.send());
  notifier.ready();
  clock.advance(milliseconds(60'000));
  EXPECT_EQ(r.sent, (std::vector<std::string>{"READY=1"}));
  EXPECT_EQ(0u, clock.armed_count());
}

TEST(SdNotifier, GoneMeansNoMorePings) {
  FakeClock clock;
  Recorded r;
  {
    SdNotifier notifier(clock, milliseconds(100), r.send());
    notifier.ready();
  }
  clock.advance(milliseconds(1000));
  EXPECT_EQ(2u, r.sent.size());
}

TEST(SdNotifier, WithoutASocketNothingIsSaid) {
  FakeClock clock;
  const auto notifier = SdNotifier::to(clock, NotifyTarget{"", milliseconds(100)});
  notifier->ready();
  notifier->stopping();
  EXPECT_EQ(0u, clock.armed_count());
}

// WATCHDOG_PID names the process the watchdog is for; the variables do not outlive the read.
TEST(SdNotify, TheEnvironmentIsTakenOnce) {
  setenv("NOTIFY_SOCKET", "@gv-test", 1);
  setenv("WATCHDOG_USEC", "3000000", 1);
  setenv("WATCHDOG_PID", std::to_string(getpid()).c_str(), 1);
  NotifyTarget target = take_notify_target();
  EXPECT_EQ("@gv-test", target.socket);
  EXPECT_EQ(milliseconds(3000), target.watchdog);
  EXPECT_EQ(nullptr, std::getenv("NOTIFY_SOCKET"));
  EXPECT_EQ(nullptr, std::getenv("WATCHDOG_USEC"));
  EXPECT_EQ(nullptr, std::getenv("WATCHDOG_PID"));

  setenv("NOTIFY_SOCKET", "/run/x", 1);
  setenv("WATCHDOG_USEC", "3000000", 1);
  setenv("WATCHDOG_PID", "1", 1);  // another process's watchdog
  target = take_notify_target();
  EXPECT_EQ("/run/x", target.socket);
  EXPECT_EQ(milliseconds(0), target.watchdog);

  setenv("WATCHDOG_USEC", "soon", 1);
  EXPECT_EQ(milliseconds(0), take_notify_target().watchdog);
  setenv("WATCHDOG_USEC", "-1000000", 1);
  EXPECT_EQ(milliseconds(0), take_notify_target().watchdog);
  EXPECT_EQ("", take_notify_target().socket);
}

// A datagram socket bound to name ("@..." abstract); returns the fd.
int bind_datagram(const std::string& name) {
  const int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::memcpy(addr.sun_path, name.data(), name.size());
  socklen_t length = offsetof(sockaddr_un, sun_path) + name.size();
  if (name[0] == '@') {
    addr.sun_path[0] = '\0';
  } else {
    ++length;
  }
  EXPECT_EQ(0, bind(fd, reinterpret_cast<sockaddr*>(&addr), length)) << std::strerror(errno);
  return fd;
}

std::string receive(int fd) {
  pollfd p{fd, POLLIN, 0};
  if (poll(&p, 1, 5000) != 1) return "(nothing)";
  char buffer[256];
  const ssize_t n = recv(fd, buffer, sizeof buffer, 0);
  return n < 0 ? "(error)" : std::string(buffer, static_cast<size_t>(n));
}

TEST(SdNotify, SendsOneDatagramToAnAbstractName) {
  const std::string name = "@gpuvisor-sd-notify-test-" + std::to_string(getpid());
  const int fd = bind_datagram(name);
  ASSERT_TRUE(send_notify(name, "READY=1").ok());
  EXPECT_EQ("READY=1", receive(fd));
  close(fd);
}

TEST(SdNotify, SendsOneDatagramToAPath) {
  const std::string path = fresh_dir("notify") + "/notify.sock";
  const int fd = bind_datagram(path);
  ASSERT_TRUE(send_notify(path, "WATCHDOG=1").ok());
  EXPECT_EQ("WATCHDOG=1", receive(fd));
  close(fd);
}

TEST(SdNotify, AnUnusableSocketIsAnError) {
  EXPECT_FALSE(send_notify("relative/path", "READY=1").ok());
  EXPECT_FALSE(send_notify("@gpuvisor-nobody-listens-" + std::to_string(getpid()), "READY=1").ok());
  EXPECT_FALSE(send_notify(std::string(200, '/'), "READY=1").ok());
}

}  // namespace
}  // namespace gpuvisor
