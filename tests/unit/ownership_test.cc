// The ownership snapshot as the daemon builds it: the supervisor's services and the registry's
// workers, each worker with its plugin's service priority and idle or busy as it says.
#include "resources/ownership.h"

#include <gtest/gtest.h>

#include "lib/supervisor_fixture.h"

namespace gpuvisor {
namespace {

class OwnershipTest : public SupervisorTest {
 protected:
  // Every PID is alive since the same instant and has one child, PID + 1.
  WorkerRegistry workers_{ProcessTable{[](pid_t) { return std::optional<uint64_t>(1); },
                                       [](pid_t pid) { return std::vector<pid_t>{pid + 1}; }}};
  Leases leases_{io_.get_executor(), asio_clock_, events_};
};

TEST_F(OwnershipTest, ServicesAndWorkersAreHeldByWhoRunsThem) {
  spec("llm").priority = 7;
  ASSERT_TRUE(wait(ensure("llm")));
  const pid_t llm = sup().get("llm")->pid;
  ASSERT_TRUE(workers_
                  .add({.id = "w-1",
                        .type = "asr",
                        .pid = 500,
                        .start_time = 1,
                        .plugin = "asr",
                        .service = "llm",
                        .status = "idle"})
                  .ok());
  ASSERT_TRUE(workers_
                  .add({.id = "w-2",
                        .type = "img",
                        .pid = 600,
                        .start_time = 1,
                        .plugin = "img",
                        .status = "running"})
                  .ok());
  OwnershipTracker tracker(sup(), workers_, leases_);
  const Ownership owners = tracker.snapshot();

  ASSERT_NE(nullptr, owners.find(llm));
  EXPECT_EQ("llm", owners.find(llm)->owner());
  const Holder* idle = owners.find(501);  // the worker's child is the worker's
  ASSERT_NE(nullptr, idle);
  EXPECT_EQ("worker:w-1", idle->owner());
  EXPECT_EQ("worker w-1 (plugin asr)", idle->label());
  EXPECT_EQ(7, idle->priority);  // its plugin's service's
  EXPECT_FALSE(idle->busy);
  const Holder* busy = owners.find(600);
  ASSERT_NE(nullptr, busy);
  EXPECT_EQ(0, busy->priority);  // a plugin with no service
  EXPECT_TRUE(busy->busy);
  EXPECT_EQ(nullptr, owners.find(4242));  // external
  EXPECT_EQ((std::vector<pid_t>{500, 501}), owners.pids_of("worker:w-1"));
}

TEST_F(OwnershipTest, OnlyWorkersAreEvictedThroughTheJobsLayer) {
  OwnershipTracker tracker(sup(), workers_, leases_);
  std::vector<std::string> asked;
  const Holder worker{HolderKind::kWorker, "w-1", "asr"};
  EXPECT_FALSE(tracker.evict(worker, "llm"));  // nothing wired yet
  tracker.set_evict_worker([&](const std::string& id, const std::string& why) {
    asked.push_back(id + " for " + why);
    return std::optional<Millis>(Millis(5000));
  });
  EXPECT_EQ(Millis(5000), tracker.evict(worker, "llm"));
  EXPECT_FALSE(tracker.evict(Holder{HolderKind::kService, "tts"}, "llm"));  // the supervisor's
  EXPECT_EQ(std::vector<std::string>{"w-1 for llm"}, asked);
}

}  // namespace
}  // namespace gpuvisor
