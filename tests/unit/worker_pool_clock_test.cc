// A worker pool's waits at the values users configure (minutes), on a FakeClock: the idle
// timeout and the restart backoff fire at their instant and not a millisecond before. The
// workers are real processes (the project's test worker); only time is simulated.
#include <gtest/gtest.h>

#include <map>
#include <set>

#include "core/clock.h"
#include "jobs/worker_pool.h"
#include "lib/fakes.h"
#include "lib/temp_dir.h"

namespace gpuvisor {
namespace {

using nlohmann::json;
using testing::run_until;

class WorkerPoolClock : public ::testing::Test {
 protected:
  void make_pool(const std::vector<std::string>& args = {}) {
    plugin_.id = "work_w";
    plugin_.category = "work";
    plugin_.mode = PluginMode::kWorker;
    plugin_.worker.command = {GPUVISOR_TESTWORKER};
    plugin_.worker.command.insert(plugin_.worker.command.end(), args.begin(), args.end());
    WorkerPool::Environment env{io_.get_executor(),
                                clock_,
                                dir_ + "/worker.log",
                                "",
                                events_,
                                registry_,
                                [] { return json::object(); },
                                ""};
    WorkerPool::JobEvents jobs{[](int64_t, pid_t) {},
                               [this](int64_t job, const json& m) {
                                 if (m.value("type", "") == "result") results_.insert(job);
                               },
                               [this](int64_t job, const std::string& why) { lost_[job] = why; }};
    pool_ = std::make_unique<WorkerPool>(plugin_, std::move(env), std::move(jobs));
  }
  size_t events(const std::string& type) const {
    size_t n = 0;
    for (const auto& e : events_.since(0)) n += e.type == type ? 1 : 0;
    return n;
  }
  // Lets real processes and pipes do their part while the fake time stands still.
  bool until(const std::function<bool()>& pred) { return run_until(io_, pred); }

  std::string dir_ = fresh_dir("pool-clock");
  boost::asio::io_context io_;
  FakeClock clock_;
  EventBus events_;
  WorkerRegistry registry_{ProcessTable::system()};
  PluginManifest plugin_;
  std::unique_ptr<WorkerPool> pool_;
  std::set<int64_t> results_;
  std::map<int64_t, std::string> lost_;
};

TEST_F(WorkerPoolClock, AnIdleWorkerStopsAtItsIdleTimeoutAndNotBefore) {
  plugin_.worker.idle_timeout = Millis(10 * 60'000);
  make_pool();
  pool_->execute(1, json::object());
  ASSERT_TRUE(until([&] { return results_.count(1) == 1; }));
  ASSERT_TRUE(
      until([&] { return registry_.all().size() == 1 && registry_.all()[0]->status == "idle"; }));
  clock_.advance(Millis(10 * 60'000 - 1));
  EXPECT_EQ("idle", registry_.all()[0]->status);
  clock_.advance(Millis(1));
  EXPECT_EQ("stopping", registry_.all()[0]->status);
  ASSERT_TRUE(until([&] { return pool_->size() == 0; }));
  EXPECT_EQ(1u, events("worker.exited"));
}

TEST_F(WorkerPoolClock, AStartAfterACrashWaitsOutTheBackoffToTheMillisecond) {
  plugin_.worker.backoff = Millis(60'000);
  plugin_.worker.backoff_max = Millis(600'000);
  make_pool({"--exit-on-init", "4"});
  pool_->execute(1, json::object());
  ASSERT_TRUE(until([&] { return lost_.count(1) == 1; }));
  EXPECT_EQ("the worker exited with status 4", lost_[1]);
  pool_->execute(2, json::object());
  io_.restart();
  io_.poll();
  EXPECT_EQ(1u, events("worker.started"));  // job 2 waits for the backoff
  clock_.advance(Millis(59'999));
  EXPECT_EQ(1u, events("worker.started"));
  clock_.advance(Millis(1));
  EXPECT_EQ(2u, events("worker.started"));
  ASSERT_TRUE(until([&] { return lost_.count(2) == 1; }));
  // The second crash in a row doubles it.
  pool_->execute(3, json::object());
  clock_.advance(Millis(119'999));
  EXPECT_EQ(2u, events("worker.started"));
  clock_.advance(Millis(1));
  EXPECT_EQ(3u, events("worker.started"));
}

}  // namespace
}  // namespace gpuvisor
