// Fault injection (issue 7): the real daemon, its real test service and worker, and one fault
// per test. Each checks that nothing acknowledged is lost and that no process is left behind.
// Faults covered elsewhere (setsid grandchild, SIGTERM ignored on stop, exit before ready,
// crash loop with a limit, PID reuse, Docker engine restart) are listed in
// docs/reliability.md with their tests.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <signal.h>
#include <sqlite3.h>
#include <sys/mount.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <condition_variable>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <set>
#include <thread>

#include "runtime/pidfd.h"
#include "runtime/proc.h"
#include "testkit/daemon.h"
#include "testkit/fake_gpu.h"

namespace gpuvisor::itest {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

// ---- helpers ------------------------------------------------------------------------------

std::string read_text(const std::string& path) {
  std::ifstream in(path);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

// One worker plugin, work_w, run by the project's test worker. The --tag argument is ignored by
// the worker; it makes the worker's processes findable by their command line.
std::string worker_plugin_yaml(const std::string& tag, int concurrency = 1) {
  return "plugins:\n  manifests:\n"
         "    - name: w\n      category: work\n      mode: worker\n      concurrency: " +
         std::to_string(concurrency) +
         "\n      worker: {command: [" GPUVISOR_BIN_DIR "/gpuvisor-testworker, --tag, " + tag +
         "]}\n      config_schema:\n        type: object\n        properties:\n"
         "          model: {type: string}\n";
}

// The live (not zombie) processes whose argv holds exactly `arg`: a path unique to one test's
// service or worker, so a count never sees another test's processes.
std::vector<pid_t> processes_with_arg(const std::string& arg) {
  std::vector<pid_t> out;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator("/proc", ec)) {
    const std::string name = entry.path().filename().string();
    if (name.find_first_not_of("0123456789") != std::string::npos) continue;
    const std::string cmdline = read_text(entry.path().string() + "/cmdline");
    for (size_t at = 0; at < cmdline.size();) {
      const size_t end = cmdline.find('\0', at);
      if (cmdline.substr(at, end - at) == arg) {
        const pid_t pid = std::stoi(name);
        if (pid_alive(pid)) out.push_back(pid);
        break;
      }
      if (end == std::string::npos) break;
      at = end + 1;
    }
  }
  return out;
}

// Job id -> how many times the test worker ran it ({"record": path} in its input).
std::map<int64_t, int> runs_in(const std::string& path) {
  std::map<int64_t, int> runs;
  std::ifstream in(path);
  for (int64_t id = 0; in >> id;) ++runs[id];
  return runs;
}

bool is_final(const std::string& state) {
  return state == "completed" || state == "failed" || state == "cancelled";
}

bool state_event(const json& e, const std::string& service, const std::string& to) {
  return e["type"] == "service.state_changed" && e["data"]["service"] == service &&
         e["data"]["to"] == to;
}

// Waits for pred on the event stream (from the run's first event), checking on the way that
// event ids only ever grow within this daemon run. Returns every event read, the match last.
std::vector<json> events_until(const Daemon& d, const std::function<bool(const json&)>& pred,
                               std::chrono::milliseconds limit = 20s) {
  std::vector<json> seen;
  uint64_t last = 0;
  const bool found = d.wait_event(
      [&](const json& e) {
        EXPECT_GT(e["id"].get<uint64_t>(), last) << "event ids went backwards: " << e.dump();
        last = e["id"].get<uint64_t>();
        seen.push_back(e);
        return pred(e);
      },
      limit);
  EXPECT_TRUE(found) << "no such event; the daemon said:\n" << d.stderr_text();
  return seen;
}

// The id of the first event in events that pred accepts; 0 if none.
uint64_t first_id(const std::vector<json>& events, const std::function<bool(const json&)>& pred) {
  for (const auto& e : events) {
    if (pred(e)) return e["id"];
  }
  return 0;
}

// A tmpfs of `size` mounted on dir for one test, unmounted when it ends.
class TmpfsMount {
 public:
  TmpfsMount(const std::string& dir, const std::string& size) : dir_(dir) {
    fs::create_directories(dir);
    const std::string options = "size=" + size + ",mode=0700";
    if (mount("tmpfs", dir.c_str(), "tmpfs", 0, options.c_str()) == 0) {
      mounted_ = true;
    } else {
      error_ = std::strerror(errno);
    }
  }
  ~TmpfsMount() {
    if (mounted_) umount2(dir_.c_str(), MNT_DETACH);
  }
  bool mounted() const { return mounted_; }
  const std::string& error() const { return error_; }

