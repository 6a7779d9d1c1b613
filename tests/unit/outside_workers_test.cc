// Outside workers on a real process: registered with its start time and a pidfd, gone from the
// registry (with an event) the moment it exits; refused when it is dead, another user's, ours
// or registered already.
#include "resources/outside_workers.h"

#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <boost/asio/io_context.hpp>

#include "lib/fakes.h"
#include "lib/temp_dir.h"

namespace gpuvisor {
namespace {

using testing::run_until;

pid_t start_sleeper() {
  const pid_t pid = fork();
  if (pid == 0) {
    execl("/bin/sleep", "sleep", "1000", static_cast<char*>(nullptr));
    _exit(127);
  }
  return pid;
}

class OutsideWorkersTest : public ::testing::Test {
 protected:
  void TearDown() override {
    if (sleeper_ > 0) {
      kill(sleeper_, SIGKILL);
      waitpid(sleeper_, nullptr, 0);
    }
  }
  size_t events(const std::string& type) const {
    size_t n = 0;
    for (const auto& e : events_.since(0)) n += e.type == type ? 1 : 0;
    return n;
  }
  static std::string nobody(pid_t) { return ""; }

  boost::asio::io_context io_;
  EventBus events_;
  WorkerRegistry registry_{ProcessTable::system()};
  pid_t sleeper_ = start_sleeper();
};

TEST_F(OutsideWorkersTest, AWorkerLeavesTheRegistryWhenItsProcessExits) {
  OutsideWorkers outside(io_.get_executor(), registry_, events_);
  const auto added = outside.add({sleeper_, "transcription", "asr_whisper"}, nobody);
  ASSERT_TRUE(added) << added.error().message;
  EXPECT_EQ("outside-" + std::to_string(sleeper_), added->id);
  EXPECT_TRUE(added->outside);
  EXPECT_EQ(sleeper_, registry_.find_main(sleeper_)->pid);
  EXPECT_EQ(1u, events("worker.registered"));

  auto update = WorkerUpdate{};
  update.status = "running";
  update.job = Change<std::string>(std::string("job-1"));
  ASSERT_TRUE(outside.update(sleeper_, update));
  EXPECT_EQ("running", registry_.find_main(sleeper_)->status);

  kill(sleeper_, SIGKILL);
  ASSERT_TRUE(run_until(io_, [&] { return registry_.all().empty(); }));
  EXPECT_EQ(1u, events("worker.unregistered"));
  EXPECT_EQ("no outside worker with pid " + std::to_string(sleeper_) +
                " (register it first: POST /api/v1/workers)",
            outside.update(sleeper_, update).error().message);
}

TEST_F(OutsideWorkersTest, RefusedWhenDeadTakenOursOrAnotherUsers) {
  OutsideWorkers outside(io_.get_executor(), registry_, events_);
  ASSERT_TRUE(outside.add({sleeper_, "llm"}, nobody));
  auto again = outside.add({sleeper_, "llm"}, nobody);
  EXPECT_EQ(ErrorCode::kConflict, again.error().code);
  EXPECT_EQ(1u, registry_.all().size());

  auto ours = outside.add({getpid(), "llm"}, [](pid_t) { return std::string("llm"); });
  EXPECT_EQ(ErrorCode::kConflict, ours.error().code);
  EXPECT_EQ("pid " + std::to_string(getpid()) + " is gpuvisor's own (llm), not an outside worker",
            ours.error().message);

  const pid_t dead = start_sleeper();
  kill(dead, SIGKILL);
  waitpid(dead, nullptr, 0);
  auto gone = outside.add({dead, "llm"}, nobody);
  EXPECT_EQ(ErrorCode::kNotFound, gone.error().code);
  EXPECT_EQ("pid " + std::to_string(dead) + " is not running", gone.error().message);

  OutsideWorkers as_user(io_.get_executor(), registry_, events_, "",
                         {[](pid_t) { return std::optional<uid_t>(0); }, 1000});
  auto foreign = as_user.add({getpid(), "llm"}, nobody);
  EXPECT_EQ(ErrorCode::kForbidden, foreign.error().code);
  EXPECT_NE(std::string::npos, foreign.error().message.find("belongs to another user (uid 0)"));
  EXPECT_EQ(1u, registry_.all().size());  // nothing changed
}

TEST_F(OutsideWorkersTest, DeletingOneUnregistersItAndLeavesItRunning) {
  OutsideWorkers outside(io_.get_executor(), registry_, events_);
  ASSERT_TRUE(outside.add({sleeper_, "llm"}, nobody));
  const auto removed = outside.remove(sleeper_);
  ASSERT_TRUE(removed);
  EXPECT_TRUE(registry_.all().empty());
  EXPECT_EQ(0, kill(sleeper_, 0));  // the app's to stop, never ours
  EXPECT_EQ(ErrorCode::kNotFound, outside.remove(sleeper_).error().code);
  io_.poll();  // the cancelled watch says nothing
  EXPECT_EQ(1u, events("worker.unregistered"));
}

TEST_F(OutsideWorkersTest, ARestartedDaemonTakesBackWhatStillRuns) {
  const std::string file = fresh_dir("outside") + "/outside_workers.json";
  const pid_t gone = start_sleeper();
  {
    OutsideWorkers before(io_.get_executor(), registry_, events_, file);
    ASSERT_TRUE(before.add({sleeper_, "transcription", "asr"}, nobody));
    ASSERT_TRUE(before.add({gone, "llm"}, nobody));
    WorkerUpdate update;
    update.status = "running";
    update.loaded_resource = Change<std::string>(std::string("whisper-large-v3"));
    ASSERT_TRUE(before.update(sleeper_, update));
  }  // the daemon goes: the registry forgets, the file remembers
  EXPECT_TRUE(registry_.all().empty());
  kill(gone, SIGKILL);
  waitpid(gone, nullptr, 0);
  OutsideWorkers after(io_.get_executor(), registry_, events_, file);
  EXPECT_EQ(1u, after.restore());
  const WorkerInfo* w = registry_.find_main(sleeper_);
  ASSERT_NE(nullptr, w);
  EXPECT_EQ("running", w->status);
  EXPECT_EQ("whisper-large-v3", w->loaded_resource.value_or(""));
  EXPECT_EQ("asr", w->plugin);
  kill(sleeper_, SIGKILL);
  ASSERT_TRUE(run_until(io_, [&] { return registry_.all().empty(); }));
}

}  // namespace
}  // namespace gpuvisor
