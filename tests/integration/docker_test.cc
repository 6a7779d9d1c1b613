// The real daemon against a real Docker engine (tests/docker/engine.sh, started by ctest as a
// fixture on a private socket, with a busybox image made without a registry). Where no engine
// can start, every test here reports skipped and says why.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>

#include "testkit/daemon.h"
#include "testkit/fake_gpu.h"

namespace gpuvisor::itest {
namespace {

// Where tests/CMakeLists.txt has ctest start the engine.
std::string engine_dir() {
  const char* tmp = std::getenv("TEST_TMPDIR");
  return tmp == nullptr ? "" : std::string(tmp) + "/docker-engine";
}

// The engine's socket, or why there is none (then the test skips, loudly).
std::string engine_socket(std::string& why) {
  const std::string dir = engine_dir();
  if (dir.empty()) {
    why = "TEST_TMPDIR is not set (run through ctest, which starts the engine)";
    return "";
  }
  if (std::ifstream reason(dir + "/unavailable"); reason) {
    std::getline(reason, why);
    return "";
  }
  if (!std::filesystem::exists(dir + "/docker.sock")) {
    why = "no engine socket in " + dir;
    return "";
  }
  return dir + "/docker.sock";
}

#define REQUIRE_ENGINE(sock)                                                   \
  std::string why_;                                                            \
  const std::string sock = engine_socket(why_);                                \
  if (sock.empty()) {                                                          \
    std::fprintf(stderr, "\n*** DOCKER TEST SKIPPED: %s ***\n", why_.c_str()); \
    GTEST_SKIP() << "no Docker engine: " << why_;                              \
  }

// One Engine API call through curl, the way a person would check what the daemon did.
struct ApiReply {
  int status = 0;
  std::string body;
};
ApiReply engine_api(const std::string& sock, const std::string& method, const std::string& path,
                    const std::string& body = "") {
  const std::string out = make_temp_dir("curl") + "/body";
  std::string cmd = "curl -s -o " + out + " -w '%{http_code}' --unix-socket " + sock + " -X " +
                    method + " 'http://localhost/v1.41" + path + "'";
  if (!body.empty()) cmd += " -H 'Content-Type: application/json' -d '" + body + "'";
  ApiReply reply;
  if (FILE* p = popen(cmd.c_str(), "r")) {
    char code[8] = {};
    if (fgets(code, sizeof code, p) != nullptr) reply.status = std::atoi(code);
    pclose(p);
  }
  std::ifstream in(out);
  reply.body.assign(std::istreambuf_iterator<char>(in), {});
  return reply;
}

nlohmann::json inspect(const std::string& sock, const std::string& name) {
  const auto r = engine_api(sock, "GET", "/containers/" + name + "/json");
  if (r.status != 200) return nullptr;
  return nlohmann::json::parse(r.body, nullptr, false);
}

// Names unique to one test run, so a rerun never meets a leftover.
std::string unique(const std::string& base) {
  return base + "-" + std::to_string(getpid());
}

// A busybox httpd container service that gpuvisor creates from the test image.
std::string owned_service(const std::string& name, int port, const std::string& extra = "") {
  const std::string p = std::to_string(port);
  return "  " + name +
         ":\n    runtime: docker\n    command: [/bin/busybox, httpd, -f, -p, \"127.0.0.1:" + p +
         "\", -h, /www]\n    docker: {image: \"gpuvisor-test:1\", gpus: none}\n"
         "    stop_grace: 5s\n    health: {http: \"http://127.0.0.1:" +
         p + "/health\"}\n" + extra;
}

// Like owned_service, and its shell prints "tick N" every 100 ms besides (the sleep paces the
// container's own output; nothing waits on it).
std::string ticking_service(const std::string& name, int port) {
  const std::string p = std::to_string(port);
  return "  " + name +
         ":\n    runtime: docker\n    command: [/bin/sh, -c, \"/bin/httpd -p 127.0.0.1:" + p +
         " -h /www; i=0; while true; do i=$((i+1)); echo tick $i; /bin/sleep 0.1; done\"]\n" +
         "    docker: {image: \"gpuvisor-test:1\", gpus: none}\n    stop_grace: 5s\n" +
         "    health: {http: \"http://127.0.0.1:" + p + "/health\"}\n";
}

// The N of every "tick N" line in a log, in order.
std::vector<int> ticks(const std::string& log) {
  std::vector<int> out;
  std::ifstream in(log);
  for (std::string line; std::getline(in, line);) {
    if (line.rfind("tick ", 0) == 0) out.push_back(std::atoi(line.c_str() + 5));
  }
  return out;
}

std::string config(const std::string& sock, const std::string& services) {
  return "daemon: {docker_host: \"unix://" + sock + "\"}\nservices:\n" + services;
}

TEST(Docker, CreatesStartsAndStopsAContainerFromAnImage) {
  REQUIRE_ENGINE(sock);
  const std::string name = unique("web");
  Daemon d(config(sock, owned_service(name, free_port())));
  ASSERT_TRUE(d.start()) << d.stderr_text();

  const auto ensured = d.cli({"ensure", name});
  ASSERT_EQ(0, ensured.exit_code) << ensured.out << ensured.err;
  const auto svc = d.service(name);
  EXPECT_EQ("ready", svc["state"]);
  EXPECT_EQ("docker", svc["mode"]);
  EXPECT_EQ("gpuvisor-" + name, svc["container"]);
  const auto c = inspect(sock, "gpuvisor-" + name);
  ASSERT_TRUE(c.is_object());
  EXPECT_TRUE(c["State"]["Running"].get<bool>());
  EXPECT_EQ(name, c["Config"]["Labels"]["io.gpuvisor.service"]);
  // The container's first process, seen from the host: what VRAM attribution starts from.
  const pid_t pid = svc["pid"];
  EXPECT_EQ(c["State"]["Pid"].get<pid_t>(), pid);
  EXPECT_TRUE(pid_alive(pid));

  const auto stopped = d.cli({"stop", name});
  EXPECT_EQ(0, stopped.exit_code) << stopped.err;
  EXPECT_EQ("stopped", d.service(name)["state"]);
  EXPECT_FALSE(pid_alive(pid));
  // Made from the config, so removed: the next start makes it afresh.
  EXPECT_TRUE(inspect(sock, "gpuvisor-" + name).is_null());
}

// Runs curl with args; what it wrote to stdout.
std::string curl(const std::string& args) {
  std::string out;
  if (FILE* p = popen(("curl -s " + args).c_str(), "r")) {
    char buf[4096];
    while (const size_t n = fread(buf, 1, sizeof buf, p)) out.append(buf, n);
    pclose(p);
  }
  return out;
}

// busybox httpd, an upstream nobody here wrote: it answers HTTP/1.0-style and closes every
// connection, which the proxy must not pass on to its client.
TEST(Docker, BusyboxHttpdInAContainerIsProxiedOnDemandOverOneClientConnection) {
  REQUIRE_ENGINE(sock);
  const std::string name = unique("www");
  const int port = free_port();
  Daemon d(config(sock, owned_service(name, port,
                                      "    proxy: {url: \"http://127.0.0.1:" +
                                          std::to_string(port) + "\"}\n")));
  ASSERT_TRUE(d.start()) << d.stderr_text();
  const std::string url = d.url() + "/upstream/" + name + "/health";
  // The first request starts the container; the second goes on the same client connection.
  const std::string two = curl("-w '%{http_code} %{num_connects}\\n' " + url + " " + url);
  EXPECT_EQ("ok\n200 1\nok\n200 0\n", two) << d.stderr_text();
  EXPECT_EQ("busy", d.service(name)["state"]);
  const std::string head = curl("-I " + url);
  EXPECT_NE(std::string::npos, head.find("Content-Length: 3\r\n")) << head;
  EXPECT_EQ(std::string::npos, head.find("Transfer-Encoding")) << head;
  EXPECT_EQ("404",
            curl("-o /dev/null -w '%{http_code}' " + d.url() + "/upstream/" + name + "/missing"));
  EXPECT_EQ(0, d.cli({"stop", name}).exit_code);
}

TEST(Docker, AnExistingContainerIsStartedAndStoppedButKept) {
  REQUIRE_ENGINE(sock);
  const std::string name = unique("existing");
  const int port = free_port();
  const auto created = engine_api(
      sock, "POST", "/containers/create?name=" + name,
      R"({"Image":"gpuvisor-test:1","Cmd":["/bin/busybox","httpd","-f","-p","127.0.0.1:)" +
          std::to_string(port) +
          R"(","-h","/www"],"HostConfig":{"Init":true,"NetworkMode":"host"}})");
  ASSERT_EQ(201, created.status) << created.body;
  Daemon d(config(sock, "  tts:\n    runtime: docker\n    docker: {container: " + name +
                            "}\n    health: {http: \"http://127.0.0.1:" + std::to_string(port) +
                            "/health\"}\n"));
  ASSERT_TRUE(d.start()) << d.stderr_text();
  const auto ensured = d.cli({"ensure", "tts"});
  ASSERT_EQ(0, ensured.exit_code) << ensured.out << ensured.err;
  EXPECT_TRUE(inspect(sock, name)["State"]["Running"].get<bool>());
  ASSERT_EQ(0, d.cli({"stop", "tts"}).exit_code);
  const auto after = inspect(sock, name);
  ASSERT_TRUE(after.is_object()) << "a container gpuvisor did not create must be kept";
  EXPECT_FALSE(after["State"]["Running"].get<bool>());
  engine_api(sock, "DELETE", "/containers/" + name + "?force=1");
}

