// The one child-process type against real processes: how a child is started, what its exit
// reads as, and that a stop or a kill leaves nothing of its tree; and the cgroups that daemons
// killed with SIGKILL left behind, cleared without touching anything in use.
#include "runtime/child_process.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/file.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <boost/asio/io_context.hpp>
#include <csignal>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "lib/fakes.h"
#include "lib/temp_dir.h"
#include "runtime/cgroup_parent.h"
#include "runtime/proc.h"

namespace gpuvisor {
namespace {

using testing::run_until;

std::string temp_dir() {
  return fresh_dir("child");
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

// Under a root of the test's own, beside the real daemons' state directories.
class CgroupLeftoversTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto real = CgroupParent::root();
    if (!real) GTEST_SKIP() << "no cgroup2 here: " << real.error().message;
    root_ = *real + "/test-leftovers-" + std::to_string(getpid());
    ASSERT_EQ(0, mkdir(root_.c_str(), 0755)) << std::strerror(errno);
  }
  void TearDown() override {
    if (root_.empty()) return;
    std::error_code ec;
    for (const auto& state : std::filesystem::directory_iterator(root_, ec)) {
      if (!state.is_directory(ec)) continue;
      for (const auto& child : std::filesystem::directory_iterator(state.path(), ec)) {
        if (child.is_directory(ec)) rmdir(child.path().c_str());
      }
      rmdir(state.path().c_str());
    }
    rmdir(root_.c_str());
  }
  void backdate(const std::string& dir) {
    const timespec an_hour_ago{time(nullptr) - 3600, 0};
    const timespec times[2] = {an_hour_ago, an_hour_ago};
    EXPECT_EQ(0, utimensat(AT_FDCWD, dir.c_str(), times, 0)) << std::strerror(errno);
  }
  // Makes root_/name (if it is not there yet), and its parent first where name has one.
  std::string make_cgroup(const std::string& name, bool old) {
    const std::string dir = root_ + "/" + name;
    const std::string parent = dir.substr(0, dir.rfind('/'));
    if (parent != root_) mkdir(parent.c_str(), 0755);
    EXPECT_TRUE(mkdir(dir.c_str(), 0755) == 0 || errno == EEXIST)
        << dir << ": " << std::strerror(errno);
    if (old) backdate(dir);
    return dir;
  }
  std::string root_;
};

TEST_F(CgroupLeftoversTest, OnlyEmptyOldCgroupsThatNoDaemonHoldsAreRemoved) {
  // Parents backdated last: making a cgroup inside one makes it look new.
  const std::string gone_child = make_cgroup("state-gone/svc.1", true);
  const std::string gone = make_cgroup("state-gone", true);
  make_cgroup("state-young", false);
  const std::string busy_child = make_cgroup("state-busy/svc.1", true);
  make_cgroup("state-busy", true);
  // A process inside: the tree of a service a killed daemon left running, which its next
  // daemon adopts.
  boost::asio::io_context io;
  auto member = ChildProcess::spawn(io.get_executor(), {{"/bin/sleep", "1000"}});
  ASSERT_TRUE(member.ok()) << member.error().message;
  {
    std::ofstream procs(busy_child + "/cgroup.procs");
    procs << (*member)->pid() << std::endl;
  }
  const auto removed = CgroupParent::remove_leftovers(root_, std::chrono::minutes(10));

  EXPECT_EQ((std::vector<std::string>{gone_child, gone}), removed);
  EXPECT_FALSE(std::filesystem::exists(gone));
  EXPECT_TRUE(std::filesystem::exists(root_ + "/state-young"));
  EXPECT_TRUE(std::filesystem::exists(busy_child));
  EXPECT_TRUE(same_process_alive((*member)->pid(), read_proc_stat((*member)->pid())->start_time));
  (*member)->kill_now();
  ASSERT_TRUE(run_until(io, [&] { return rmdir(busy_child.c_str()) == 0; }));
}

TEST_F(CgroupLeftoversTest, ADirectoryADaemonHoldsIsNeverRemovedAndItsLastHolderRemovesIt) {
  const std::string state_dir = temp_dir();
  auto claim = [&] {
    auto held = CgroupParent::claim(root_, state_dir);
    EXPECT_TRUE(held.ok()) << held.error().message;
    return std::optional<CgroupParent>(std::move(*held));
  };
  auto first = claim();
  const std::string dir = first->dir();
  backdate(dir);
  // A second claim on the same state directory shares it; a removal cannot take it.
  auto second = claim();
  EXPECT_EQ(dir, second->dir());
  EXPECT_TRUE(CgroupParent::remove_leftovers(root_, std::chrono::seconds(0)).empty());
  // The first to let go leaves it to the other; the last removes it, empty as it is.
  first.reset();
  EXPECT_TRUE(std::filesystem::exists(dir));
  second.reset();
  EXPECT_FALSE(std::filesystem::exists(dir));
}

}  // namespace
}  // namespace gpuvisor
