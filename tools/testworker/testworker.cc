// The project's test worker: speaks gpuvisor's worker protocol (JSON lines on stdin/stdout).
// Its input chooses what it does: {"crash": true} exits with status 3, {"hang": true} never
// answers, {"fail": true} answers an error; anything else streams two chunks, reports progress
// and returns {"echo": input, "config": its config, "pid": its PID}. "reload" takes a new
// config; "get_state" answers the config's "model" as its loaded resource. {"wait_for_reload":
// true} is answered only after the next reload (a config saved mid-job). {"record": PATH} appends
// the job's id to PATH, one line per run, before doing the rest (the fault tests count runs);
// {"work_ms": N} takes N ms before answering (a job long enough to be interrupted).
// {"say": [messages]} sends each message, with the job's id, before the rest (a buggy worker).
// {"setsid_child": PATH} first starts `sleep 1000` in a session of its own, as a helper process
// that left the worker's session would be, and writes its PID to PATH (stopping the worker
// must end it too).
// {"stop_ms": N, "stopped_marker": PATH} makes it slow to stop: SIGTERM is taken N ms to act
// on, then PATH is written and it exits (a worker winding a job down); it says progress 0.1 once
// that is in place.
// {"hold_mb": N} holds N MiB of simulated VRAM on GPU 0 from then on, as a worker that loaded a
// model does (the fake NVML library counts $FAKE_NVML_DIR/holds/<pid>.json while it lives).
// --exit-on-init N: exits with status N when initialised (a worker that cannot load).
#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>

using nlohmann::json;

namespace {

void say(const json& message) {
  std::cout << message.dump() << "\n" << std::flush;
}

// Written to a temporary name and renamed: a reader sees the whole PID or no file.
void start_setsid_child(const std::string& path) {
  const pid_t pid = fork();
  if (pid == 0) {
    setsid();
    execl("/bin/sleep", "sleep", "1000", static_cast<char*>(nullptr));
    _exit(127);
  }
  std::ofstream(path + ".tmp") << pid << "\n";
  if (pid < 0 || rename((path + ".tmp").c_str(), path.c_str()) != 0) {
    std::cerr << "testworker: cannot start the setsid child for " << path << "\n";
  }
}

void hold_vram(int mb) {
  const char* dir = std::getenv("FAKE_NVML_DIR");
  if (dir == nullptr || *dir == '\0') {
    std::cerr << "testworker: hold_mb without FAKE_NVML_DIR\n";
    return;
  }
  const std::string path = std::string(dir) + "/holds/" + std::to_string(getpid()) + ".json";
  std::ofstream(path + ".tmp") << json{{"pid", getpid()}, {"gpu", 0}, {"mb", mb}}.dump() << "\n";
  if (rename((path + ".tmp").c_str(), path.c_str()) != 0) {
    std::cerr << "testworker: cannot write " << path << "\n";
  }
}

// SIGTERM goes to a thread that winds down for ms, leaves the marker, then ends the process.
void stop_slowly(int ms, const std::string& marker) {
  sigset_t term;
  sigemptyset(&term);
  sigaddset(&term, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &term, nullptr);  // before the thread, which inherits the mask
  std::thread([term, ms, marker] {
    int got = 0;
    sigwait(&term, &got);
    std::this_thread::sleep_for(std::chrono::milliseconds(ms));  // the winding down, played
    std::ofstream(marker) << getpid() << "\n";
    std::cerr << "testworker: stopped after " << ms << " ms\n";
    _exit(0);
  }).detach();
}

}  // namespace

int main(int argc, char** argv) {
  std::cerr << "testworker: started\n";
  const int exit_on_init =
      argc == 3 && std::string(argv[1]) == "--exit-on-init" ? std::stoi(argv[2]) : -1;
  json config = json::object();
  int executes = 0;       // how many execute messages came, reported in each result
  json parked = nullptr;  // {"wait_for_reload": true}: answered after the next reload
  const auto result = [&](long long id, const json& input) {
    say({{"type", "result"},
         {"job_id", id},
         {"result",
          {{"echo", input}, {"config", config}, {"pid", getpid()}, {"executes", executes}}}});
  };
  std::string line;
  while (std::getline(std::cin, line)) {
    const auto m = json::parse(line, nullptr, false);
    if (!m.is_object()) {
      std::cerr << "testworker: not JSON: " << line << "\n";
      continue;
    }
    const std::string type = m.value("type", "");
    if (type == "init" || type == "reload") {
      if (exit_on_init >= 0) return exit_on_init;
      config = m.value("config", json::object());
      say({{"type", "ready"}});
      if (!parked.is_null()) {
        result(parked["id"].get<long long>(), parked["input"]);
        parked = nullptr;
      }
    } else if (type == "get_state") {
      say({{"type", "state"}, {"loaded_resource", config.value("model", "none")}});
    } else if (type == "execute") {
      const auto id = m.value("job_id", 0LL);
      const json input = m.value("input", json::object());
      ++executes;
      if (const std::string path = input.value("record", ""); !path.empty()) {
        // One O_APPEND write per run keeps lines whole when several workers share the file.
        const std::string run = std::to_string(id) + "\n";
        const int fd = open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
        if (fd < 0 || write(fd, run.data(), run.size()) != static_cast<ssize_t>(run.size())) {
          std::cerr << "testworker: cannot record the run in " << path << "\n";
        }
        if (fd >= 0) close(fd);
      }
      if (const int mb = input.value("hold_mb", 0); mb > 0) hold_vram(mb);
      if (const int ms = input.value("work_ms", 0); ms > 0) {
        std::this_thread::sleep_for(std::chrono::milliseconds(ms));  // the work itself, played
      }
      for (auto message : input.value("say", json::array())) {
        message["job_id"] = id;
        say(message);
      }
      if (const std::string path = input.value("setsid_child", ""); !path.empty()) {
        start_setsid_child(path);
      }
      if (input.value("crash", false)) return 3;
      if (const int ms = input.value("stop_ms", 0); ms > 0) {
        stop_slowly(ms, input.value("stopped_marker", "/dev/null"));
        say({{"type", "progress"}, {"job_id", id}, {"progress", 0.1}});
      }
      if (input.value("wait_for_reload", false)) {
        parked = {{"id", id}, {"input", input}};
        say({{"type", "progress"}, {"job_id", id}, {"progress", 0.1}});  // "I have it"
        continue;
      }
      if (input.value("hang", false)) continue;
      if (input.value("fail", false)) {
        say({{"type", "error"}, {"job_id", id}, {"message", "asked to fail"}});
        continue;
      }
      say({{"type", "stream_chunk"}, {"job_id", id}, {"data", "chunk 1"}});
      say({{"type", "progress"}, {"job_id", id}, {"progress", 0.5}});
      say({{"type", "stream_chunk"}, {"job_id", id}, {"data", "chunk 2"}});
      result(id, input);
    } else if (type == "stop") {
      std::cerr << "testworker: asked to stop\n";
      return 0;
    }
  }
  return 0;
}