TEST(Docker, MissingContainerOrImageIsAClearErrorThatChangesNothing) {
  REQUIRE_ENGINE(sock);
  Daemon d(config(sock,
                  "  gone:\n    runtime: docker\n    docker: {container: no-such-container}\n"
                  "  noimage:\n    runtime: docker\n    docker: {image: \"no-such-image:1\", "
                  "gpus: none}\n"));
  ASSERT_TRUE(d.start()) << d.stderr_text();
  const auto gone = d.cli({"ensure", "gone"});
  EXPECT_NE(0, gone.exit_code);
  EXPECT_NE(std::string::npos,
            gone.err.find("container 'no-such-container' does not exist (service gone): create "
                          "it first (docker create --name no-such-container"))
      << gone.err;
  const auto noimage = d.cli({"ensure", "noimage"});
  EXPECT_NE(0, noimage.exit_code);
  EXPECT_NE(std::string::npos, noimage.err.find("image 'no-such-image:1' is not in the Docker "
                                                "engine (service noimage): docker pull"))
      << noimage.err;
  EXPECT_TRUE(inspect(sock, "gpuvisor-noimage").is_null());
}

TEST(Docker, EngineDownIsAClearErrorNotAHang) {
  const std::string dir = make_temp_dir("nodocker");
  Daemon d(config(dir + "/docker.sock", "  x:\n    runtime: docker\n    docker: {container: x}\n"));
  ASSERT_TRUE(d.start()) << d.stderr_text();
  const auto r = d.cli({"ensure", "x"});
  EXPECT_NE(0, r.exit_code);
  EXPECT_NE(std::string::npos,
            r.err.find("cannot reach the Docker engine at " + dir + "/docker.sock"))
      << r.err;
  EXPECT_NE(std::string::npos, r.err.find("is dockerd running?")) << r.err;
}

