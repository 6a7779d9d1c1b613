// Placement under faults, with a fake GPU inventory: memory that never comes back, an
// inventory that fails, a refusal. The happy paths run end to end in integration/gpu_test.cc.
#include <gtest/gtest.h>

#include "lib/supervisor_fixture.h"

namespace gpuvisor {
namespace {

using testing::FakeInventory;

constexpr uint64_t kMiB = 1ULL << 20;

class PlacementTest : public SupervisorTest {
 protected:
  void SetUp() override {
    SupervisorTest::SetUp();
    for (auto& s : config_.services) {
      s.vram_mb = 16'000;
      s.stop_grace = Millis(10);
    }
    config_.daemon.vram_release_timeout = Millis(50);
    inventory_.next = gpu_with({});
    sup().set_gpu_inventory(&inventory_, false);
  }

  // One 24 GB GPU on which each given PID holds 16 GB.
  static GpuSnapshot gpu_with(const std::vector<pid_t>& holders) {
    GpuSnapshot s;
    const uint64_t total = 24'576 * kMiB;
    uint64_t used = 0;
    for (const pid_t pid : holders) {
      s.processes.push_back({0, pid, 16'000 * kMiB, GpuProcessKind::kCompute});
      used += 16'000 * kMiB;
    }
    s.devices.push_back({0, "GPU-0", "fake", total, used, total - used, {}, {}});
    return s;
  }

  pid_t pid_of(const std::string& name) { return runtime_.instances[name]->record().pid; }

  FakeInventory inventory_;
};

TEST_F(PlacementTest, MemoryThatNeverComesBackFailsTheEnsureInTime) {
  ASSERT_TRUE(wait(ensure("llm")));
  inventory_.next = gpu_with({pid_of("llm")});  // NVML keeps listing llm, even once it is gone
  auto tts = ensure("tts");
  ASSERT_TRUE(wait(tts));
  ASSERT_FALSE(tts->value().ok());
  EXPECT_EQ(ErrorCode::kTimeout, tts->value().error().code);
  EXPECT_EQ("GPU 0 memory was not freed in time after evicting for tts",
            tts->value().error().message);
  EXPECT_EQ(ServiceState::kStopped, state("llm"));
  EXPECT_EQ(ServiceState::kError, state("tts"));
  EXPECT_EQ(std::vector<std::string>{"llm"}, runtime_.started);  // tts was never started
}

// A failed service whose cleanup is still running holds its memory: the planner counts it,
// and may evict it, rather than call its process external.
TEST_F(PlacementTest, AFailedServiceStillBeingCleanedUpIsEvictableAndNamed) {
  ASSERT_TRUE(wait(ensure("llm")));
  runtime_.instances["llm"]->hold_stop = true;
  runtime_.instances["llm"]->exit(1);
  ASSERT_TRUE(wait_state("llm", ServiceState::kError));
  inventory_.next = gpu_with({pid_of("llm")});
  const auto plan = sup().plan("tts");
  ASSERT_TRUE(plan.ok()) << plan.error().message;
  EXPECT_TRUE(plan->ok) << plan->reason;
  ASSERT_EQ(1u, plan->evict.size());
  EXPECT_EQ("llm", plan->evict[0].name);
}

TEST_F(PlacementTest, TheStartWaitsUntilNvmlShowsTheMemoryFree) {
  ASSERT_TRUE(wait(ensure("llm")));
  inventory_.next = gpu_with({pid_of("llm")});
  auto tts = ensure("tts");
  ASSERT_TRUE(run_until(io_, [&] { return state("llm") == ServiceState::kStopped; }));
  EXPECT_EQ(1u, runtime_.started.size());  // llm is gone, but NVML still shows its memory
  inventory_.next = gpu_with({});          // the driver lets go
  ASSERT_TRUE(wait(tts));
  ASSERT_TRUE(tts->value().ok()) << tts->value().error().message;
  EXPECT_EQ(std::vector<unsigned>{0}, tts->value()->gpus);
}

TEST_F(PlacementTest, AFailingInventoryStartsWithoutPlacementAndSaysSo) {
  inventory_.next =
      make_error(ErrorCode::kUnavailable, "GPU 0: nvmlDeviceGetMemoryInfo: GPU is lost (15)");
  auto llm = ensure("llm");
  ASSERT_TRUE(wait(llm));
  ASSERT_TRUE(llm->value().ok());
  EXPECT_TRUE(llm->value()->gpus.empty());
  bool said = false;
  for (const auto& e : events_.since(0)) {
    said = said || e.data.value("reason", "").find("GPU is lost") != std::string::npos;
  }
  EXPECT_TRUE(said);
}

TEST_F(PlacementTest, ARefusalFailsTheEnsureWith409AndStartsNothing) {
  spec("llm").priority = 100;
  ASSERT_TRUE(wait(ensure("llm")));
  inventory_.next = gpu_with({pid_of("llm")});
  auto tts = ensure("tts");
  ASSERT_TRUE(wait(tts));
  ASSERT_FALSE(tts->value().ok());
  EXPECT_EQ(ErrorCode::kConflict, tts->value().error().code);
  EXPECT_NE(std::string::npos, tts->value().error().message.find("llm (priority 100 > 0"))
      << tts->value().error().message;
  EXPECT_EQ(ServiceState::kReady, state("llm"));
  EXPECT_EQ(1u, runtime_.started.size());
}

// Two requests that do not fit together are served in turn: the second waits in the queue
// while the first starts (never evicting it half-way), and gets its turn once the first is up.
TEST_F(PlacementTest, TwoRequestsThatDoNotFitTogetherAreServedInTurn) {
  auto llm = ensure("llm");
  auto tts = ensure("tts");  // same priority, both 16 of 24 GB, asked at the same moment
  ASSERT_TRUE(wait(llm));
  ASSERT_TRUE(llm->value().ok()) << llm->value().error().message;
  EXPECT_EQ(ServiceState::kReady, llm->value()->state);  // answered ready, not evicted half-way
  ASSERT_TRUE(wait(tts));
  ASSERT_TRUE(tts->value().ok()) << tts->value().error().message;
  EXPECT_EQ((std::vector<std::string>{"llm", "tts"}), runtime_.started);
  bool waited = false;
  for (const auto& e : events_.since(0)) {
    waited = waited || (e.type == "queue.enqueued" && e.data["service"] == "tts" &&
                        e.data["waiting_for"] == nlohmann::json{"llm"});
  }
  EXPECT_TRUE(waited);
}

// The ownership snapshot with the supervisor's services and one plugin worker, as the daemon's
// tracker builds it; evictions are recorded, and the worker goes as a real one would.
class FakeOwners : public OwnershipSource {
 public:
  explicit FakeOwners(Supervisor& sup) : sup_(sup) {}
  Ownership snapshot() override {
    Ownership out;
    for (const auto& [pid, name] : sup_.service_pids())
      out.add({HolderKind::kService, name}, {pid});
    if (worker_pid != 0) out.add(worker, {worker_pid});
    return out;
  }
  std::optional<Millis> evict(const Holder& holder, const std::string& why) override {
    evicted.push_back(holder.name + " for " + why);
    return Millis(10);
  }

  Holder worker{HolderKind::kWorker, "w-1", "asr"};
  pid_t worker_pid = 4242;
  std::vector<std::string> evicted;

 private:
  Supervisor& sup_;
};

TEST_F(PlacementTest, AnIdleWorkerHoldingTheMemoryIsEvictedLikeAService) {
  FakeOwners owners(sup());
  sup().set_ownership(&owners);
  inventory_.next = gpu_with({owners.worker_pid});
  auto llm = ensure("llm");
  ASSERT_TRUE(run_until(io_, [&] { return !owners.evicted.empty(); }));
  EXPECT_EQ(std::vector<std::string>{"w-1 for llm"}, owners.evicted);
  EXPECT_TRUE(runtime_.started.empty());  // not before NVML shows the worker's memory free
  owners.worker_pid = 0;
  inventory_.next = gpu_with({});
  ASSERT_TRUE(wait(llm));
  ASSERT_TRUE(llm->value().ok()) << llm->value().error().message;
  bool decided = false;
  for (const auto& e : events_.since(0)) {
    decided = decided || (e.type == "plan.decided" &&
                          e.data["evict"] == nlohmann::json::array({"worker:w-1"}) &&
                          e.data["reason"] ==
                              "start llm on GPU 0 after stopping worker w-1 "
                              "(plugin asr)");
  }
  EXPECT_TRUE(decided);
}

TEST_F(PlacementTest, ABusyWorkerMakesTheEnsureWaitInTheQueueUntilItIsIdle) {
  FakeOwners owners(sup());
  owners.worker.busy = true;
  sup().set_ownership(&owners);
  inventory_.next = gpu_with({owners.worker_pid});
  auto llm = ensure("llm");
  ASSERT_TRUE(run_until(io_, [&] { return sup().queue().size() == 1; }));
  EXPECT_EQ(std::vector<std::string>{"worker w-1 (plugin asr)"}, sup().queue()[0].waiting_for);
  EXPECT_NE(std::string::npos,
            sup().get("llm")->reason.find("waiting for busy worker w-1 (plugin asr) to go idle"))
      << sup().get("llm")->reason;
  EXPECT_TRUE(owners.evicted.empty());
  bool enqueued = false;
  for (const auto& e : events_.since(0)) enqueued = enqueued || e.type == "queue.enqueued";
  EXPECT_TRUE(enqueued);

  // Idle now: the queue moves, the worker goes, and llm starts once its memory is free.
  owners.worker.busy = false;
  ASSERT_TRUE(run_until(io_, [&] { return !owners.evicted.empty(); }));
  owners.worker_pid = 0;
  inventory_.next = gpu_with({});
  ASSERT_TRUE(wait(llm));
  ASSERT_TRUE(llm->value().ok()) << llm->value().error().message;
  EXPECT_TRUE(sup().queue().empty());
  bool dequeued = false;
  for (const auto& e : events_.since(0)) {
    dequeued = dequeued || (e.type == "queue.dequeued" && e.data["placed"] == true);
  }
  EXPECT_TRUE(dequeued);
}

// A worker of a plugin whose service outranks the requester stays, as that service would.
TEST_F(PlacementTest, AWorkerKeepsItsPluginsServicePriority) {
  FakeOwners owners(sup());
  owners.worker.priority = 10;
  sup().set_ownership(&owners);
  inventory_.next = gpu_with({owners.worker_pid});
  const auto plan = sup().plan("llm");
  ASSERT_TRUE(plan.ok());
  EXPECT_FALSE(plan->ok);
  EXPECT_NE(std::string::npos, plan->reason.find("worker w-1 (plugin asr) (priority 10 > 0"))
      << plan->reason;
}

}  // namespace
}  // namespace gpuvisor
