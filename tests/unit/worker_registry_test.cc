// The worker registry against real processes and the real /proc table.
#include "resources/worker_registry.h"

#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>

namespace gpuvisor {
namespace {

// A worker with a child of its own: sh forks sleep, then becomes another sleep. Constructed
// once the child exists (sh says so on a pipe; a blocking read, not a wait by the clock).
class WorkerProcess {
 public:
  WorkerProcess() {
    int out[2];
    if (pipe(out) != 0) return;
    pid_ = fork();
    if (pid_ == 0) {
      dup2(out[1], STDOUT_FILENO);
      close(out[0]);
      close(out[1]);
      execl("/bin/sh", "sh", "-c", "sleep 1000 & echo forked; exec sleep 1001 >/dev/null",
            static_cast<char*>(nullptr));
      _exit(127);
    }
    close(out[1]);
    char buf[16];
    while (read(out[0], buf, sizeof buf) < 0 && errno == EINTR) {
    }
    close(out[0]);
  }
  ~WorkerProcess() {
    for (const pid_t child : ProcessTable::system().descendants(pid_)) kill(child, SIGKILL);
    kill(pid_, SIGKILL);
    waitpid(pid_, nullptr, 0);
  }
  pid_t pid() const { return pid_; }

 private:
  pid_t pid_ = 0;
};

TEST(WorkerRegistry, RegisterFindAndRelatedPidsIncludeChildren) {
  WorkerProcess proc;
  WorkerRegistry reg(ProcessTable::system());
  ASSERT_TRUE(
      reg.add({.id = "w1", .type = "comfyui", .pid = proc.pid(), .job = "job-7", .gpu = 0}).ok());
  const auto pids = reg.related_pids("w1");
  ASSERT_EQ(2u, pids.size());
  EXPECT_EQ(proc.pid(), pids[0]);
  EXPECT_EQ("w1", reg.find_by_pid(pids[1])->id);  // a child counts as the worker's
  EXPECT_EQ(1u, reg.by_job("job-7").size());
  EXPECT_EQ(1u, reg.by_type("comfyui").size());
  EXPECT_TRUE(reg.by_type("llm").empty());
}

TEST(WorkerRegistry, FieldsCanBeSetLeftAloneOrCleared) {
  WorkerRegistry reg(ProcessTable::system());
  ASSERT_TRUE(
      reg.add({.id = "w", .type = "tts", .job = "job-1", .gpu = 1, .container = "c0ffee"}).ok());
  WorkerUpdate u;
  u.job = std::optional<std::string>{};  // clear
  u.gpu = std::optional<unsigned>{0};    // set
  ASSERT_TRUE(reg.update("w", u).ok());
  const WorkerInfo* w = reg.find("w");
  EXPECT_FALSE(w->job.has_value());
  EXPECT_EQ(0u, w->gpu.value_or(9));
  EXPECT_EQ("c0ffee", w->container.value_or(""));  // left alone
  EXPECT_EQ("tts", w->type);
}

TEST(WorkerRegistry, BadRegistrationsSayWhatIsWrongAndChangeNothing) {
  WorkerRegistry reg(ProcessTable::system());
  EXPECT_EQ("a worker needs an id", reg.add({.id = "", .type = "t", .pid = 0}).error().message);
  EXPECT_EQ("worker 'w' needs a type", reg.add({.id = "w", .type = "", .pid = 0}).error().message);
  EXPECT_EQ("worker 'w': pid 999999999 is not running",
            reg.add({.id = "w", .type = "t", .pid = 999'999'999}).error().message);
  ASSERT_TRUE(reg.add({.id = "w", .type = "t", .pid = 0}).ok());
  EXPECT_EQ(ErrorCode::kConflict, reg.add({.id = "w", .type = "t", .pid = 0}).error().code);
  EXPECT_EQ("no worker 'x'", reg.update("x", {}).error().message);
  WorkerUpdate empty_type;
  empty_type.type = "";
  EXPECT_EQ("worker 'w': type cannot be empty", reg.update("w", empty_type).error().message);
  EXPECT_EQ("t", reg.find("w")->type);
  EXPECT_TRUE(reg.remove("w").ok());
  EXPECT_EQ(nullptr, reg.find("w"));
  EXPECT_EQ(ErrorCode::kNotFound, reg.remove("w").error().code);
}

TEST(WorkerRegistry, ADeadOrReusedPidBelongsToNoWorker) {
  // A fake table: pid 42 started at 100 when registered, now names a process started at 200.
  uint64_t now_start = 100;
  ProcessTable table{[&](pid_t) -> std::optional<uint64_t> { return now_start; },
                     [](pid_t) { return std::vector<pid_t>{43}; }};
  WorkerRegistry reg(table);
  ASSERT_TRUE(reg.add({.id = "w", .type = "t", .pid = 42}).ok());
  EXPECT_EQ((std::vector<pid_t>{42, 43}), reg.related_pids("w"));
  now_start = 200;
  EXPECT_TRUE(reg.related_pids("w").empty());
  EXPECT_EQ(nullptr, reg.find_by_pid(43));
}

}  // namespace
}  // namespace gpuvisor