TEST(Docker, ACrashArrivesOnTheEventStreamAndTheRestartPolicyApplies) {
  REQUIRE_ENGINE(sock);
  const std::string name = unique("crashy");
  Daemon d(config(sock, owned_service(name, free_port(),
                                      "    restart: on-failure\n    restart_backoff: 10ms\n")));
  ASSERT_TRUE(d.start()) << d.stderr_text();
  ASSERT_EQ(0, d.cli({"ensure", name}).exit_code);
  const pid_t first = d.service(name)["pid"];
  // Killed behind gpuvisor's back, as the OOM killer or a `docker kill` would.
  ASSERT_EQ(204, engine_api(sock, "POST", "/containers/gpuvisor-" + name + "/kill").status);
  EXPECT_TRUE(d.wait_event([&](const nlohmann::json& e) {
    return e["type"] == "service.state_changed" && e["data"]["service"] == name &&
           e["data"]["to"] == "error" &&
           e["data"]["reason"].get<std::string>().find("exited with status 137") !=
               std::string::npos;
  })) << d.stderr_text();
  int readies = 0;  // the events are read from the start: the second ready is the restart
  EXPECT_TRUE(d.wait_event([&](const nlohmann::json& e) {
    return e["type"] == "service.state_changed" && e["data"]["service"] == name &&
           e["data"]["to"] == "ready" && ++readies == 2;
  })) << d.stderr_text();
  EXPECT_EQ(1, d.service(name)["restarts"]);
  const pid_t second = d.service(name)["pid"];
  EXPECT_NE(first, second);
  EXPECT_TRUE(pid_alive(second));
  ASSERT_EQ(0, d.cli({"stop", name}).exit_code);
}