 private:
  std::string dir_;
  bool mounted_ = false;
  std::string error_;
};

// Writes to path until the file system says ENOSPC; returns that errno (or another one).
int fill_until_full(const std::string& path, size_t chunk) {
  const int fd = open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
  if (fd < 0) return errno;
  const std::string block(chunk, 'x');
  int err = 0;
  while (err == 0) {
    if (write(fd, block.data(), block.size()) < 0) err = errno;
  }
  close(fd);
  return err;
}

// ---- the faults ---------------------------------------------------------------------------

// Guarantee: a health endpoint that accepts and never answers times the probe out, fails each
// start after startup_timeout, restarts it per policy up to the limit, and every instance is
// gone; a stop while such a start hangs leaves no process either.
TEST(Fault, AHangingHealthCheckFailsEachStartPerPolicyAndLeavesNoProcess) {
  const int port = free_port();
  Daemon d("services:\n" + service_yaml("hung", port, ", --hang-health, --report, $DIR/report",
                                        "      timeout: 100ms\n"
                                        "    startup_timeout: 400ms\n"
                                        "    restart: on-failure\n"
                                        "    restart_backoff: 20ms\n"
                                        "    restart_limit: 2\n"));
  ASSERT_TRUE(d.start()) << d.stderr_text();
  const auto ensured = d.cli({"ensure", "hung"});
  EXPECT_EQ(1, ensured.exit_code);
  EXPECT_NE(std::string::npos, ensured.err.find("not healthy within startup_timeout 400ms "
                                                "(last health check: timed out after"))
      << ensured.err;
  // Three starts (the first and two restarts), then it stays in error; each one's process is
  // stopped before the next starts.
  int gone = 0;
  events_until(d, [&](const json& e) {
    if (e["type"] == "service.process_gone" && e["data"]["after"] == "failure") ++gone;
    return gone == 3;
  });
  const auto svc = d.service("hung");
  EXPECT_EQ("error", svc["state"]);
  EXPECT_NE(std::string::npos, svc["reason"].get<std::string>().find("gave up after 2 restarts"))
      << svc.dump();
  std::set<pid_t> pids;
  std::ifstream report(d.dir() + "/report");
  for (std::string line; std::getline(report, line);)
    pids.insert(json::parse(line)["pid"].get<pid_t>());
  EXPECT_EQ(3u, pids.size());
  for (const pid_t pid : pids) EXPECT_FALSE(pid_alive(pid)) << pid;

  // Once more by hand, and stopped while its health check hangs.
  ASSERT_EQ(504u, d.call("POST", "/api/v1/services/hung/ensure?timeout=1ms")->status);
  pid_t fourth = 0;
  events_until(d, [&](const json& e) {
    const pid_t pid = e["data"].value("pid", 0);
    if (!state_event(e, "hung", "starting") || pid == 0 || pids.count(pid) > 0) return false;
    fourth = pid;
    return true;
  });
  const auto stopped = body(d.call("POST", "/api/v1/services/hung/stop"));
  EXPECT_EQ("stopped", stopped["state"]) << stopped.dump();
  EXPECT_FALSE(pid_alive(fourth));
  EXPECT_TRUE(processes_with_arg(d.dir() + "/report").empty());
}

// Guarantee: after a healthy run of at least restart_reset_after, a crash starts the restart
// count over (so a service that crashes once a day is never given up); a crash sooner counts.
TEST(Fault, ALongHealthyRunResetsTheRestartCountAndAShortOneDoesNot) {
  const std::string policy =
      "    restart: on-failure\n    restart_backoff: 20ms\n    restart_limit: 1\n"
      "    restart_reset_after: 200ms\n";
  // steady is healthy for about a second before each crash, brief for under 100 ms.
  Daemon d("services:\n" +
           service_yaml("steady", free_port(), ", --crash-after, \"1000\"", policy) +
           service_yaml("brief", free_port(), ", --crash-after, \"100\"", policy));
  ASSERT_TRUE(d.start()) << d.stderr_text();
  ASSERT_EQ(0, d.cli({"ensure", "steady"}).exit_code);
  d.cli({"ensure", "brief"});  // may see its first crash already; the restarts are the point
  int steady_restarts = 0;
  bool steady_gave_up = false;
  bool brief_gave_up = false;
  events_until(d, [&](const json& e) {
    if (!state_event(e, e["data"].value("service", ""), "error")) return false;
    const std::string reason = e["data"]["reason"];
    const bool gave_up = reason.find("gave up after 1 restarts") != std::string::npos;
    if (e["data"]["service"] == "steady") {
      steady_gave_up |= gave_up;
      if (reason.find("(restart 1 of 1)") != std::string::npos) ++steady_restarts;
    } else {
      brief_gave_up |= gave_up;
    }
    return steady_restarts == 2 && brief_gave_up;
  });
  // Without the reset, steady's second crash would have been its last.
  EXPECT_EQ(2, steady_restarts);
  EXPECT_FALSE(steady_gave_up);
  EXPECT_TRUE(brief_gave_up);
  EXPECT_EQ("error", d.service("brief")["state"]);
  EXPECT_EQ(0, d.cli({"stop", "steady"}).exit_code);
}

// Guarantee: a daemon SIGKILLed 20 times in a row, during a start, during an eviction and
// during a job, never runs a service twice, never loses or duplicates an acknowledged job, and
// its counters (job ids, job attempts, event ids within a run) never go backwards.
TEST(Fault, TwentyDaemonKillsDuringStartsEvictionsAndJobsLoseAndRepeatNothing) {
  const std::string dir = make_temp_dir("kill-loop");
  FakeGpu gpu(dir, R"({"devices": [{"total_mb": 24576}]})");
  // a and b take 16 of the GPU's 24 GB each: one evicts the other. An evicted one takes 200 ms
  // to exit, so a kill during its eviction finds it still stopping.
  std::string yaml = "services:\n";
  for (const std::string name : {"a", "b"}) {
    const std::string p = std::to_string(free_port());
    yaml += "  " + name + ":\n    command: [$TESTSVC, --port, \"" + p +
            "\", --vram-mb, \"16000\", --ready-after, \"50\", --term-delay, \"200\", --report, "
            "$DIR/report-" +
            name + "]\n    vram_mb: 16000\n    health:\n      tcp: 127.0.0.1:" + p + "\n";
  }
  yaml += worker_plugin_yaml("$DIR/worker", 2);
  Daemon d(yaml, dir);
  const std::string runs_file = dir + "/runs";
  const auto service_processes = [&](const std::string& name) {
    return processes_with_arg(dir + "/report-" + name);
  };
  std::map<int64_t, int> attempts;  // every acknowledged job, with the most attempts seen
  const auto submit = [&](int work_ms) {
    const json input = {{"record", runs_file}, {"work_ms", work_ms}};
    const auto job = body(d.call("POST", "/api/v1/plugins/work_w/jobs", input.dump()));
    EXPECT_TRUE(job.contains("id")) << job.dump();
    const int64_t id = job.value("id", int64_t{0});
    if (!attempts.empty()) {
      EXPECT_GT(id, attempts.rbegin()->first) << "a job id was reused";
    }
    attempts[id] = 0;
    return id;
  };
  // What every new daemon must show: each service at most once, and a live one adopted; every
  // acknowledged job kept, its attempts never fewer than before.
  const auto check_after_restart = [&](int round) {
    for (const std::string name : {"a", "b"}) {
      const auto procs = service_processes(name);
      const auto view = d.service(name);
      ASSERT_LE(procs.size(), 1u) << name << " runs twice in round " << round;
      // A process that outlived the kill was there before this daemon: it must be adopted,
      // unless it exited since (an evicted one finishing its SIGTERM).
      if (procs.size() == 1 && view["pid"] != procs[0]) {
        EXPECT_FALSE(pid_alive(procs[0]))
            << name << " not adopted in round " << round << ": " << view.dump();
      }
    }
    for (auto& [id, seen] : attempts) {
      const auto job = body(d.call("GET", "/api/v1/jobs/" + std::to_string(id)));
      ASSERT_EQ(id, job.value("id", int64_t{0})) << "job " << id << " lost in round " << round;
      EXPECT_GE(job["attempts"].get<int>(), seen) << "job " << id << " in round " << round;
      seen = job["attempts"];
    }
  };

  for (int round = 0; round < 20; ++round) {
    ASSERT_TRUE(d.start()) << d.stderr_text();
    check_after_restart(round);
    if (HasFatalFailure()) return;
    submit(0);
    submit(0);
    const std::string one = (round / 3) % 2 == 0 ? "a" : "b";
    const std::string other = one == "a" ? "b" : "a";
    switch (round % 3) {
      case 0:  // during a start: the instance is spawned and recorded, not yet ready
        for (const std::string name : {"a", "b"}) {
          ASSERT_EQ(200u, d.call("POST", "/api/v1/services/" + name + "/stop")->status);
        }
        (void)d.call("POST", "/api/v1/services/" + one + "/ensure?timeout=1ms");
        events_until(d, [&](const json& e) {
          return state_event(e, one, "starting") && e["data"].value("pid", 0) > 0;
        });
        break;
      case 1:  // during an eviction: the victim is stopping, the new one waits for its memory
        ASSERT_EQ(200u, d.call("POST", "/api/v1/services/" + one + "/ensure")->status)
            << d.stderr_text();
        (void)d.call("POST", "/api/v1/services/" + other + "/ensure?timeout=1ms");
        events_until(d, [&](const json& e) {
          return state_event(e, one, "stopping") &&
                 e["data"]["reason"] == "evicted to make room for " + other;
        });
        break;
      case 2: {  // during a job: one that takes 300 ms is running
        const int64_t id = submit(300);
        events_until(
            d, [&](const json& e) { return e["type"] == "job.started" && e["data"]["id"] == id; });
        break;
      }
    }
    d.kill9();
  }

  ASSERT_TRUE(d.start()) << d.stderr_text();
  check_after_restart(20);
  // Every acknowledged job ends, and ran no more often than its attempts say: a job the
  // daemon was killed under runs once more, one killed under twice fails saying so.
  for (const auto& [id, seen] : attempts) {
    if (is_final(body(d.call("GET", "/api/v1/jobs/" + std::to_string(id)))["state"])) continue;
    events_until(d, [id = id](const json& e) {
      const std::string type = e["type"];
      return (type == "job.completed" || type == "job.failed") && e["data"]["id"] == id;
    });
  }
  const auto runs = runs_in(runs_file);
  const auto all = body(d.call("GET", "/api/v1/jobs?limit=10000"));
  std::map<int64_t, int> listed;
  for (const auto& j : all["jobs"]) ++listed[j["id"].get<int64_t>()];
  for (const auto& [id, seen] : attempts) {
    const auto job = body(d.call("GET", "/api/v1/jobs/" + std::to_string(id)));
    const std::string state = job["state"];
    const int tries = job["attempts"];
    const int ran = runs.count(id) > 0 ? runs.at(id) : 0;
    EXPECT_EQ(1, listed[id]) << "job " << id << " listed " << listed[id] << " times";
    EXPECT_GE(tries, seen) << job.dump();
    EXPECT_LE(tries, 2) << job.dump();
    EXPECT_LE(ran, tries) << "job " << id << " ran more often than its attempts: " << job.dump();
    if (state == "completed") {
      EXPECT_GE(ran, 1) << job.dump();
    } else {
      EXPECT_EQ("failed", state) << job.dump();
      EXPECT_NE(std::string::npos,
                job.value("error", "").find("interrupted by a daemon restart, 2 times"))
          << job.dump();
    }
  }
  EXPECT_EQ(attempts.size(), listed.size());

  // The services still run once each, and a daemon stop leaves nothing.
  ASSERT_EQ(200u, d.call("POST", "/api/v1/services/a/ensure")->status) << d.stderr_text();
  EXPECT_EQ(std::vector<pid_t>{d.service("a")["pid"].get<pid_t>()}, service_processes("a"));
  ASSERT_EQ(200u, d.call("POST", "/api/v1/services/b/ensure")->status) << d.stderr_text();
  EXPECT_EQ(std::vector<pid_t>{d.service("b")["pid"].get<pid_t>()}, service_processes("b"));
  EXPECT_TRUE(service_processes("a").empty());
  EXPECT_EQ(0, d.terminate());
  EXPECT_TRUE(service_processes("a").empty());
  EXPECT_TRUE(service_processes("b").empty());
  EXPECT_TRUE(processes_with_arg(dir + "/worker").empty());
}

// Guarantee: corrupt or deleted state files (a truncated record, a record naming another
// service and a live stranger's PID, garbage vram.json and plugin config, a deleted logs/)
// are each named in a warning; the daemon starts clean and never signals the stranger.
TEST(Fault, CorruptStateFilesAreNamedSetAsideAndNeverSignalAStranger) {
  const std::string dir = make_temp_dir("corrupt");
  const int port = free_port();
  Daemon d("services:\n" + service_yaml("web", port, ", --report, $DIR/report") +
               service_yaml("api", free_port(), "") + worker_plugin_yaml("$DIR/worker"),
           dir);
  // Start once for a real state directory, then break it while the daemon is down.
  ASSERT_TRUE(d.start()) << d.stderr_text();
  EXPECT_EQ(0, d.terminate());
  const std::string state = dir + "/state";
  const pid_t stranger = start_testsvc({"--port", "0"}, "listening on");
  const auto st = read_proc_stat(stranger);
  ASSERT_TRUE(st);
  std::ofstream(state + "/run/web.json") << R"({"service": "web", "pid": )";
  // A record that would adopt the stranger as web, were its name not checked.
  std::ofstream(state + "/run/api.json") << json{
      {"service", "web"},
      {"pid", stranger},
      {"start_time", st->start_time},
      {"cgroup", ""}}.dump();
  std::ofstream(state + "/vram.json") << "{\"web\": 12";
  fs::create_directories(state + "/plugins");
  std::ofstream(state + "/plugins/work_w.json") << "{\"model\": ";
  fs::remove_all(state + "/logs");

  ASSERT_TRUE(d.start()) << d.stderr_text();
  const std::string log = d.stderr_text();
  EXPECT_NE(std::string::npos,
            log.find(state + "/run/web.json: not valid JSON (moved to .corrupt)"))
      << log;
  EXPECT_NE(std::string::npos,
            log.find(state + "/run/api.json: names service 'web' (moved to .corrupt)"))
      << log;
  EXPECT_NE(std::string::npos, log.find(state + "/vram.json: not valid JSON")) << log;
  EXPECT_NE(std::string::npos, log.find(state + "/plugins/work_w.json is not valid JSON")) << log;
  EXPECT_TRUE(fs::exists(state + "/run/web.json.corrupt"));
  EXPECT_EQ("stopped", d.service("web")["state"]);
  EXPECT_EQ("stopped", d.service("api")["state"]);

  // A clean start: web starts its own process, the config can be set again.
  ASSERT_EQ(0, d.cli({"ensure", "web"}).exit_code) << d.stderr_text();
  EXPECT_NE(stranger, d.service("web")["pid"].get<pid_t>());
  EXPECT_EQ(1u, count_lines(dir + "/report"));
  EXPECT_TRUE(fs::exists(state + "/logs/web.log"));
  const auto broken = d.call("GET", "/api/v1/plugins/work_w/config");
  EXPECT_EQ(500u, broken->status);
  EXPECT_NE(std::string::npos, broken->body.find("work_w.json is not valid JSON")) << broken->body;
  EXPECT_EQ(200u, d.call("PUT", "/api/v1/plugins/work_w/config", R"({"model": "m"})")->status);
  EXPECT_EQ(json({{"model", "m"}}), body(d.call("GET", "/api/v1/plugins/work_w/config"))["config"]);
  EXPECT_EQ(0, d.terminate());
  EXPECT_TRUE(pid_alive(stranger));
  kill(stranger, SIGKILL);
  waitpid(stranger, nullptr, 0);
}

// Guarantee: a service whose record is lost (the daemon killed between the start and the save,
// or the file corrupt) is not left running beside the copy the next start makes: its cgroup,
// which only a daemon on this state directory creates, proves it ours, and it is killed.
TEST(Fault, AServiceWhoseRecordIsLostIsKilledNotLeftBesideASecondCopy) {
  const std::string dir = make_temp_dir("lost-record");
  Daemon d("services:\n" + service_yaml("web", free_port(), ", --report, $DIR/report"), dir);
  ASSERT_TRUE(d.start()) << d.stderr_text();
  if (d.stderr_text().find("cgroups off") != std::string::npos) {
    GTEST_SKIP() << "no cgroups here: without its record nothing proves the process ours";
  }
  ASSERT_EQ(0, d.cli({"ensure", "web"}).exit_code) << d.stderr_text();
  const pid_t lost = d.service("web")["pid"];
  const Pidfd watch = Pidfd::open(lost);
  ASSERT_TRUE(watch.valid());
  d.kill9();
  std::ofstream(dir + "/state/run/web.json", std::ios::trunc) << "{";

  ASSERT_TRUE(d.start()) << d.stderr_text();
  EXPECT_NE(std::string::npos,
            d.stderr_text().find("left running by an earlier daemon with no record of it; "
                                 "killed pid " +
                                 std::to_string(lost)))
      << d.stderr_text();
  pollfd exited{watch.fd(), POLLIN, 0};
  ASSERT_EQ(1, poll(&exited, 1, 10'000)) << "pid " << lost << " still runs";
  EXPECT_EQ("stopped", d.service("web")["state"]);
  ASSERT_EQ(0, d.cli({"ensure", "web"}).exit_code) << d.stderr_text();
  EXPECT_NE(lost, d.service("web")["pid"].get<pid_t>());
  EXPECT_EQ(1u, processes_with_arg(dir + "/report").size());
  EXPECT_EQ(0, d.terminate());
  EXPECT_TRUE(processes_with_arg(dir + "/report").empty());
}

// Guarantee: a SIGTERM sent the moment the daemon says it listens is handled (a clean exit, 0),
// never the default action that would leave its services unstopped.
TEST(Fault, ASigtermAsSoonAsTheDaemonListensIsAHandledShutdown) {
  Daemon d("services: {}\n");
  for (int i = 0; i < 20; ++i) {
    ASSERT_TRUE(d.start()) << d.stderr_text();
    ASSERT_EQ(0, d.terminate()) << "start " << i << ": killed by the signal, not shut down";
  }
}

// Guarantee: a jobs.db that is not a database is refused by name (exit 1, no crash), and the
// file is left as it was for a person to look at.
TEST(Fault, AGarbageJobDatabaseIsRefusedByNameAndLeftAsItWas) {
  const std::string dir = make_temp_dir("jobs-garbage");
  fs::create_directories(dir + "/state");
  std::string garbage;
  for (int i = 0; i < 200; ++i) garbage += "this is not an SQLite database\n";
  std::ofstream(dir + "/state/jobs.db") << garbage;
  Daemon d("services: {}\n" + worker_plugin_yaml("$DIR/worker"), dir);
  EXPECT_FALSE(d.start());
  EXPECT_EQ(1, d.wait_exit());
  const std::string log = d.stderr_text();
  EXPECT_NE(std::string::npos, log.find(dir + "/state/jobs.db")) << log;
  EXPECT_NE(std::string::npos, log.find("file is not a database")) << log;
  EXPECT_EQ(garbage, read_text(dir + "/state/jobs.db"));
}

// Guarantee: an eviction whose victim ignores SIGTERM SIGKILLs it after its stop_grace, and the
// new service is started only after the victim is gone and NVML shows its memory free.
TEST(Fault, AVictimIgnoringSigtermIsKilledAfterItsGraceBeforeTheNewServiceStarts) {
  const std::string dir = make_temp_dir("evict-stubborn");
  FakeGpu gpu(dir, R"({"devices": [{"total_mb": 24576}]})");
  std::string yaml = "services:\n";
  for (const std::string name : {"stubborn", "next"}) {
    const std::string p = std::to_string(free_port());
    yaml += "  " + name + ":\n    command: [$TESTSVC, --port, \"" + p + "\", --vram-mb, \"16000\"" +
            (name == "stubborn" ? ", --ignore-sigterm" : "") +
            "]\n    vram_mb: 16000\n    stop_grace: 300ms\n    health:\n      tcp: 127.0.0.1:" + p +
            "\n";
  }
  Daemon d(yaml, dir);
  ASSERT_TRUE(d.start()) << d.stderr_text();
  ASSERT_EQ(0, d.cli({"ensure", "stubborn"}).exit_code);
  const pid_t victim = d.service("stubborn")["pid"];
  ASSERT_EQ(0, d.cli({"ensure", "next"}).exit_code) << d.stderr_text();
  EXPECT_FALSE(pid_alive(victim));
  const auto stubborn = d.service("stubborn");
  EXPECT_EQ("stopped", stubborn["state"]);
  EXPECT_EQ(
      "evicted to make room for next (killed with SIGKILL (did not exit within stop_grace 300ms))",
      stubborn["reason"]);
  // The order, from the daemon's own events: victim gone, then the new process spawned.
  const auto events =
      events_until(d, [](const json& e) { return state_event(e, "next", "ready"); });
  const uint64_t stopping =
      first_id(events, [](const json& e) { return state_event(e, "stubborn", "stopping"); });
  const uint64_t gone = first_id(events, [&](const json& e) {
    return e["type"] == "service.process_gone" && e["data"]["pid"] == victim;
  });
  const uint64_t spawned = first_id(events, [](const json& e) {
    return state_event(e, "next", "starting") && e["data"].value("pid", 0) > 0;
  });
  ASSERT_NE(0u, stopping);
  ASSERT_NE(0u, gone);
  ASSERT_NE(0u, spawned);
  EXPECT_LT(stopping, gone);
  EXPECT_LT(gone, spawned) << "the new service started before its victim was gone";
  // And NVML agrees: only the new one holds memory.
  const auto procs = body(d.call("GET", "/api/v1/processes"));
  ASSERT_EQ(1u, procs["processes"].size()) << procs.dump();
  EXPECT_EQ("next", procs["processes"][0]["owner"]);
}

// Guarantee: a stop requested while a crashed service waits out its restart backoff keeps it
// stopped: the backoff timer starts nothing.
TEST(Fault, AStopDuringRestartBackoffKeepsTheServiceStopped) {
  const int flaky_port = free_port();
  const int witness_port = free_port();
  const std::string policy = "    restart: on-failure\n    restart_backoff: 400ms\n";
  Daemon d("services:\n" +
           service_yaml("flaky", flaky_port, ", --report, $DIR/flaky-report", policy) +
           service_yaml("witness", witness_port, "", policy));
  ASSERT_TRUE(d.start()) << d.stderr_text();
  ASSERT_EQ(0, d.cli({"ensure", "flaky"}).exit_code);
  ASSERT_EQ(0, d.cli({"ensure", "witness"}).exit_code);
  const auto crash = [](int port) {
    auto client = HttpClient::create("http://127.0.0.1:" + std::to_string(port), "");
    ASSERT_TRUE(client.ok());
    (void)client->request("GET", "/crash", 5s, "");
  };
  crash(flaky_port);
  // The crashed process is cleaned up and the backoff timer armed; now the stop.
  events_until(d, [](const json& e) {
    return e["type"] == "service.process_gone" && e["data"]["service"] == "flaky";
  });
  EXPECT_NE(std::string::npos,
            d.service("flaky")["reason"].get<std::string>().find("restarting in 400ms"));
  const auto stopped = body(d.call("POST", "/api/v1/services/flaky/stop"));
  EXPECT_EQ("stopped", stopped["state"]) << stopped.dump();
  // The witness has the same backoff, armed later: once it restarts, flaky's timer has fired.
  crash(witness_port);
  const auto events = events_until(d, [](const json& e) {
    return state_event(e, "witness", "starting") &&
           e["data"]["reason"].get<std::string>().find("after failure") != std::string::npos;
  });
  int flaky_starts = 0;
  for (const auto& e : events) flaky_starts += state_event(e, "flaky", "starting") ? 1 : 0;
  EXPECT_EQ(1, flaky_starts) << "flaky was restarted after its stop";
  EXPECT_EQ("stopped", d.service("flaky")["state"]);
  EXPECT_EQ(1u, count_lines(d.dir() + "/flaky-report"));
  EXPECT_TRUE(processes_with_arg(d.dir() + "/flaky-report").empty());
}

// Guarantee: a disk that fills up while a plugin config is saved (a real ENOSPC, on a small
// tmpfs) leaves the old config intact on disk and in the API, which answers a clear error;
// once there is room again the save works.
TEST(Fault, ADiskFullWhileSavingAPluginConfigKeepsTheOldOneAndSaysWhy) {
  const std::string dir = make_temp_dir("disk-full");
  TmpfsMount tmpfs(dir + "/state", "1m");
  if (!tmpfs.mounted()) {
    GTEST_SKIP() << "SKIPPED, NOT TESTED: cannot mount a tmpfs for the state directory ("
                 << tmpfs.error() << "); this test needs root (CAP_SYS_ADMIN)";
  }
  Daemon d("services: {}\n" + worker_plugin_yaml("$DIR/worker"), dir);
  ASSERT_TRUE(d.start()) << d.stderr_text();
  const std::string path = dir + "/state/plugins/work_w.json";
  ASSERT_EQ(200u, d.call("PUT", "/api/v1/plugins/work_w/config", R"({"model": "old"})")->status);
  const std::string old_text = read_text(path);
  // Full but for one page: a config bigger than that is written in part, then refused.
  std::ofstream(dir + "/state/spare") << std::string(4096, 's');
  ASSERT_EQ(ENOSPC, fill_until_full(dir + "/state/filler", 65536));
  ASSERT_EQ(ENOSPC, fill_until_full(dir + "/state/filler", 1));
  fs::remove(dir + "/state/spare");
  const json big = {{"model", std::string(20000, 'n')}};
  const auto refused = d.call("PUT", "/api/v1/plugins/work_w/config", big.dump());
  ASSERT_TRUE(refused.ok());
  EXPECT_EQ(500u, refused->status) << refused->body.substr(0, 300);
  const auto message = body(refused)["error"].value("message", "");
  EXPECT_EQ("cannot write " + path + ": No space left on device", message);
  EXPECT_EQ(old_text, read_text(path));
  EXPECT_FALSE(fs::exists(path + ".tmp"));
  EXPECT_EQ(json({{"model", "old"}}),
            body(d.call("GET", "/api/v1/plugins/work_w/config"))["config"]);
  fs::remove(dir + "/state/filler");
  EXPECT_EQ(200u, d.call("PUT", "/api/v1/plugins/work_w/config", big.dump())->status);
  EXPECT_TRUE(big == body(d.call("GET", "/api/v1/plugins/work_w/config"))["config"]);
  EXPECT_EQ(0, d.terminate());
}

// Guarantee: a daemon SIGKILLed while many clients submit jobs leaves a job database that
// passes PRAGMA integrity_check and holds every job whose submission was answered.
TEST(Fault, AKillMidCommitLeavesASoundDatabaseWithEveryAcknowledgedJob) {
  const std::string dir = make_temp_dir("sqlite-kill");
  Daemon d("services: {}\n" + worker_plugin_yaml("$DIR/worker", 2), dir);
  ASSERT_TRUE(d.start()) << d.stderr_text();
  std::mutex mutex;
  std::condition_variable enough;
  std::set<int64_t> acked;
  std::atomic<bool> stop{false};
  std::vector<std::thread> clients;
  for (int c = 0; c < 8; ++c) {
    clients.emplace_back([&] {
      while (!stop) {
        const auto reply = d.call("POST", "/api/v1/plugins/work_w/jobs", "{}", 5s);
        if (!reply || reply->status != 200) return;  // the daemon is gone
        const int64_t id = body(reply).value("id", int64_t{0});
        std::lock_guard lock(mutex);
        acked.insert(id);
        if (acked.size() >= 300) enough.notify_one();
      }
    });
  }
  {
    std::unique_lock lock(mutex);
    ASSERT_TRUE(enough.wait_for(lock, 60s, [&] { return acked.size() >= 300; }));
  }
  d.kill9();  // with seven or eight submissions on their way
  stop = true;
  for (auto& t : clients) t.join();

  sqlite3* db = nullptr;
  ASSERT_EQ(SQLITE_OK,
            sqlite3_open_v2((dir + "/state/jobs.db").c_str(), &db, SQLITE_OPEN_READWRITE, nullptr));
  std::string integrity;
  std::set<int64_t> stored;
  sqlite3_exec(
      db, "PRAGMA integrity_check",
      [](void* out, int, char** values, char**) {
        *static_cast<std::string*>(out) += values[0] != nullptr ? values[0] : "(null)";
        return 0;
      },
      &integrity, nullptr);
  sqlite3_exec(
      db, "SELECT id FROM jobs",
      [](void* out, int, char** values, char**) {
        static_cast<std::set<int64_t>*>(out)->insert(std::stoll(values[0]));
        return 0;
      },
      &stored, nullptr);
  sqlite3_close(db);
  EXPECT_EQ("ok", integrity);
  for (const int64_t id : acked) EXPECT_EQ(1u, stored.count(id)) << "job " << id << " was lost";

  // And the daemon takes the database up again, with every acknowledged job.
  ASSERT_TRUE(d.start()) << d.stderr_text();
  const auto all = body(d.call("GET", "/api/v1/jobs?limit=10000"));
  std::set<int64_t> listed;
  for (const auto& j : all["jobs"]) listed.insert(j["id"].get<int64_t>());
  for (const int64_t id : acked) EXPECT_EQ(1u, listed.count(id)) << "job " << id << " not listed";
  EXPECT_EQ(0, d.terminate());
  EXPECT_TRUE(processes_with_arg(dir + "/worker").empty());
}

}  // namespace
}  // namespace gpuvisor::itest
