// The planner is a pure function: each policy rule is one small table of GPUs and services.
#include "planner/planner.h"

#include <gtest/gtest.h>

namespace gpuvisor {
namespace {

constexpr uint64_t kGiB = 1ULL << 30;

PlanService svc(const std::string& name, int priority, uint64_t gib, int64_t last_used = 0) {
  PlanService s;
  s.name = name;
  s.priority = priority;
  s.need_bytes = gib * kGiB;
  s.last_used_ms = last_used;
  return s;
}

PlanService running(PlanService s, unsigned gpu) {
  s.running = true;
  s.gpus = {gpu};
  s.held_bytes = s.need_bytes;
  return s;
}

// The names of what a plan evicts, in order.
std::vector<std::string> evicted(const Plan& plan) {
  std::vector<std::string> out;
  for (const auto& e : plan.evict) out.push_back(e.name);
  return out;
}

// One 24 GiB GPU whose free memory is what the running services leave.
PlanInput one_gpu(std::vector<PlanService> services, uint64_t external_gib = 0) {
  PlanInput in;
  uint64_t used = external_gib * kGiB;
  for (const auto& s : services) {
    if (s.running) used += s.held_bytes;
  }
  in.devices = {{0, 24 * kGiB, 24 * kGiB - used}};
  in.services = std::move(services);
  return in;
}

TEST(Planner, FitsWithoutEvictingWhenThereIsRoom) {
  const auto plan = plan_ensure(one_gpu({running(svc("a", 1, 8), 0), svc("b", 1, 10)}), "b");
  ASSERT_TRUE(plan.ok) << plan.reason;
  EXPECT_TRUE(plan.evict.empty());
  EXPECT_EQ("start b on GPU 0", plan.reason);
}

TEST(Planner, AlreadyRunningIsANoOp) {
  const auto plan = plan_ensure(one_gpu({running(svc("a", 1, 8), 0)}), "a");
  EXPECT_TRUE(plan.ok);
  EXPECT_TRUE(plan.already_running);
}

TEST(Planner, EvictsLowestPriorityFirstThenLeastRecentlyUsed) {
  const auto in = one_gpu({running(svc("old", 5, 8, 100), 0), running(svc("new", 5, 8, 900), 0),
                           running(svc("low", 1, 8, 999), 0), svc("want", 10, 12)});
  const auto plan = plan_ensure(in, "want");
  ASSERT_TRUE(plan.ok) << plan.reason;
  EXPECT_EQ((std::vector<std::string>{"low", "old"}), evicted(plan));
}

TEST(Planner, WithinAPriorityKeepsWhatSavesTheMostReloadTimePerByte) {
  auto popular_slow = running(svc("vllm", 5, 8, 100), 0);  // least recently used...
  popular_slow.recent_uses = 10;
  popular_slow.reload_seconds = 120;
  auto rare_quick = running(svc("whisper", 5, 8, 900), 0);  // ...but this one is cheap to reload
  rare_quick.recent_uses = 1;
  rare_quick.reload_seconds = 5;
  const auto plan = plan_ensure(one_gpu({popular_slow, rare_quick, svc("want", 5, 12)}), "want");
  ASSERT_TRUE(plan.ok) << plan.reason;
  EXPECT_EQ(std::vector<std::string>{"whisper"}, evicted(plan));
}

TEST(Planner, EvictsNoMoreThanNeeded) {
  // Taking "small" first (lowest priority) is not enough; once "big" goes, "small" can stay.
  const auto in =
      one_gpu({running(svc("small", 1, 2), 0), running(svc("big", 2, 20), 0), svc("want", 5, 20)});
  const auto plan = plan_ensure(in, "want");
  ASSERT_TRUE(plan.ok) << plan.reason;
  EXPECT_EQ(std::vector<std::string>{"big"}, evicted(plan));
}

TEST(Planner, NeverEvictsHigherPriorityAndNamesIt) {
  const auto in = one_gpu({running(svc("comfyui", 100, 20), 0), svc("llm", 10, 18)});
  const auto plan = plan_ensure(in, "llm");
  EXPECT_FALSE(plan.ok);
  EXPECT_EQ(
      "cannot place llm (needs 18.0 GiB): GPU 0: 4.0 GiB free, at most 4.0 GiB after evicting "
      "what may go; in the way: comfyui (priority 100 > 10, 20.0 GiB)",
      plan.reason);
}

TEST(Planner, BusyServicesStayUnlessPreemptingStrictlyLowerIsAllowed) {
  auto busy = running(svc("batch", 1, 20), 0);
  busy.busy = true;
  auto in = one_gpu({busy, svc("llm", 10, 18)});
  auto plan = plan_ensure(in, "llm");
  EXPECT_FALSE(plan.ok);
  EXPECT_NE(std::string::npos, plan.reason.find("batch (busy, 20.0 GiB)")) << plan.reason;
  in.preempt_busy_lower = true;
  plan = plan_ensure(in, "llm");
  ASSERT_TRUE(plan.ok) << plan.reason;
  EXPECT_EQ(std::vector<std::string>{"batch"}, evicted(plan));
  // Equal priority is never preempted while busy.
  in.services[0].priority = 10;
  EXPECT_FALSE(plan_ensure(in, "llm").ok);
}

TEST(Planner, MembersOfThePhaseBeingEnsuredAreKept) {
  auto member = running(svc("tts", 1, 20), 0);
  member.keep = true;
  const auto plan = plan_ensure(one_gpu({member, svc("llm", 10, 18)}), "llm");
  EXPECT_FALSE(plan.ok);
  EXPECT_NE(std::string::npos, plan.reason.find("tts (same phase, 20.0 GiB)")) << plan.reason;
}

TEST(Planner, PuttingToSleepGoesBeforeStoppingWithinAPriority) {
  auto ollama = running(svc("ollama", 5, 12, 10), 0);  // the least recently used, yet kept...
  ollama.sleeps = true;
  const auto in = one_gpu({running(svc("sdxl", 5, 12, 900), 0), ollama, svc("llm", 10, 12)});
  const auto plan = plan_ensure(in, "llm");
  ASSERT_TRUE(plan.ok) << plan.reason;
  EXPECT_EQ(std::vector<std::string>{"ollama"}, evicted(plan));  // ...no: sleep is cheaper
  EXPECT_EQ("start llm on GPU 0 after putting ollama to sleep", plan.reason);
  // Priority still comes first: a lower-priority service is stopped before a sleeper.
  auto in2 = in;
  in2.services[0].priority = 1;
  const auto plan2 = plan_ensure(in2, "llm");
  EXPECT_EQ(std::vector<std::string>{"sdxl"}, evicted(plan2));
  EXPECT_EQ("start llm on GPU 0 after stopping sdxl", plan2.reason);
}

TEST(Planner, AnExternalServerWithNoSleepHookIsNeverEvicted) {
  auto vllm = running(svc("vllm", 1, 20), 0);
  vllm.unevictable = true;
  const auto plan = plan_ensure(one_gpu({vllm, svc("llm", 10, 12)}), "llm");
  EXPECT_FALSE(plan.ok);
  EXPECT_NE(std::string::npos, plan.reason.find("vllm (external, no sleep hook, 20.0 GiB)"))
      << plan.reason;
}

TEST(Planner, AServiceStartingForAnotherRequestYieldsOnlyToHigherPriority) {
  auto starting = running(svc("tts", 5, 20), 0);
  starting.held_bytes = 0;  // still loading
  starting.starting_for_request = true;
  auto plan = plan_ensure(one_gpu({starting, svc("llm", 5, 18)}), "llm");
  EXPECT_FALSE(plan.ok);
  EXPECT_NE(std::string::npos, plan.reason.find("tts (starting for a waiting ensure, 20.0 GiB)"))
      << plan.reason;
  plan = plan_ensure(one_gpu({starting, svc("vip", 50, 18)}), "vip");
  ASSERT_TRUE(plan.ok) << plan.reason;
  EXPECT_EQ(std::vector<std::string>{"tts"}, evicted(plan));
}

TEST(Planner, ExternalProcessesAreNamedWithTheirPid) {
  auto in = one_gpu({svc("llm", 10, 18)}, 12);
  in.external = {{0, 4242, "python3", 12 * kGiB}};
  const auto plan = plan_ensure(in, "llm");
  EXPECT_FALSE(plan.ok);
  EXPECT_NE(std::string::npos, plan.reason.find("external pid 4242 python3 (12.0 GiB)"))
      << plan.reason;
}

TEST(Planner, LargerThanAnyGpuIsRefusedAtOnce) {
  const auto plan = plan_ensure(one_gpu({svc("huge", 10, 30)}), "huge");
  EXPECT_FALSE(plan.ok);
  EXPECT_EQ("huge needs 30.0 GiB but the largest GPU has 24.0 GiB", plan.reason);
}

TEST(Planner, PrefersTheGpuThatNeedsTheLeastEviction) {
  PlanInput in;
  in.devices = {{0, 24 * kGiB, 4 * kGiB}, {1, 24 * kGiB, 12 * kGiB}};
  in.services = {running(svc("a", 1, 20), 0), running(svc("b", 1, 12), 1), svc("want", 5, 10)};
  auto plan = plan_ensure(in, "want");
  ASSERT_TRUE(plan.ok) << plan.reason;
  EXPECT_EQ(std::vector<unsigned>{1}, plan.gpus);
  EXPECT_TRUE(plan.evict.empty());
  // When both need an eviction, the one evicting less important work wins.
  in.devices[1].free_bytes = 0;
  in.services[1] = running(svc("b", 3, 24), 1);
  plan = plan_ensure(in, "want");
  ASSERT_TRUE(plan.ok) << plan.reason;
  EXPECT_EQ(std::vector<unsigned>{0}, plan.gpus);
  EXPECT_EQ(std::vector<std::string>{"a"}, evicted(plan));
}

TEST(Planner, APinnedServiceOnlyGoesToItsGpu) {
  PlanInput in;
  in.devices = {{0, 24 * kGiB, 24 * kGiB}, {1, 80 * kGiB, 0}};
  in.services = {running(svc("big", 1, 80), 1), svc("want", 5, 10)};
  in.services[1].pinned_gpus = {1};
  const auto plan = plan_ensure(in, "want");
  ASSERT_TRUE(plan.ok) << plan.reason;
  EXPECT_EQ(std::vector<unsigned>{1}, plan.gpus);
  EXPECT_EQ(std::vector<std::string>{"big"}, evicted(plan));
  in.services[1].pinned_gpus = {7};
  EXPECT_EQ("want is pinned to GPU 7, which does not exist", plan_ensure(in, "want").reason);
}

TEST(Planner, MemoryAStartingServiceWillTakeIsSpokenFor) {
  // "loading" holds 2 of its 16 GiB so far: NVML shows 22 GiB free, but only 8 are really free.
  auto loading = running(svc("loading", 50, 16), 0);
  loading.held_bytes = 2 * kGiB;
  auto in = one_gpu({loading, svc("want", 10, 10)});
  const auto plan = plan_ensure(in, "want");
  EXPECT_FALSE(plan.ok);
  EXPECT_NE(std::string::npos, plan.reason.find("8.0 GiB free")) << plan.reason;
}

TEST(Planner, EqualPriorityServicesSwapSoTwoThatDoNotFitTakeTurns) {
  const auto in = one_gpu({running(svc("a", 5, 16), 0), svc("b", 5, 16)});
  const auto plan = plan_ensure(in, "b");
  ASSERT_TRUE(plan.ok) << plan.reason;
  EXPECT_EQ(std::vector<std::string>{"a"}, evicted(plan));
  EXPECT_EQ("start b on GPU 0 after stopping a", plan.reason);
}

// A holder that is not a service (a plugin's worker) is planned by its name and said by its
// label, in a plan and in a refusal alike.
TEST(Planner, HoldersAreSaidByTheirLabel) {
  auto worker = running(svc("worker:w-1", 0, 16), 0);
  worker.label = "worker w-1 (plugin asr)";
  auto in = one_gpu({worker, svc("want", 0, 16)});
  auto plan = plan_ensure(in, "want");
  ASSERT_TRUE(plan.ok) << plan.reason;
  EXPECT_EQ(std::vector<std::string>{"worker:w-1"}, evicted(plan));
  EXPECT_EQ("start want on GPU 0 after stopping worker w-1 (plugin asr)", plan.reason);
  in.services[0].busy = true;
  plan = plan_ensure(in, "want");
  EXPECT_FALSE(plan.ok);
  EXPECT_NE(std::string::npos,
            plan.reason.find("in the way: worker w-1 (plugin asr) (busy, 16.0 GiB)"))
      << plan.reason;
}

// A lease takes free memory only, on the GPU it fits most tightly; starting services' memory is
// spoken for; a refusal names whatever holds memory there.
TEST(Planner, AReservationTakesOnlyFreeMemoryAndNamesWhatIsInTheWay) {
  PlanInput in;
  in.devices = {{0, 24 * kGiB, 10 * kGiB}, {1, 80 * kGiB, 70 * kGiB}};
  auto loading = running(svc("loading", 1, 8), 0);
  loading.held_bytes = 2 * kGiB;  // 6 GiB of GPU 0's 10 free are spoken for
  in.services = {running(svc("big", 1, 14), 0), loading};
  in.external = {{0, 42, "python3", 0}};
  auto plan = plan_reserve(in, 4 * kGiB, std::nullopt);
  ASSERT_TRUE(plan.ok) << plan.reason;
  EXPECT_EQ(std::vector<unsigned>{0}, plan.gpus);  // the tightest fit
  plan = plan_reserve(in, 5 * kGiB, 0u);
  EXPECT_FALSE(plan.ok);
  EXPECT_EQ(
      "cannot reserve 5.0 GiB: GPU 0: 4.0 GiB free; in the way: big (14.0 GiB), loading (8.0 "
      "GiB), external pid 42 python3 (0 MiB)",
      plan.reason);
  EXPECT_EQ(std::vector<unsigned>{1}, plan_reserve(in, 5 * kGiB, std::nullopt).gpus);
  EXPECT_EQ("cannot reserve 1.0 GiB: there is no GPU 7", plan_reserve(in, kGiB, 7u).reason);
}

}  // namespace
}  // namespace gpuvisor