TEST(Docker, ARestartedDaemonAdoptsItsRunningContainer) {
  REQUIRE_ENGINE(sock);
  const std::string name = unique("kept");
  const std::string dir = make_temp_dir("docker-adopt");
  const std::string yaml = config(sock, owned_service(name, free_port()));
  pid_t pid = 0;
  {
    Daemon first(yaml, dir);
    ASSERT_TRUE(first.start()) << first.stderr_text();
    ASSERT_EQ(0, first.cli({"ensure", name}).exit_code);
    pid = first.service(name)["pid"];
    first.kill9();
  }
  ASSERT_TRUE(pid_alive(pid));
  Daemon second(yaml, dir);
  ASSERT_TRUE(second.start()) << second.stderr_text();
  ASSERT_TRUE(second.wait_state(name, "ready")) << second.stderr_text();
  const auto svc = second.service(name);
  EXPECT_TRUE(svc["adopted"].get<bool>());
  EXPECT_EQ(pid, svc["pid"]);
  ASSERT_EQ(0, second.cli({"stop", name}).exit_code);
  EXPECT_FALSE(pid_alive(pid));
  // Still known as one gpuvisor created from the config: removed, not left behind.
  EXPECT_TRUE(inspect(sock, "gpuvisor-" + name).is_null());
}

// The new daemon follows the adopted container's log from the last line the previous one wrote:
// what it printed while no daemon ran arrives too, and nothing arrives twice.
TEST(Docker, AnAdoptedContainersLogGoesOnWhereThePreviousDaemonStopped) {
  REQUIRE_ENGINE(sock);
  const std::string name = unique("ticker");
  const std::string dir = make_temp_dir("docker-log");
  const std::string yaml = config(sock, ticking_service(name, free_port()));
  const std::string log = dir + "/state/logs/" + name + ".log";
  int at_kill = 0;
  {
    Daemon first(yaml, dir);
    ASSERT_TRUE(first.start()) << first.stderr_text();
    ASSERT_EQ(0, first.cli({"ensure", name}).exit_code);
    ASSERT_TRUE(eventually([&] { return ticks(log).size() >= 3; })) << first.stderr_text();
    first.kill9();
    at_kill = ticks(log).back();
  }
  Daemon second(yaml, dir);
  ASSERT_TRUE(second.start()) << second.stderr_text();
  ASSERT_TRUE(second.wait_state(name, "ready")) << second.stderr_text();
  EXPECT_TRUE(second.service(name)["adopted"].get<bool>());
  EXPECT_TRUE(eventually([&] {
    const auto t = ticks(log);
    return !t.empty() && t.back() >= at_kill + 10;
  })) << "the adopted container's output no longer reaches "
      << log;
  const auto t = ticks(log);
  for (size_t i = 0; i < t.size(); ++i) {
    ASSERT_EQ(static_cast<int>(i) + 1, t[i]) << "a tick lost or repeated around tick " << at_kill;
  }
  ASSERT_EQ(0, second.cli({"stop", name}).exit_code);
}

// While the engine is away (dockerd restarting), the container's end and the failed starts that
// follow are retried with backoff but do not spend the restart budget: it comes back once the
// engine does, however long that took.
TEST(Docker, AnEngineThatIsDownDoesNotSpendTheRestartBudget) {
  REQUIRE_ENGINE(shared_sock);
  const std::string engine = make_temp_dir("docker-down") + "/engine";
  const std::string script = GPUVISOR_DOCKER_ENGINE;
  ASSERT_EQ(0, std::system((script + " start " + engine).c_str()));
  ASSERT_FALSE(std::filesystem::exists(engine + "/unavailable"));
  const std::string sock = engine + "/docker.sock";
  const std::string name = unique("patient");
  {
    Daemon d(config(sock, owned_service(name, free_port(),
                                        "    restart: on-failure\n    restart_backoff: 100ms\n"
                                        "    restart_backoff_max: 200ms\n    restart_limit: 2\n")));
    ASSERT_TRUE(d.start()) << d.stderr_text();
    ASSERT_EQ(0, d.cli({"ensure", name}).exit_code);
    ASSERT_EQ(0, std::system((script + " down " + engine).c_str()));
    // More failures than restart_limit allows, each retried.
    int unreachable = 0;
    EXPECT_TRUE(d.wait_event(
        [&](const nlohmann::json& e) {
          return e["type"] == "service.state_changed" && e["data"]["service"] == name &&
                 e["data"]["to"] == "error" &&
                 e["data"]["reason"].get<std::string>().find("not counted against restart_limit") !=
                     std::string::npos &&
                 ++unreachable == 4;
        },
        60s))
        << d.stderr_text();
    ASSERT_EQ(0, std::system((script + " up " + engine).c_str()));
    int readies = 0;
    EXPECT_TRUE(d.wait_event(
        [&](const nlohmann::json& e) {
          return e["type"] == "service.state_changed" && e["data"]["service"] == name &&
                 e["data"]["to"] == "ready" && ++readies == 2;
        },
        60s))
        << d.stderr_text();
    const auto svc = d.service(name);
    EXPECT_EQ("ready", svc["state"]);
    // The container's own end as the engine stopped may count once (if its die event came
    // before the engine went); the unreachable engine never does.
    EXPECT_LE(svc["restarts"].get<int>(), 1) << svc.dump();
    ASSERT_EQ(0, d.cli({"stop", name}).exit_code);
  }
  std::system((script + " stop " + engine).c_str());
}

