// The process runtime against real processes: the project's test service, real signals, real
// cgroups where the machine has them.
#include "runtime/process_runtime.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <boost/asio/io_context.hpp>
#include <csignal>
#include <filesystem>
#include <fstream>

#include "lib/fakes.h"
#include "lib/temp_dir.h"
#include "runtime/cgroup.h"
#include "runtime/cgroup_parent.h"
#include "runtime/log_tail.h"
#include "runtime/proc.h"

namespace gpuvisor {
namespace {

using testing::run_until;

std::string temp_dir() {
  return fresh_dir("rt");
}

ServiceSpec testsvc(std::vector<std::string> args) {
  ServiceSpec spec;
  spec.name = "svc";
  spec.command = {GPUVISOR_TESTSVC};
  spec.command.insert(spec.command.end(), args.begin(), args.end());
  return spec;
}

// Each test runs with and without cgroups (where the machine allows them).
class ProcessRuntimeTest : public ::testing::TestWithParam<bool> {
 protected:
  void SetUp() override {
    if (GetParam()) {
      auto parent = CgroupParent::claim(dir_);
      if (!parent) GTEST_SKIP() << "no cgroup2 here: " << parent.error().message;
      cgroup_parent_ = parent->dir();
      held_.emplace(std::move(*parent));
    }
    runtime_ = std::make_unique<ProcessRuntime>(io_.get_executor(), cgroup_parent_);
  }
  void TearDown() override {
    if (!cgroup_parent_.empty()) rmdir(cgroup_parent_.c_str());
  }

  std::shared_ptr<Instance> start(const ServiceSpec& spec,
                                  std::optional<ExitInfo>* exit = nullptr) {
    auto started =
        runtime_->start(spec, LaunchOptions{dir_ + "/svc.log", {}}, [exit](const ExitInfo& info) {
          if (exit != nullptr) *exit = info;
        });
    EXPECT_TRUE(started.ok()) << started.error().message;
    return started.ok() ? *started : nullptr;
  }

  std::optional<StopOutcome> stop(Instance& instance, Millis grace) {
    std::optional<StopOutcome> outcome;
    instance.stop(grace, [&](StopOutcome o) { outcome = o; });
    EXPECT_TRUE(run_until(io_, [&] { return outcome.has_value(); }));
    return outcome;
  }

