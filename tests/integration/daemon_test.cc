// The daemon as a whole: restarts and adoption, signals, bad config, the API's errors, events.
#include "testkit/daemon.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "runtime/cgroup_parent.h"
#include "runtime/proc.h"
#include "testkit/fake_gpu.h"

namespace gpuvisor::itest {
namespace {

std::string one_service(int port, const std::string& args = "", const std::string& daemon = "") {
  return daemon + "services:\n  web:\n    command: [$TESTSVC, --port, \"" + std::to_string(port) +
         "\", --report, $DIR/report" + args +
         "]\n    health:\n      http: http://127.0.0.1:" + std::to_string(port) + "/health\n";
}

TEST(Daemon, KilledDaemonIsRestartedAndAdoptsWithoutStartingTwice) {
  const int port = free_port();
  const std::string dir = make_temp_dir("adopt");
  pid_t pid = 0;
  {
    Daemon first(one_service(port), dir);
    ASSERT_TRUE(first.start()) << first.stderr_text();
    ASSERT_EQ(0, first.cli({"ensure", "web"}).exit_code);
    pid = first.service("web")["pid"];
    first.kill9();
  }
  ASSERT_TRUE(pid_alive(pid));  // services outlive a crashed daemon
  for (int round = 0; round < 3; ++round) {
    Daemon again(one_service(port), dir);
    ASSERT_TRUE(again.start()) << again.stderr_text();
    ASSERT_TRUE(again.wait_state("web", "ready")) << again.stderr_text();
    const auto svc = again.service("web");
    EXPECT_EQ(pid, svc["pid"].get<pid_t>());
    EXPECT_TRUE(svc["adopted"].get<bool>());
    ASSERT_EQ(0, again.cli({"ensure", "web"}).exit_code);
    EXPECT_EQ(pid, again.service("web")["pid"].get<pid_t>());
    if (round < 2) {
      again.kill9();
    } else {
      EXPECT_EQ(0, again.terminate());  // SIGTERM: stops what it runs, adopted or not
    }
  }
  EXPECT_FALSE(pid_alive(pid));
  EXPECT_EQ(1u, count_lines(dir + "/report"));  // started exactly once
}

// autostart: ensured at start-up, higher priority first, so on a GPU that holds one of two the
// more important one gets it whatever the file's order; after a crash the next daemon adopts it
// rather than starting it again.
TEST(Daemon, AutostartServicesAreEnsuredAtStartUpHigherPriorityFirstAndAdoptedAfterACrash) {
  const std::string dir = make_temp_dir("autostart");
  FakeGpu gpu(dir, R"({"devices": [{"name": "Sim 24G", "total_mb": 24576}]})");
  std::string yaml = "services:\n";
  for (const auto& [name, priority] : {std::pair{"low", 10}, std::pair{"high", 20}}) {
    const std::string port = std::to_string(free_port());
    yaml +=
        std::string("  ") + name + ":\n    command: [$TESTSVC, --port, \"" + port +
        "\", --vram-mb, \"16000\", --report, $DIR/" + name +
        "]\n    vram_mb: 16000\n    autostart: true\n    priority: " + std::to_string(priority) +
        "\n    health: {http: \"http://127.0.0.1:" + port + "/health\"}\n";
  }
  pid_t pid = 0;
  {
    Daemon first(yaml, dir);
    ASSERT_TRUE(first.start()) << first.stderr_text();
    ASSERT_TRUE(first.wait_state("high", "ready")) << first.stderr_text();
    EXPECT_TRUE(first.service("high")["autostart"].get<bool>());
    ASSERT_TRUE(first.wait_state("low", "error")) << first.service("low").dump();
    EXPECT_NE(std::string::npos,
              first.service("low")["reason"].get<std::string>().find("high (priority 20 > 10,"))
        << first.service("low").dump();
    pid = first.service("high")["pid"];
    first.kill9();
  }
  Daemon again(yaml, dir);
  ASSERT_TRUE(again.start()) << again.stderr_text();
  ASSERT_TRUE(again.wait_state("high", "ready"));
  EXPECT_EQ(pid, again.service("high")["pid"].get<pid_t>());
  EXPECT_TRUE(again.service("high")["adopted"].get<bool>());
  EXPECT_EQ(1u, count_lines(dir + "/high"));  // started once, by the first daemon
  EXPECT_EQ(0u, count_lines(dir + "/low"));   // never: it would not fit beside high
}

// A crash loop cannot outlast restart_limit by way of daemon restarts: the count is kept in
// the instance's record and goes on from there.
// The daemon is SIGKILLed while a crashed service waits out its restart backoff: the next
// daemon carries the restart out instead of leaving the service stopped.
TEST(Daemon, ARestartPendingWhenTheDaemonIsKilledIsCarriedOutByTheNext) {
  const std::string dir = make_temp_dir("pending-restart");
  const std::string yaml = "services:\n" + service_yaml("web", free_port(), "",
                                                        "    restart: on-failure\n"
                                                        "    restart_backoff: 2s\n");
  Daemon d(yaml, dir);
  ASSERT_TRUE(d.start()) << d.stderr_text();
  ASSERT_EQ(0, d.cli({"ensure", "web"}).exit_code) << d.stderr_text();
  ASSERT_EQ(0, kill(d.service("web")["pid"].get<pid_t>(), SIGKILL));  // a crash
  ASSERT_TRUE(d.wait_event([](const nlohmann::json& e) {
    return e["type"] == "service.process_gone" && e["data"]["service"] == "web";
  })) << d.stderr_text();
  ASSERT_NE(std::string::npos,
            d.service("web")["reason"].get<std::string>().find("restarting in 2s"));
  d.kill9();

  ASSERT_TRUE(d.start()) << d.stderr_text();
  ASSERT_TRUE(d.wait_state("web", "ready")) << d.stderr_text();
  const auto svc = d.service("web");
  EXPECT_FALSE(svc["adopted"].get<bool>());
  EXPECT_EQ(1, svc["restarts"]);
  ASSERT_EQ(0, d.cli({"stop", "web"}).exit_code);
}

TEST(Daemon, TheRestartCountSurvivesADaemonRestart) {
  const std::string dir = make_temp_dir("restarts");
  const std::string yaml = "services:\n" + service_yaml("web", free_port(), "",
                                                        "    restart: on-failure\n"
                                                        "    restart_backoff: 100ms\n");
  Daemon d(yaml, dir);
  ASSERT_TRUE(d.start()) << d.stderr_text();
  ASSERT_EQ(0, d.cli({"ensure", "web"}).exit_code) << d.stderr_text();
  const pid_t first = d.service("web")["pid"];
  ASSERT_EQ(0, kill(first, SIGKILL));  // a crash
  int readies = 0;
  ASSERT_TRUE(d.wait_event([&](const nlohmann::json& e) {
    return e["type"] == "service.state_changed" && e["data"]["service"] == "web" &&
           e["data"]["to"] == "ready" && ++readies == 2;
  })) << d.stderr_text();
  const pid_t second = d.service("web")["pid"];
  ASSERT_EQ(1, d.service("web")["restarts"]);

  d.kill9();
  ASSERT_TRUE(d.start()) << d.stderr_text();
  ASSERT_TRUE(d.wait_state("web", "ready")) << d.stderr_text();
  const auto svc = d.service("web");
  EXPECT_EQ(second, svc["pid"].get<pid_t>());
  EXPECT_TRUE(svc["adopted"].get<bool>());
  EXPECT_EQ(1, svc["restarts"]);
  ASSERT_EQ(0, d.cli({"stop", "web"}).exit_code);
}

TEST(Daemon, ARecordWhosePidWasReusedIsNeverSignalled) {
  const int port = free_port();
  Daemon d(one_service(port));
  // An unrelated process that happens to have the recorded PID: the start time gives it away.
  const pid_t bystander = fork();
  if (bystander == 0) {
    execl(GPUVISOR_TESTSVC, GPUVISOR_TESTSVC, "--port", "0", static_cast<char*>(nullptr));
    _exit(127);
  }
  const auto st = read_proc_stat(bystander);
  ASSERT_TRUE(st);
  std::filesystem::create_directories(d.dir() + "/state/run");
  std::ofstream(d.dir() + "/state/run/web.json") << nlohmann::json{
      {"service", "web"},
      {"pid", bystander},
      {"start_time", st->start_time + 12345},
      {"cgroup", ""}}.dump();
  ASSERT_TRUE(d.start()) << d.stderr_text();
  EXPECT_EQ("stopped", d.service("web")["state"]);
  EXPECT_FALSE(std::filesystem::exists(d.dir() + "/state/run/web.json"));
  EXPECT_EQ(0, d.terminate());
  EXPECT_TRUE(pid_alive(bystander));
  kill(bystander, SIGKILL);
  waitpid(bystander, nullptr, 0);
}

TEST(Daemon, SigtermStopsServicesUnlessToldToLeaveThem) {
  const int port = free_port();
  {
    Daemon d(one_service(port));
    ASSERT_TRUE(d.start()) << d.stderr_text();
    ASSERT_EQ(0, d.cli({"ensure", "web"}).exit_code);
    const pid_t pid = d.service("web")["pid"];
    EXPECT_EQ(0, d.terminate());
    EXPECT_FALSE(pid_alive(pid));
  }
  {
    const std::string dir = make_temp_dir("leave");
    Daemon d(one_service(port, "", "daemon:\n  stop_services_on_exit: false\n"), dir);
    ASSERT_TRUE(d.start()) << d.stderr_text();
    ASSERT_EQ(0, d.cli({"ensure", "web"}).exit_code);
    const pid_t pid = d.service("web")["pid"];
    EXPECT_EQ(0, d.terminate());
    EXPECT_TRUE(pid_alive(pid));
    Daemon next(one_service(port), dir);
    ASSERT_TRUE(next.start()) << next.stderr_text();
    EXPECT_TRUE(next.wait_state("web", "ready"));
    EXPECT_EQ(pid, next.service("web")["pid"].get<pid_t>());
    EXPECT_EQ(0, next.cli({"stop", "web"}).exit_code);
    EXPECT_FALSE(pid_alive(pid));
  }
}

// A daemon killed with SIGKILL leaves its cgroups behind, one directory per state directory it
// ran on. The next daemon to start, on any state directory, removes the empty old ones.
TEST(Daemon, StartUpRemovesTheEmptyCgroupsOfKilledDaemons) {
  const auto root = CgroupParent::root();
  if (!root) GTEST_SKIP() << "no cgroups here: " << root.error().message;
  const std::string leftover = *root + "/state-itest-" + std::to_string(getpid());
  const std::string inside = leftover + "/svc.1.1";
  const timespec an_hour_ago{time(nullptr) - 3600, 0};
  const timespec times[2] = {an_hour_ago, an_hour_ago};
  ASSERT_EQ(0, mkdir(leftover.c_str(), 0755));
  ASSERT_EQ(0, mkdir(inside.c_str(), 0755));
  // The parent last: making a cgroup inside one makes it look new.
  for (const auto& dir : {inside, leftover}) {
    ASSERT_EQ(0, utimensat(AT_FDCWD, dir.c_str(), times, 0)) << dir;
  }
  Daemon d("services: {}\n");
  ASSERT_TRUE(d.start()) << d.stderr_text();
  EXPECT_FALSE(std::filesystem::exists(leftover)) << d.stderr_text();
  rmdir(inside.c_str());
  rmdir(leftover.c_str());
}

TEST(Daemon, PidFileAdoptsAnInstanceSomeoneElseStarted) {
  const int port = free_port();
  const std::string dir = make_temp_dir("pidfile");
  const pid_t external = fork();
  if (external == 0) {
    const std::string p = std::to_string(port);
    execl(GPUVISOR_TESTSVC, GPUVISOR_TESTSVC, "--port", p.c_str(), static_cast<char*>(nullptr));
    _exit(127);
  }
  std::ofstream(dir + "/ext.pid") << external << "\n";
  Daemon d(one_service(port) + "    pid_file: " + dir + "/ext.pid\n", dir);
  ASSERT_TRUE(d.start()) << d.stderr_text();
  ASSERT_TRUE(d.wait_state("web", "ready"));
  EXPECT_EQ(external, d.service("web")["pid"].get<pid_t>());
  EXPECT_EQ(0, d.cli({"ensure", "web"}).exit_code);
  EXPECT_EQ(0u, count_lines(dir + "/report"));  // nothing of ours was started
  // Leaving the daemon leaves what it did not start.
  EXPECT_EQ(0, d.terminate());
  EXPECT_TRUE(pid_alive(external));
  kill(external, SIGKILL);
  waitpid(external, nullptr, 0);
}

TEST(Daemon, AStalePidFileIsNotAdoptedAndSaysWhy) {
  const int port = free_port();
  const std::string dir = make_temp_dir("stale");
  // A live process that is younger than the pid file naming it: its PID was reused.
  const pid_t stranger = fork();
  if (stranger == 0) {
    execl(GPUVISOR_TESTSVC, GPUVISOR_TESTSVC, "--port", "0", static_cast<char*>(nullptr));
    _exit(127);
  }
  std::ofstream(dir + "/ext.pid") << stranger << "\n";
  std::filesystem::last_write_time(
      dir + "/ext.pid", std::filesystem::last_write_time(dir + "/ext.pid") - std::chrono::hours(1));
  Daemon d(one_service(port) + "    pid_file: " + dir + "/ext.pid\n", dir);
  ASSERT_TRUE(d.start()) << d.stderr_text();
  EXPECT_EQ("stopped", d.service("web")["state"]);
  ASSERT_EQ(0, d.cli({"ensure", "web"}).exit_code);
  EXPECT_NE(stranger, d.service("web")["pid"].get<pid_t>());
  EXPECT_EQ(1u, count_lines(dir + "/report"));  // started its own
  const auto logs = d.cli({"logs", "web"});
  EXPECT_NE(std::string::npos, logs.out.find("the PID was reused")) << logs.out;
  EXPECT_EQ(0, d.terminate());
  EXPECT_TRUE(pid_alive(stranger));
  kill(stranger, SIGKILL);
  waitpid(stranger, nullptr, 0);
}

TEST(Daemon, BadConfigNamesFileLineAndColumnAndDoesNotStart) {
  Daemon d("services:\n  web:\n    command: [x]\n    stop_grace: 10 sec\n    priorty: 1\n");
  EXPECT_FALSE(d.start());
  EXPECT_EQ(2, d.wait_exit());
  const std::string err = d.stderr_text();
  EXPECT_NE(std::string::npos, err.find("gpuvisor.yaml:4:17: ")) << err;
  EXPECT_NE(std::string::npos, err.find("bad duration '10 sec'")) << err;
  EXPECT_NE(std::string::npos, err.find("did you mean 'priority'?")) << err;
  EXPECT_FALSE(std::filesystem::exists(d.dir() + "/state/run"));
}

TEST(Daemon, ApiErrorsAreJsonWithFittingStatus) {
  const int port = free_port();
  Daemon d(one_service(port));
  ASSERT_TRUE(d.start()) << d.stderr_text();
  auto expect = [&](const std::string& method, const std::string& target, unsigned status,
                    const std::string& code, const std::string& words) {
    const auto reply = d.call(method, target);
    ASSERT_TRUE(reply.ok()) << target;
    EXPECT_EQ(status, reply->status) << target << ": " << reply->body;
    const auto json = nlohmann::json::parse(reply->body, nullptr, false);
    ASSERT_FALSE(json.is_discarded()) << reply->body;
    EXPECT_EQ(code, json["error"]["code"]) << target;
    EXPECT_NE(std::string::npos, json["error"]["message"].get<std::string>().find(words))
        << json.dump();
  };
  expect("GET", "/api/v1/services/nope", 404, "not_found", "no service named 'nope'");
  expect("POST", "/api/v1/services/nope/ensure", 404, "not_found", "configured: web");
  expect("POST", "/api/v1/services/web/ensure?timeout=soon", 400, "bad_request", "bad duration");
  expect("POST", "/api/v1/services/web/stop?force=maybe", 400, "bad_request", "true or false");
  expect("POST", "/api/v1/services/web/ensure?bogus=1", 400, "bad_request", "'bogus'");
  expect("GET", "/api/v1/services/web/ensure", 405, "method_not_allowed", "takes POST");
  expect("GET", "/api/v1/nothing", 404, "not_found", "no route");
  expect("GET", "/api/v2/services", 404, "not_found", "no route");
  expect("GET", "/api/v1/events?since=last", 400, "bad_request", "bad event id 'last'");
  expect("GET", "/api/v1/services/web/logs?n=-1", 400, "bad_request", "'n'");
  EXPECT_EQ("stopped", d.service("web")["state"]);  // none of it changed anything
  EXPECT_EQ(0u, count_lines(d.dir() + "/report"));
  const auto health = d.call("GET", "/healthz");
  ASSERT_TRUE(health.ok());
  EXPECT_EQ(200u, health->status);
}

// One route table makes every 404, 405 and unknown-parameter 400 (src/api/route_table.h).
TEST(Daemon, AKnownPathWithAnotherMethodIs405WithEveryMethodItTakesInAllow) {
  Daemon d(one_service(free_port()));
  ASSERT_TRUE(d.start()) << d.stderr_text();
  auto allow = [&](const std::string& method, const std::string& target) {
    const auto reply = d.call(method, target);
    EXPECT_TRUE(reply.ok()) << target;
    if (!reply.ok()) return std::string();
    EXPECT_EQ(405u, reply->status) << method << " " << target << ": " << reply->body;
    EXPECT_EQ("method_not_allowed", nlohmann::json::parse(reply->body)["error"]["code"]);
    return reply->headers.count("allow") != 0 ? reply->headers.at("allow") : "(none)";
  };
  EXPECT_EQ("GET", allow("POST", "/api/v1/services"));  // was a 404 before the table
  EXPECT_EQ("GET", allow("DELETE", "/api/v1/services/web"));
  EXPECT_EQ("POST", allow("GET", "/api/v1/services/web/stop"));
  EXPECT_EQ("POST", allow("PUT", "/api/v1/phases/1/ensure"));
  EXPECT_EQ("GET", allow("POST", "/api/v1/jobs"));
  EXPECT_EQ("POST", allow("GET", "/api/v1/jobs/1/cancel"));
  EXPECT_EQ("GET, PUT, DELETE", allow("POST", "/api/v1/plugins/x/config"));
  EXPECT_EQ("GET", allow("POST", "/"));
  const auto unknown = d.call("POST", "/api/v1/nothing");
  ASSERT_TRUE(unknown.ok());
  EXPECT_EQ(404u, unknown->status);
  EXPECT_EQ("no route POST /api/v1/nothing",
            nlohmann::json::parse(unknown->body)["error"]["message"].get<std::string>());
}

TEST(Daemon, EveryRouteRefusesAParameterItDoesNotTakeButTheDocumentedFewIgnoreTheirs) {
  Daemon d(one_service(free_port()));
  ASSERT_TRUE(d.start()) << d.stderr_text();
  auto message = [&](const std::string& target) {
    const auto reply = d.call("GET", target);
    EXPECT_TRUE(reply.ok()) << target;
    if (!reply.ok()) return std::string();
    EXPECT_EQ(400u, reply->status) << target << ": " << reply->body;
    return nlohmann::json::parse(reply->body)["error"]["message"].get<std::string>();
  };
  // These were silently ignored before the route table.
  EXPECT_EQ("unknown parameter 'force' (this route takes none)",
            message("/api/v1/workers?force=1"));
  EXPECT_EQ("unknown parameter 'state' (allowed: timeout, force, n, follow, since)",
            message("/api/v1/services?state=ready"));
  EXPECT_EQ("unknown parameter 'limit' (this route takes none)",
            message("/api/v1/plugins/x?limit=1"));
  EXPECT_EQ("unknown parameter 'mode' (allowed: state, plugin, limit)",
            message("/api/v1/jobs?mode=http"));
  // docs/api.md: the parameterless service views ignore the names other routes take.
  EXPECT_EQ(200u, d.call("GET", "/api/v1/services?timeout=1s&force")->status);
  EXPECT_EQ(200u, d.call("GET", "/api/v1/services/web?n=3")->status);
}

TEST(Daemon, ATokenGuardsTheApiButNotHealthz) {
  setenv("GPUVISOR_TOKEN", "s3cret", 1);  // the daemon and the CLI both read it
  Daemon d(one_service(free_port()));
  const bool started = d.start();
  unsetenv("GPUVISOR_TOKEN");
  ASSERT_TRUE(started) << d.stderr_text();
  const auto denied = d.call("GET", "/api/v1/services");
  ASSERT_TRUE(denied.ok());
  EXPECT_EQ(401u, denied->status);
  EXPECT_EQ("unauthorized", nlohmann::json::parse(denied->body)["error"]["code"]);
  EXPECT_EQ(200u, d.call("GET", "/healthz")->status);
  const auto refused = d.cli({"status"});
  EXPECT_EQ(1, refused.exit_code);
  EXPECT_NE(std::string::npos, refused.err.find("bearer token")) << refused.err;
  setenv("GPUVISOR_TOKEN", "s3cret", 1);
  const auto allowed = d.cli({"status"});
  unsetenv("GPUVISOR_TOKEN");
  EXPECT_EQ(0, allowed.exit_code) << allowed.err;
}

TEST(Daemon, EventsStreamEveryTransitionWithIncreasingIds) {
  const int port = free_port();
  Daemon d(one_service(port));
  ASSERT_TRUE(d.start()) << d.stderr_text();
  ASSERT_EQ(0, d.cli({"ensure", "web"}).exit_code);
  ASSERT_EQ(0, d.cli({"stop", "web"}).exit_code);
  std::vector<std::string> states;
  uint64_t last_id = 0;
  bool increasing = true;
  d.wait_event([&](const nlohmann::json& e) {
    increasing &= e["id"].get<uint64_t>() > last_id;
    last_id = e["id"];
    if (e["type"] == "service.state_changed") states.push_back(e["data"]["to"]);
    return states.size() == 4;
  });
  EXPECT_TRUE(increasing);
  EXPECT_EQ((std::vector<std::string>{"starting", "ready", "stopping", "stopped"}), states);
}

TEST(Daemon, CliReportsAnUnreachableDaemonInOneLine) {
  Daemon d("services: {}\n");
  const auto r = d.cli({"status"});  // never started: nothing listens at the URL
  EXPECT_EQ(1, r.exit_code);
  EXPECT_NE(std::string::npos, r.err.find("cannot reach the daemon")) << r.err;
  EXPECT_EQ(1, std::count(r.err.begin(), r.err.end(), '\n'));
}

TEST(Daemon, CliRefusesBadArguments) {
  Daemon d("services: {}\n");
  ASSERT_TRUE(d.start());
  const auto r = d.cli({"ensure"});
  EXPECT_EQ(2, r.exit_code);
  EXPECT_NE(std::string::npos, r.err.find("name is required")) << r.err;
  const auto t = d.cli({"ensure", "x", "--timeout", "soon"});
  EXPECT_EQ(1, t.exit_code);
  EXPECT_NE(std::string::npos, t.err.find("bad --timeout 'soon'")) << t.err;
}

}  // namespace
}  // namespace gpuvisor::itest