TEST(Docker, AnEngineRestartUnderARunningContainerIsNoticedAndRecovered) {
  REQUIRE_ENGINE(shared_sock);
  // An engine of its own: restarting the shared one would pull it from under other tests.
  const std::string engine = make_temp_dir("docker-restart") + "/engine";
  const std::string script = GPUVISOR_DOCKER_ENGINE;
  ASSERT_EQ(0, std::system((script + " start " + engine).c_str()));
  ASSERT_FALSE(std::filesystem::exists(engine + "/unavailable"));
  const std::string sock = engine + "/docker.sock";
  const std::string name = unique("survivor");
  {
    // Restarts keep trying, with backoff, for longer than the engine is away (about 3 s).
    Daemon d(config(sock, owned_service(name, free_port(),
                                        "    restart: on-failure\n    restart_backoff: 250ms\n"
                                        "    restart_backoff_max: 1s\n    restart_limit: 30\n")));
    ASSERT_TRUE(d.start()) << d.stderr_text();
    ASSERT_EQ(0, d.cli({"ensure", name}).exit_code);
    const pid_t first = d.service(name)["pid"];
    // dockerd stops its containers when it stops; the events stream drops with it, so the
    // exit is found by inspecting after the reconnect.
    ASSERT_EQ(0, std::system((script + " restart " + engine).c_str()));
    EXPECT_TRUE(d.wait_event(
        [&](const nlohmann::json& e) {
          return e["type"] == "service.state_changed" && e["data"]["service"] == name &&
                 e["data"]["to"] == "error";
        },
        60s))
        << d.stderr_text();
    int readies = 0;
    EXPECT_TRUE(d.wait_event(
        [&](const nlohmann::json& e) {
          return e["type"] == "service.state_changed" && e["data"]["service"] == name &&
                 e["data"]["to"] == "ready" && ++readies == 2;
        },
        60s))
        << d.stderr_text();
    EXPECT_FALSE(pid_alive(first));
    EXPECT_TRUE(pid_alive(d.service(name)["pid"]));
    ASSERT_EQ(0, d.cli({"stop", name}).exit_code);
  }
  std::system((script + " stop " + engine).c_str());
}

TEST(Docker, VramHeldInsideTheContainerIsTheServices) {
  REQUIRE_ENGINE(sock);
  const std::string dir = make_temp_dir("docker-vram");
  FakeGpu gpu(dir, R"({"devices": [{"name": "Sim 24G", "total_mb": 24576}]})");
  const std::string name = unique("vram");
  Daemon d(config(sock, owned_service(name, free_port())), dir);
  ASSERT_TRUE(d.start()) << d.stderr_text();
  ASSERT_EQ(0, d.cli({"ensure", name}).exit_code);
  // The container's server holds VRAM, as NVML would report it: by its host PID.
  const pid_t pid = inspect(sock, "gpuvisor-" + name)["State"]["Pid"];
  std::ofstream(dir + "/gpu/holds/c.json") << R"({"pid": )" << pid << R"(, "gpu": 0, "mb": 3000})";
  const auto procs = nlohmann::json::parse(d.call("GET", "/api/v1/processes")->body);
  ASSERT_EQ(1u, procs["processes"].size()) << procs.dump();
  EXPECT_EQ(name, procs["processes"][0].value("owner", "")) << procs.dump();
  EXPECT_FALSE(procs["processes"][0]["external"].get<bool>());
  ASSERT_EQ(0, d.cli({"stop", name}).exit_code);
}