  boost::asio::io_context io_;
  std::optional<CgroupParent> held_;
  std::string cgroup_parent_;
  std::string dir_ = temp_dir();
  std::unique_ptr<ProcessRuntime> runtime_;
};

TEST_P(ProcessRuntimeTest, ReportsTheExitStatus) {
  std::optional<ExitInfo> exit;
  auto instance = start(testsvc({"--exit-at-start", "7"}), &exit);
  ASSERT_TRUE(run_until(io_, [&] { return exit.has_value(); }));
  EXPECT_TRUE(exit->known);
  EXPECT_EQ(7, exit->code);
  EXPECT_EQ("exited with status 7", exit->describe());
}

TEST_P(ProcessRuntimeTest, StopEndsTheProcessWithSigterm) {
  const std::string pid_file = dir_ + "/pid";
  auto instance = start(testsvc({"--pid-file", pid_file}));
  ASSERT_TRUE(run_until(io_, [&] { return read_pid(pid_file) > 0; }));
  if (GetParam()) {
    // Born into its own cgroup: /proc/PID/cgroup's "0::" line is the instance's directory.
    std::ifstream in("/proc/" + std::to_string(instance->record().pid) + "/cgroup");
    std::string line, v2;
    while (std::getline(in, line)) {
      if (line.rfind("0::", 0) == 0) v2 = line.substr(3);
    }
    ASSERT_FALSE(v2.empty());
    EXPECT_TRUE(instance->record().cgroup.ends_with(v2))
        << instance->record().cgroup << " vs " << v2;
  }
  const auto outcome = stop(*instance, Millis(5'000));
  EXPECT_FALSE(outcome->killed);
  EXPECT_FALSE(same_process_alive(instance->record().pid, instance->record().start_time));
}

TEST_P(ProcessRuntimeTest, SigkillAfterGraceWhenSigtermIsIgnored) {
  const std::string pid_file = dir_ + "/pid";
  auto instance = start(testsvc({"--ignore-sigterm", "--pid-file", pid_file}));
  // The flag takes effect once the process runs: wait for the file it writes after.
  ASSERT_TRUE(run_until(io_, [&] { return read_pid(pid_file) > 0; }));
  const auto outcome = stop(*instance, Millis(100));
  EXPECT_TRUE(outcome->killed);
  EXPECT_TRUE(instance->exited());
}

TEST_P(ProcessRuntimeTest, StopFindsAGrandchildThatLeftTheSession) {
  const std::string grandchild_file = dir_ + "/grandchild";
  auto instance =
      start(testsvc({"--fork-setsid-grandchild", "--grandchild-pid-file", grandchild_file}));
  ASSERT_TRUE(run_until(io_, [&] { return read_pid(grandchild_file) > 0; }));
  const pid_t grandchild = read_pid(grandchild_file);
  const auto st = read_proc_stat(grandchild);
  ASSERT_TRUE(st);
  EXPECT_EQ(grandchild, st->sid);  // it really left the service's session
  instance->refresh();
  EXPECT_EQ(2u, instance->pids().size());
  stop(*instance, Millis(5'000));
  EXPECT_FALSE(same_process_alive(grandchild, st->start_time));
}

TEST_P(ProcessRuntimeTest, AdoptionProvesThePidByStartTime) {
  const std::string pid_file = dir_ + "/pid";
  auto instance = start(testsvc({"--pid-file", pid_file}));
  ASSERT_TRUE(run_until(io_, [&] { return read_pid(pid_file) > 0; }));
  InstanceRecord forged = instance->record();
  forged.start_time += 1;  // the PID now "belongs to another process"
  auto refused = runtime_->adopt(forged, nullptr, [](const ExitInfo&) {});
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(ErrorCode::kConflict, refused.error().code);
  EXPECT_TRUE(same_process_alive(instance->record().pid, instance->record().start_time));

  std::optional<ExitInfo> exit;
  auto adopted =
      runtime_->adopt(instance->record(), nullptr, [&](const ExitInfo& info) { exit = info; });
  ASSERT_TRUE(adopted.ok()) << adopted.error().message;
  stop(**adopted, Millis(5'000));
  EXPECT_FALSE(same_process_alive(instance->record().pid, instance->record().start_time));
}

TEST_P(ProcessRuntimeTest, StopFindsAnOrphanThatStayedInTheSession) {
  // A double fork: the subshell exits at once, so sleep's parent is init, not the service.
  const std::string orphan_file = dir_ + "/orphan";
  ServiceSpec spec;
  spec.name = "svc";
  spec.command = {"/bin/sh", "-c",
                  "(sleep 1000 & echo $! > " + orphan_file + ".tmp; mv " + orphan_file + ".tmp " +
                      orphan_file + "); exec sleep 1001"};
  auto instance = start(spec);
  ASSERT_TRUE(run_until(io_, [&] { return read_pid(orphan_file) > 0; }));
  const pid_t orphan = read_pid(orphan_file);
  const auto st = read_proc_stat(orphan);
  ASSERT_TRUE(st);
  EXPECT_NE(instance->record().pid, st->ppid);
  stop(*instance, Millis(5'000));
  EXPECT_FALSE(same_process_alive(orphan, st->start_time));
}

TEST_P(ProcessRuntimeTest, PidFileAdoptionRefusesAProcessYoungerThanTheFile) {
  const std::string pid_file = dir_ + "/ext.pid";
  auto external = start(testsvc({"--pid-file", pid_file}));
  ASSERT_TRUE(run_until(io_, [&] { return read_pid(pid_file) > 0; }));
  ServiceSpec spec = testsvc({});
  spec.pid_file = pid_file;
  auto adopted = runtime_->adopt_existing(spec, [](const ExitInfo&) {});
  ASSERT_TRUE(adopted.ok()) << adopted.error().message;
  EXPECT_EQ(external->record().pid, (*adopted)->record().pid);
  // Backdate the file by an hour: the PID in it now belongs to a process that started later.
  std::filesystem::last_write_time(
      pid_file, std::filesystem::last_write_time(pid_file) - std::chrono::hours(1));
  auto stale = runtime_->adopt_existing(spec, [](const ExitInfo&) {});
  ASSERT_FALSE(stale.ok());
  EXPECT_NE(std::string::npos, stale.error().message.find("the PID was reused"))
      << stale.error().message;
  stop(*external, Millis(5'000));
}

TEST_P(ProcessRuntimeTest, ExecFailureIsAnErrorNotAnExit) {
  auto started = runtime_->start(testsvc({}), LaunchOptions{dir_ + "/svc.log", {}}, nullptr);
  ASSERT_TRUE(started.ok());
  stop(**started, Millis(0));
  ServiceSpec missing;
  missing.name = "svc";
  missing.command = {"/nonexistent/binary"};
  auto failed = runtime_->start(missing, LaunchOptions{dir_ + "/svc.log", {}}, nullptr);
  ASSERT_FALSE(failed.ok());
  EXPECT_EQ("cannot execute '/nonexistent/binary': No such file or directory",
            failed.error().message);
}

TEST_P(ProcessRuntimeTest, ReclaimKillsTheTreesNoRecordNamesAndKeepsTheOthers) {
  std::optional<ExitInfo> kept_exit, lost_exit;
  auto kept = start(testsvc({}), &kept_exit);
  auto lost = start(testsvc({}), &lost_exit);
  // A successor daemon on the same state directory, which read only kept's record.
  ProcessRuntime successor(io_.get_executor(), cgroup_parent_);
  const auto lines = successor.reclaim({kept->record()});
  if (!GetParam()) {
    // Without cgroups nothing proves a process ours without its record: nothing is touched.
    EXPECT_TRUE(lines.empty());
  } else {
    ASSERT_EQ(1u, lines.size());
    EXPECT_EQ(lost->record().cgroup +
                  ": left running by an earlier daemon with no record of it; killed pid " +
                  std::to_string(lost->record().pid),
              lines[0]);
    ASSERT_TRUE(run_until(io_, [&] { return lost_exit.has_value(); }));
    EXPECT_EQ(SIGKILL, lost_exit->signal);
    lost->stop(Millis(0), [](StopOutcome) {});
    ASSERT_TRUE(run_until(io_, [&] { return !Cgroup::open_existing(lost->record().cgroup); }))
        << "the leftover's cgroup is removed once empty";
  }
  EXPECT_FALSE(kept_exit.has_value());
  EXPECT_TRUE(same_process_alive(kept->record().pid, kept->record().start_time));
  stop(*kept, Millis(5'000));
  if (!GetParam()) stop(*lost, Millis(5'000));
}

INSTANTIATE_TEST_SUITE_P(Tracking, ProcessRuntimeTest, ::testing::Values(true, false),
                         [](const auto& param) { return param.param ? "Cgroup" : "ProcessGroup"; });

TEST(LogTail, FollowsAppendedLinesAndKeepsABoundedRing) {
  boost::asio::io_context io;
  const std::string path = temp_dir() + "/x.log";
  auto tail = std::make_shared<LogTail>(io.get_executor(), path, 3);
  tail->start();
  std::vector<std::string> seen;
  tail->subscribe([&](const LogLine& l) { seen.push_back(l.text); });
  {
    std::ofstream out(path, std::ios::app);
    out << "one\ntwo\nthree\nfour\npart";
  }
  ASSERT_TRUE(run_until(io, [&] { return seen.size() == 4; }));
  EXPECT_EQ((std::vector<std::string>{"one", "two", "three", "four"}), seen);
  const auto last = tail->last(10);
  ASSERT_EQ(3u, last.size());
  EXPECT_EQ("two", last[0].text);
  tail->note("started pid 1");
  EXPECT_EQ("part", tail->last(2)[0].text);
  EXPECT_EQ("gpuvisor: started pid 1", tail->last(2)[1].text);
}

}  // namespace
}  // namespace gpuvisor
