// The one child-process type against real processes: how a child is started, what its exit
// reads as, and that a stop or a kill leaves nothing of its tree.
#include "runtime/child_process.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/resource.h>
#include <unistd.h>

#include <boost/asio/io_context.hpp>
#include <csignal>
#include <filesystem>
#include <fstream>

#include "lib/fakes.h"
#include "runtime/proc.h"

namespace gpuvisor {
namespace {

using testing::run_until;

std::string temp_dir() {
  static int counter = 0;
  const auto dir = std::filesystem::path(::testing::TempDir()) /
                   ("gv-child-" + std::to_string(getpid()) + "-" + std::to_string(++counter));
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  return dir.string();
}

pid_t read_pid(const std::string& path) {
  pid_t pid = 0;
  std::ifstream(path) >> pid;
  return pid;
}

std::string first_word(const std::string& path) {
  std::string word;
  std::ifstream(path) >> word;
  return word;
}

class ChildProcessTest : public ::testing::Test {
 protected:
  std::shared_ptr<ChildProcess> spawn(ChildSpec spec) {
    auto child = ChildProcess::spawn(io_.get_executor(), spec);
    EXPECT_TRUE(child.ok()) << child.error().message;
    if (!child.ok()) return nullptr;
    (*child)->watch([this](ExitInfo info) { exit_ = std::move(info); });
    return *child;
  }
  bool run_to_exit() {
    return run_until(io_, [&] { return exit_.has_value(); });
  }

  boost::asio::io_context io_;
  std::optional<ExitInfo> exit_;
  std::string dir_ = temp_dir();
};

TEST_F(ChildProcessTest, AKillReadsAsTheSignalAndItsName) {
  auto child = spawn({{"/bin/sh", "-c", "kill -9 $$"}});
  ASSERT_TRUE(run_to_exit());
  EXPECT_EQ(SIGKILL, exit_->signal);
  EXPECT_EQ("killed by signal 9 (Killed)", exit_->describe());
}

TEST_F(ChildProcessTest, AStopRunsToItsEndAfterItsOwnerLetsGo) {
  const std::string pid_file = dir_ + "/pid";
  auto child = spawn({{GPUVISOR_TESTSVC, "--ignore-sigterm", "--pid-file", pid_file}});
  ASSERT_TRUE(run_until(io_, [&] { return read_pid(pid_file) > 0; }));
  const pid_t pid = child->pid();
  const auto st = read_proc_stat(pid);
  ASSERT_TRUE(st);
  child->stop(Millis(50), [](StopOutcome) {});
  child.reset();  // the SIGKILL after the grace is still due
  EXPECT_TRUE(run_until(io_, [&] { return !same_process_alive(pid, st->start_time); }));
}

TEST_F(ChildProcessTest, KillNowEndsTheTreeAndReapsTheMainProcessBeforeReturning) {
  const std::string grandchild_file = dir_ + "/grandchild";
  auto child = spawn(
      {{GPUVISOR_TESTSVC, "--fork-setsid-grandchild", "--grandchild-pid-file", grandchild_file}});
  ASSERT_TRUE(run_until(io_, [&] { return read_pid(grandchild_file) > 0; }));
  const auto grandchild = read_proc_stat(read_pid(grandchild_file));
  ASSERT_TRUE(grandchild);
  const pid_t pid = child->pid();
  child->kill_now();
  EXPECT_TRUE(child->exited());
  EXPECT_FALSE(read_proc_stat(pid)) << "reaped, not even a zombie";
  EXPECT_TRUE(
      run_until(io_, [&] { return !same_process_alive(grandchild->pid, grandchild->start_time); }));
  EXPECT_FALSE(exit_.has_value()) << "an owner that kills is going away and hears nothing";
}

TEST_F(ChildProcessTest, ABadWorkingDirectoryIsNamed) {
  auto failed = ChildProcess::spawn(io_.get_executor(), {{"/bin/true"}, {}, "/nonexistent-dir"});
  ASSERT_FALSE(failed.ok());
  EXPECT_EQ("cannot change to directory '/nonexistent-dir': No such file or directory",
            failed.error().message);
}

TEST_F(ChildProcessTest, TheChildInheritsNoDescriptorBeyondStdio) {
  const int leaky = dup2(open("/dev/null", O_RDONLY), 77);  // no O_CLOEXEC, as Asio's accept
  ASSERT_EQ(77, leaky);
  const std::string log = dir_ + "/fds.log";
  auto child = spawn(
      {{"/bin/sh", "-c", "test -e /proc/$$/fd/77 && echo leaked || echo clean"}, {}, "", log});
  ASSERT_TRUE(run_to_exit());
  close(leaky);
  EXPECT_EQ("clean", first_word(log));
}

TEST_F(ChildProcessTest, TheDaemonRaisesItsDescriptorLimitButChildrenKeepTheUsualOne) {
  rlimit before{};
  ASSERT_EQ(0, getrlimit(RLIMIT_NOFILE, &before));
  if (before.rlim_max <= 1000) GTEST_SKIP() << "hard descriptor limit too low to test";
  rlimit low{1000, before.rlim_max};
  ASSERT_EQ(0, setrlimit(RLIMIT_NOFILE, &low));
  raise_fd_limit();
  rlimit raised{};
  getrlimit(RLIMIT_NOFILE, &raised);
  EXPECT_EQ(before.rlim_max, raised.rlim_cur);
  const std::string log = dir_ + "/nofile.log";
  auto child = spawn({{"/bin/sh", "-c", "ulimit -n"}, {}, "", log});
  ASSERT_TRUE(run_to_exit());
  EXPECT_EQ("1000", first_word(log));
  setrlimit(RLIMIT_NOFILE, &before);
}

TEST(ChildEnvironment, TheDaemonsTokenIsNotInherited) {
  setenv("GPUVISOR_TOKEN", "secret", 1);
  const auto env = merged_environment({});
  const auto named = merged_environment({{"GPUVISOR_TOKEN", "given"}});
  unsetenv("GPUVISOR_TOKEN");
  EXPECT_TRUE(std::none_of(env.begin(), env.end(),
                           [](const std::string& e) { return e.starts_with("GPUVISOR_TOKEN="); }));
  EXPECT_NE(named.end(), std::find(named.begin(), named.end(), "GPUVISOR_TOKEN=given"));
}

TEST(ChildEnvironment, TheChildsOwnEnvironmentOverridesTheDaemons) {
  const auto env = merged_environment({{"PATH", "/custom"}, {"GV_X", "1"}});
  EXPECT_NE(env.end(), std::find(env.begin(), env.end(), "PATH=/custom"));
  EXPECT_NE(env.end(), std::find(env.begin(), env.end(), "GV_X=1"));
}

}  // namespace
}  // namespace gpuvisor
