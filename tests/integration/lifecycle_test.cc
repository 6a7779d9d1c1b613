// The real daemon against the real test service: every fault the lifecycle must survive.
#include <gtest/gtest.h>
#include <signal.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <thread>

#include "runtime/proc.h"
#include "testkit/daemon.h"

namespace gpuvisor::itest {
namespace {

TEST(Lifecycle, EnsureStatusStopThroughTheCli) {
  const int port = free_port();
  Daemon d("services:\n" + service_yaml("web", port, ", --report, $DIR/report"));
  ASSERT_TRUE(d.start()) << d.stderr_text();

  auto ensured = d.cli({"ensure", "web"});
  EXPECT_EQ(0, ensured.exit_code) << ensured.err;
  EXPECT_NE(std::string::npos, ensured.out.find("web is ready (pid ")) << ensured.out;

  const auto status = d.cli({"status", "--json"});
  ASSERT_EQ(0, status.exit_code);
  const auto json = nlohmann::json::parse(status.out);
  EXPECT_EQ("ready", json["services"][0]["state"]);
  const pid_t pid = json["services"][0]["pid"];
  EXPECT_TRUE(pid_alive(pid));

  const auto table = d.cli({"status"});
  EXPECT_NE(std::string::npos, table.out.find("NAME")) << table.out;
  EXPECT_NE(std::string::npos, table.out.find("ready")) << table.out;

  const auto stopped = d.cli({"stop", "web"});
  EXPECT_EQ(0, stopped.exit_code) << stopped.err;
  EXPECT_FALSE(pid_alive(pid));
  EXPECT_EQ("stopped", d.service("web")["state"]);
  EXPECT_EQ(1u, count_lines(d.dir() + "/report"));
}

TEST(Lifecycle, StopLeavesNothingRunningEvenAGrandchildThatCalledSetsid) {
  for (const bool cgroups : {true, false}) {
    const int port = free_port();
    Daemon d("services:\n" +
             service_yaml("svc", port,
                          ", --fork-setsid-grandchild, --grandchild-pid-file, $DIR/grandchild"));
    ASSERT_TRUE(
        d.start(cgroups ? std::vector<std::string>{} : std::vector<std::string>{"--no-cgroups"}))
        << d.stderr_text();
    ASSERT_EQ(0, d.cli({"ensure", "svc"}).exit_code);
    const pid_t grandchild = read_pid_file(d.dir() + "/grandchild");
    ASSERT_GT(grandchild, 0);
    const pid_t pid = d.service("svc")["pid"];
    ASSERT_TRUE(pid_alive(grandchild));
    ASSERT_EQ(0, d.cli({"stop", "svc"}).exit_code);
    EXPECT_FALSE(pid_alive(pid)) << (cgroups ? "cgroup" : "process group");
    EXPECT_FALSE(pid_alive(grandchild)) << (cgroups ? "cgroup" : "process group");
  }
}

TEST(Lifecycle, SigkillAfterStopGraceWhenSigtermIsIgnored) {
  const int port = free_port();
  Daemon d("services:\n" +
           service_yaml("stubborn", port, ", --ignore-sigterm", "    stop_grace: 300ms\n"));
  ASSERT_TRUE(d.start()) << d.stderr_text();
  ASSERT_EQ(0, d.cli({"ensure", "stubborn"}).exit_code);
  const pid_t pid = d.service("stubborn")["pid"];
  const auto stopped = d.cli({"stop", "stubborn", "--json"});
  ASSERT_EQ(0, stopped.exit_code) << stopped.err;
  const auto json = nlohmann::json::parse(stopped.out);
  EXPECT_EQ("stopped", json["state"]);
  EXPECT_NE(std::string::npos, json["reason"].get<std::string>().find("SIGKILL"));
  EXPECT_FALSE(pid_alive(pid));
}

TEST(Lifecycle, CrashesAreRestartedWithBackoffUntilTheLimit) {
  const int port = free_port();
  Daemon d("services:\n" + service_yaml("flaky", port, ", --crash-after, \"150\"",
                                        "    restart: on-failure\n"
                                        "    restart_backoff: 50ms\n"
                                        "    restart_limit: 2\n"));
  ASSERT_TRUE(d.start()) << d.stderr_text();
  d.cli({"ensure", "flaky"});  // may see the first crash or not; the restarts are the point
  ASSERT_TRUE(d.wait_event([](const nlohmann::json& e) {
    return e["data"].value("reason", "").find("gave up after 2 restarts") != std::string::npos;
  })) << d.stderr_text();
  const auto svc = d.service("flaky");
  EXPECT_EQ("error", svc["state"]);
  EXPECT_EQ("exited with status 3", svc["last_exit"]);
  int starts = 0;
  d.wait_event(
      [&](const nlohmann::json& e) {
        if (e["data"].value("to", "") == "starting") ++starts;
        return false;
      },
      300ms);
  EXPECT_EQ(3, starts);
}

TEST(Lifecycle, ExitAtStartFailsEnsureWithStatusAndLastOutput) {
  const int port = free_port();
  Daemon d("services:\n" + service_yaml("broken", port, ", --exit-at-start, \"4\""));
  ASSERT_TRUE(d.start()) << d.stderr_text();
  const auto ensured = d.cli({"ensure", "broken"});
  EXPECT_EQ(1, ensured.exit_code);
  EXPECT_NE(std::string::npos, ensured.err.find("exited with status 4 while starting"))
      << ensured.err;
  EXPECT_NE(std::string::npos, ensured.err.find("testsvc: exiting at start with 4")) << ensured.err;
  EXPECT_EQ("error", d.service("broken")["state"]);
}

TEST(Lifecycle, StartupTimeoutStopsAServiceThatNeverBecomesHealthy) {
  const int port = free_port();
  Daemon d("services:\n" + service_yaml("hung", port, ", --hang-health, --pid-file, $DIR/pid",
                                        "    startup_timeout: 400ms\n"));
  ASSERT_TRUE(d.start()) << d.stderr_text();
  const auto ensured = d.cli({"ensure", "hung"});
  EXPECT_EQ(1, ensured.exit_code);
  EXPECT_NE(std::string::npos, ensured.err.find("not healthy within startup_timeout 400ms"))
      << ensured.err;
  // The hung process is stopped once the failure is declared; the daemon says when it is gone.
  ASSERT_TRUE(d.wait_event([](const nlohmann::json& e) {
    return e["type"] == "service.process_gone" && e["data"]["service"] == "hung";
  }));
  EXPECT_FALSE(pid_alive(read_pid_file(d.dir() + "/pid")));
}

TEST(Lifecycle, EnsureTimeoutAnswers504AndTheStartGoesOn) {
  const int port = free_port();
  Daemon d("services:\n" + service_yaml("slow", port, ", --ready-after, \"1500\""));
  ASSERT_TRUE(d.start()) << d.stderr_text();
  auto reply = d.call("POST", "/api/v1/services/slow/ensure?timeout=100ms");
  ASSERT_TRUE(reply.ok());
  EXPECT_EQ(504u, reply->status);
  EXPECT_EQ("timeout", nlohmann::json::parse(reply->body)["error"]["code"]);
  EXPECT_TRUE(d.wait_state("slow", "ready"));
}

TEST(Lifecycle, ConcurrentEnsuresStartOneProcess) {
  const int port = free_port();
  Daemon d("services:\n" +
           service_yaml("one", port, ", --ready-after, \"300\", --report, $DIR/report"));
  ASSERT_TRUE(d.start()) << d.stderr_text();
  std::vector<std::thread> threads;
  std::atomic<int> ok{0};
  for (int i = 0; i < 8; ++i) {
    threads.emplace_back([&] {
      auto r = d.call("POST", "/api/v1/services/one/ensure");
      if (r.ok() && r->status == 200) ++ok;
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(8, ok.load());
  EXPECT_EQ(1u, count_lines(d.dir() + "/report"));
}

TEST(Lifecycle, LivenessFailureRestartsAHungService) {
  const int port = free_port();
  Daemon d("services:\n" + service_yaml("hangs", port, ", --hang-health-after, \"200\"",
                                        "      interval: 100ms\n"
                                        "      timeout: 100ms\n"
                                        "      failure_threshold: 2\n"
                                        "    restart: on-failure\n"
                                        "    restart_backoff: 50ms\n"));
  ASSERT_TRUE(d.start()) << d.stderr_text();
  ASSERT_EQ(0, d.cli({"ensure", "hangs"}).exit_code);
  const pid_t first = d.service("hangs")["pid"];
  ASSERT_TRUE(d.wait_event([](const nlohmann::json& e) {
    return e["data"].value("reason", "").find("liveness check failed 2 times") != std::string::npos;
  }));
  // The restart itself, which comes only after the hung instance is gone (the error event
  // before it also says "restart 1 of 5", while the old process may still be stopping).
  ASSERT_TRUE(d.wait_event([](const nlohmann::json& e) {
    return e["data"].value("reason", "").find("restart 1 of 5 after failure") != std::string::npos;
  }));
  EXPECT_FALSE(pid_alive(first));
}

TEST(Lifecycle, LogsShowTheServiceOutput) {
  const int port = free_port();
  Daemon d("services:\n" + service_yaml("talker", port, ""));
  ASSERT_TRUE(d.start()) << d.stderr_text();
  ASSERT_EQ(0, d.cli({"ensure", "talker"}).exit_code);
  const auto logs = d.cli({"logs", "talker", "-n", "50"});
  EXPECT_EQ(0, logs.exit_code);
  EXPECT_NE(std::string::npos, logs.out.find("testsvc: listening on 127.0.0.1:")) << logs.out;
  EXPECT_NE(std::string::npos, logs.out.find("gpuvisor: started pid")) << logs.out;
  const auto missing = d.cli({"logs", "nobody"});
  EXPECT_EQ(1, missing.exit_code);
  EXPECT_NE(std::string::npos, missing.err.find("no service named 'nobody'")) << missing.err;
}

}  // namespace
}  // namespace gpuvisor::itest