TEST(Docker, AContainerIsEvictedToMakeRoomAndRemoved) {
  REQUIRE_ENGINE(sock);
  const std::string dir = make_temp_dir("docker-evict");
  FakeGpu gpu(dir, R"({"devices": [{"name": "Sim 24G", "total_mb": 24576}]})");
  const std::string a = unique("img"), b = unique("llm");
  Daemon d(config(sock, owned_service(a, free_port(), "    vram_mb: 16000\n    priority: 1\n") +
                            owned_service(b, free_port(), "    vram_mb: 16000\n    priority: 5\n")),
           dir);
  ASSERT_TRUE(d.start()) << d.stderr_text();
  ASSERT_EQ(0, d.cli({"ensure", a}).exit_code);
  const pid_t first = d.service(a)["pid"];
  EXPECT_EQ(0, d.service(a)["gpu"]);
  // The two do not fit on the 24 GB card together: the lower priority one goes.
  const auto ensured = d.cli({"ensure", b});
  ASSERT_EQ(0, ensured.exit_code) << ensured.err;
  EXPECT_EQ("stopped", d.service(a)["state"]);
  EXPECT_NE(std::string::npos,
            d.service(a)["reason"].get<std::string>().find("evicted to make room for " + b))
      << d.service(a).dump();
  EXPECT_FALSE(pid_alive(first));
  EXPECT_TRUE(inspect(sock, "gpuvisor-" + a).is_null());
  EXPECT_TRUE(inspect(sock, "gpuvisor-" + b)["State"]["Running"].get<bool>());
  ASSERT_EQ(0, d.cli({"stop", b}).exit_code);
}

// A container with sleep and wake hooks is put to sleep, not removed: the container runs on, and
// the next ensure wakes it. The hooks (run on the host) drop and restore what it holds, as
// vLLM's /sleep and /wake_up would.
TEST(Docker, AContainerWithASleepHookIsPutToSleepNotRemoved) {
  REQUIRE_ENGINE(sock);
  const std::string dir = make_temp_dir("docker-sleep");
  FakeGpu gpu(dir, R"({"devices": [{"name": "Sim 24G", "total_mb": 24576}]})");
  const std::string a = unique("sleepy"), b = unique("big");
  const std::string hold = dir + "/gpu/holds/c.json";
  Daemon d(config(sock, owned_service(a, free_port(),
                                      "    vram_mb: 16000\n    priority: 1\n"
                                      "    sleep: {exec: [/bin/rm, -f, \"" +
                                          hold + "\"]}\n") +
                            owned_service(b, free_port(), "    vram_mb: 16000\n    priority: 5\n")),
           dir);
  ASSERT_TRUE(d.start()) << d.stderr_text();
  ASSERT_EQ(0, d.cli({"ensure", a}).exit_code);
  const pid_t pid = inspect(sock, "gpuvisor-" + a)["State"]["Pid"];
  std::ofstream(hold) << R"({"pid": )" << pid << R"(, "gpu": 0, "mb": 16000})";

  const auto ensured = d.cli({"ensure", b});
  ASSERT_EQ(0, ensured.exit_code) << ensured.err;
  EXPECT_EQ("sleeping", d.service(a)["state"]) << d.service(a).dump();
  EXPECT_TRUE(inspect(sock, "gpuvisor-" + a)["State"]["Running"].get<bool>());
  EXPECT_EQ(pid, inspect(sock, "gpuvisor-" + a)["State"]["Pid"]);

  ASSERT_EQ(0, d.cli({"stop", b}).exit_code);
  const auto woken = d.cli({"ensure", a});
  ASSERT_EQ(0, woken.exit_code) << woken.err;
  EXPECT_EQ("ready", d.service(a)["state"]);
  EXPECT_EQ(pid, inspect(sock, "gpuvisor-" + a)["State"]["Pid"]);  // woken, not recreated
  ASSERT_EQ(0, d.cli({"stop", a}).exit_code);
  EXPECT_TRUE(inspect(sock, "gpuvisor-" + a).is_null());
}

}  // namespace
}  // namespace gpuvisor::itest
