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

// Running on several GPUs at once, holding need_bytes on each.
PlanService spanning(PlanService s, std::vector<unsigned> gpus) {
  s.running = true;
  s.gpu_count = static_cast<unsigned>(gpus.size());
  s.gpus = std::move(gpus);
  s.held_bytes = s.need_bytes;
  return s;
}

PlanService wide(PlanService s, unsigned gpu_count) {
  s.gpu_count = gpu_count;
  return s;
}

// Asleep on gpu, keeping residual_gib there.
PlanService asleep(PlanService s, unsigned gpu, uint64_t residual_gib) {
  s.sleeping = true;
  s.sleeps = true;
  s.gpus = {gpu};
  s.held_bytes = s.residual_bytes = residual_gib * kGiB;
  return s;
}

// Awake, with a sleep hook that leaves residual_gib.
PlanService sleeper(PlanService s, unsigned gpu, uint64_t residual_gib) {
  s = running(std::move(s), gpu);
  s.sleeps = true;
  s.residual_bytes = residual_gib * kGiB;
  return s;
}

// count 24 GiB GPUs whose free memory is what the services leave; externals on GPU 0.
PlanInput gpus_of(unsigned count, std::vector<PlanService> services, uint64_t external_gib = 0) {
  PlanInput in;
  for (unsigned g = 0; g < count; ++g) {
    uint64_t used = g == 0 ? external_gib * kGiB : 0;
    for (const auto& s : services) {
      const bool there = std::find(s.gpus.begin(), s.gpus.end(), g) != s.gpus.end();
      if ((s.running || s.sleeping) && there) used += s.held_bytes;
    }
    in.devices.push_back({g, 24 * kGiB, 24 * kGiB - used});
  }
  in.services = std::move(services);
  return in;
}

PlanInput one_gpu(std::vector<PlanService> services, uint64_t external_gib = 0) {
  return gpus_of(1, std::move(services), external_gib);
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

TEST(Planner, ALargeServiceIsNotEvictedForItsSizeAlone) {
  // Either frees the 8 GiB wanted. Per GiB, big saves less (32 s / 14 GiB against 20 s / 8 GiB)
  // and would go; but what it frees beyond the hole is worth less than its size, and per
  // GiB^0.75 small saves less (20 / 4.8 against 32 / 7.2).
  auto big = running(svc("big", 5, 14, 900), 0);
  big.recent_uses = 1;
  big.reload_seconds = 32;
  auto small = running(svc("small", 5, 8, 100), 0);
  small.recent_uses = 1;
  small.reload_seconds = 20;
  const auto plan = plan_ensure(one_gpu({big, small, svc("want", 5, 8)}), "want");
  ASSERT_TRUE(plan.ok) << plan.reason;
  EXPECT_EQ(std::vector<std::string>{"small"}, evicted(plan));
}

TEST(Planner, AServiceIdleForLongCountsAsCooledWhateverItsRecentUses) {
  // An hour ago "was_hot" was used often, and its count, halving every 30 minutes, is still
  // above "steady"'s. But idle for an hour it counts for at most 2 uses per hour's worth of the
  // count's time constant (2 x 2597 s / 3600 s = 1.4), less than steady's 3.
  constexpr int64_t kNow = 10'000'000;
  auto was_hot = running(svc("was_hot", 5, 8, kNow - 3'600'000), 0);
  was_hot.recent_uses = 10;
  was_hot.reload_seconds = 30;
  auto steady = running(svc("steady", 5, 8, kNow - 60'000), 0);
  steady.recent_uses = 3;
  steady.reload_seconds = 30;
  auto in = one_gpu({was_hot, steady, svc("want", 5, 12)});
  in.now_ms = kNow;
  const auto plan = plan_ensure(in, "want");
  ASSERT_TRUE(plan.ok) << plan.reason;
  EXPECT_EQ(std::vector<std::string>{"was_hot"}, evicted(plan));
  in.now_ms = 0;  // now unknown: the count alone decides
  EXPECT_EQ(std::vector<std::string>{"steady"}, evicted(plan_ensure(in, "want")));
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

// --- Services that span several GPUs ---

TEST(Planner, ASpanningServiceTakesGpusThatNeedNoEviction) {
  const auto in = gpus_of(3, {running(svc("a", 1, 20), 1), wide(svc("d", 5, 16), 2)});
  const auto plan = plan_ensure(in, "d");
  ASSERT_TRUE(plan.ok) << plan.reason;
  EXPECT_EQ((std::vector<unsigned>{0, 2}), plan.gpus);
  EXPECT_TRUE(plan.evict.empty());
  EXPECT_EQ("start d on GPUs 0,2", plan.reason);
}

TEST(Planner, ASpanningServiceTakesTheSetOfGpusThatIsCheapestToFree) {
  const auto in = gpus_of(3, {running(svc("a", 1, 20), 0), running(svc("b", 3, 20), 1),
                              running(svc("c", 1, 20), 2), wide(svc("d", 5, 16), 2)});
  const auto plan = plan_ensure(in, "d");
  ASSERT_TRUE(plan.ok) << plan.reason;
  EXPECT_EQ((std::vector<unsigned>{0, 2}), plan.gpus);
  EXPECT_EQ((std::vector<std::string>{"a", "c"}), evicted(plan));
  EXPECT_EQ("start d on GPUs 0,2 after stopping a, c", plan.reason);
}

TEST(Planner, EvictingAVictimThatSpansFreesItsMemoryOnAllItsGpus) {
  const auto in = gpus_of(2, {spanning(svc("big", 1, 20), {0, 1}), wide(svc("d", 5, 16), 2)});
  const auto plan = plan_ensure(in, "d");
  ASSERT_TRUE(plan.ok) << plan.reason;
  EXPECT_EQ((std::vector<unsigned>{0, 1}), plan.gpus);
  EXPECT_EQ(std::vector<std::string>{"big"}, evicted(plan));  // once, for both GPUs
}

TEST(Planner, TooFewGpusLargeEnoughToSpanIsRefusedAtOnce) {
  PlanInput in;
  in.devices = {{0, 24 * kGiB, 24 * kGiB}, {1, 80 * kGiB, 80 * kGiB}};
  in.services = {wide(svc("d", 5, 30), 2)};
  EXPECT_EQ("d needs 2 GPUs with 30.0 GiB each but only 1 GPU has that much",
            plan_ensure(in, "d").reason);
  in.devices.push_back({2, 80 * kGiB, 80 * kGiB});
  in.services = {wide(svc("d", 5, 30), 3)};
  EXPECT_EQ("d needs 3 GPUs with 30.0 GiB each but only 2 GPUs have that much",
            plan_ensure(in, "d").reason);
}

TEST(Planner, ARefusalToSpanNamesWhatBlocksEachGpu) {
  const auto in = gpus_of(2, {running(svc("comfyui", 100, 20), 0), running(svc("tts", 50, 20), 1),
                              wide(svc("d", 10, 16), 2)});
  const auto plan = plan_ensure(in, "d");
  EXPECT_FALSE(plan.ok);
  EXPECT_EQ(
      "cannot place d (needs 16.0 GiB on each of 2 GPUs; room can be made on 0): GPU 0: 4.0 GiB "
      "free, at most 4.0 GiB after evicting what may go; in the way: comfyui (priority 100 > 10, "
      "20.0 GiB); GPU 1: 4.0 GiB free, at most 4.0 GiB after evicting what may go; in the way: "
      "tts (priority 50 > 10, 20.0 GiB)",
      plan.reason);
}

TEST(Planner, ASpanningServiceStaysOnTheGpusItIsPinnedTo) {
  auto in = gpus_of(3, {wide(svc("d", 5, 16), 2)});
  in.services[0].pinned_gpus = {1, 2};
  EXPECT_EQ((std::vector<unsigned>{1, 2}), plan_ensure(in, "d").gpus);
  in.services[0].pinned_gpus = {2, 7};
  EXPECT_EQ("d needs 2 GPUs but is pinned to GPUs 2,7, and GPU 7 does not exist",
            plan_ensure(in, "d").reason);
  in.services[0].pinned_gpus = {2};
  EXPECT_EQ("d needs 2 GPUs but is pinned to GPU 2 only", plan_ensure(in, "d").reason);
}

TEST(Planner, ASpanningServiceAlreadyRunningStaysWhereItRuns) {
  const auto plan = plan_ensure(gpus_of(3, {spanning(svc("d", 5, 16), {1, 2})}), "d");
  ASSERT_TRUE(plan.already_running) << plan.reason;
  EXPECT_EQ((std::vector<unsigned>{1, 2}), plan.gpus);
  EXPECT_EQ("d already runs on GPUs 1,2", plan.reason);
}

// --- Sleep, stop or keep ---

// A sleeper holds its residual, which NVML already counts: nothing more is spoken for, and a
// refusal names it.
TEST(Planner, ASleepersResidualIsHeldWhereItSleeps) {
  auto in = one_gpu({asleep(svc("x", 9, 16), 0, 2), svc("want", 5, 20)});
  auto plan = plan_ensure(in, "want");
  ASSERT_TRUE(plan.ok) << plan.reason;
  EXPECT_TRUE(plan.evict.empty());
  in.services[1].need_bytes = 23 * kGiB;
  plan = plan_ensure(in, "want");
  EXPECT_FALSE(plan.ok);
  EXPECT_EQ(
      "cannot place want (needs 23.0 GiB): GPU 0: 22.0 GiB free, at most 22.0 GiB after "
      "evicting what may go; in the way: x (priority 9 > 5, 2.0 GiB)",
      plan.reason);
}

TEST(Planner, ASleeperWakesWhereItSleepsNeedingOnlyWhatItsResidualLacks) {
  // d keeps 2 of its 12 GiB on GPU 1, where a leaves 8 free; GPU 0 is empty, but d cannot move.
  auto in = gpus_of(2, {asleep(svc("d", 5, 12), 1, 2), running(svc("a", 1, 14), 1)});
  auto plan = plan_ensure(in, "d");
  ASSERT_TRUE(plan.ok) << plan.reason;
  EXPECT_TRUE(plan.wake);
  EXPECT_EQ(std::vector<unsigned>{1}, plan.gpus);
  EXPECT_EQ(std::vector<std::string>{"a"}, evicted(plan));
  EXPECT_EQ("wake d on GPU 1 after stopping a", plan.reason);
  in.devices[1].free_bytes += 2 * kGiB;  // 10 free: exactly what d lacks
  plan = plan_ensure(in, "d");
  ASSERT_TRUE(plan.ok) << plan.reason;
  EXPECT_TRUE(plan.evict.empty());
  EXPECT_EQ("wake d on GPU 1", plan.reason);
}

TEST(Planner, SleepersAreStoppedBeforeAnythingAwakeIsTouched) {
  // x can be put to sleep and is the least recently used awake one, yet the sleeper goes first.
  const auto in = one_gpu({running(svc("y", 5, 8, 900), 0), sleeper(svc("x", 5, 10, 1), 0, 1),
                           asleep(svc("s", 5, 12, 500), 0, 4), svc("want", 5, 6)});
  const auto plan = plan_ensure(in, "want");
  ASSERT_TRUE(plan.ok) << plan.reason;
  ASSERT_EQ(std::vector<std::string>{"s"}, evicted(plan));
  EXPECT_FALSE(plan.evict[0].sleep);
  EXPECT_EQ("start want on GPU 0 after stopping s", plan.reason);
}

TEST(Planner, AServiceIsPutToSleepOnlyWhereThatFreesEnough) {
  // Asleep, x keeps 6 of its 20 GiB: a sleep frees 14, a stop all 20.
  auto in = one_gpu({sleeper(svc("x", 1, 20), 0, 6), svc("want", 5, 16)});
  auto plan = plan_ensure(in, "want");
  ASSERT_EQ(1u, plan.evict.size()) << plan.reason;
  EXPECT_TRUE(plan.evict[0].sleep);
  EXPECT_EQ("start want on GPU 0 after putting x to sleep", plan.reason);
  in.services[1].need_bytes = 20 * kGiB;
  plan = plan_ensure(in, "want");
  ASSERT_EQ(1u, plan.evict.size()) << plan.reason;
  EXPECT_FALSE(plan.evict[0].sleep);
  EXPECT_EQ("start want on GPU 0 after stopping x", plan.reason);
}

TEST(Planner, OnlyTheSleepersThatMustBeStoppedAreStopped) {
  // Asleep, each keeps 4 of 12 GiB: both asleep free 16, too little for 20; stopping x and
  // putting y to sleep frees 20.
  const auto in = one_gpu({sleeper(svc("x", 1, 12, 100), 0, 4), sleeper(svc("y", 1, 12, 900), 0, 4),
                           svc("want", 5, 20)});
  const auto plan = plan_ensure(in, "want");
  ASSERT_TRUE(plan.ok) << plan.reason;
  ASSERT_EQ((std::vector<std::string>{"x", "y"}), evicted(plan));
  EXPECT_FALSE(plan.evict[0].sleep);
  EXPECT_TRUE(plan.evict[1].sleep);
  EXPECT_EQ("start want on GPU 0 after putting y to sleep, stopping x", plan.reason);
}

TEST(Planner, TheGpuWhoseVictimsCostTheLeastFutureWaitWins) {
  auto popular = running(svc("popular", 1, 20), 0);
  popular.recent_uses = 10;
  popular.reload_seconds = 60;
  auto rare = running(svc("rare", 1, 20), 1);
  rare.recent_uses = 1;
  rare.reload_seconds = 60;
  const auto plan = plan_ensure(gpus_of(2, {popular, rare, svc("want", 5, 16)}), "want");
  ASSERT_TRUE(plan.ok) << plan.reason;
  EXPECT_EQ(std::vector<unsigned>{1}, plan.gpus);
  EXPECT_EQ(std::vector<std::string>{"rare"}, evicted(plan));
}

TEST(Planner, PuttingToSleepCostsAWakeNotAReload) {
  auto c = running(svc("c", 1, 20), 0);
  c.recent_uses = 1;
  c.reload_seconds = 60;
  auto x = sleeper(svc("x", 1, 20), 1, 0);
  x.recent_uses = 10;
  x.wake_seconds = 5;      // 50 s of waking ahead...
  x.reload_seconds = 100;  // ...not 1000 of reloading
  const auto plan = plan_ensure(gpus_of(2, {c, x, svc("want", 5, 16)}), "want");
  ASSERT_TRUE(plan.ok) << plan.reason;
  EXPECT_EQ(std::vector<unsigned>{1}, plan.gpus);
  EXPECT_EQ("start want on GPU 1 after putting x to sleep", plan.reason);
}

TEST(Planner, StoppingASleeperCostsItsReloadLessItsWake) {
  auto c = running(svc("c", 1, 20), 0);
  c.recent_uses = 1;
  c.reload_seconds = 50;
  auto s = asleep(svc("s", 1, 22), 1, 20);
  s.recent_uses = 4;
  s.reload_seconds = 60;
  s.wake_seconds = 50;  // 4 x 10 s more than the wake it would have had
  const auto plan = plan_ensure(gpus_of(2, {c, s, svc("want", 5, 16)}), "want");
  ASSERT_TRUE(plan.ok) << plan.reason;
  EXPECT_EQ(std::vector<unsigned>{1}, plan.gpus);
  EXPECT_EQ("start want on GPU 1 after stopping s", plan.reason);
}

TEST(Planner, AReservationCountsASleepersResidualAsHeld) {
  const auto in = one_gpu({asleep(svc("x", 1, 16), 0, 6)});
  EXPECT_TRUE(plan_reserve(in, 10 * kGiB, std::nullopt).ok);  // its 10 GiB more are not spoken for
  EXPECT_EQ("cannot reserve 20.0 GiB: GPU 0: 18.0 GiB free; in the way: x (6.0 GiB)",
            plan_reserve(in, 20 * kGiB, std::nullopt).reason);
}

TEST(Planner, APopularSleeperStaysAsleepWhenSomethingAwakeIsCheaperToLose) {
  // Stopping llm frees 2 GiB but turns its next 0.3 s wake into a 90 s load; whisper reloads in
  // 8 s and is rarely used.
  auto llm = asleep(svc("llm", 1, 20), 0, 2);
  llm.recent_uses = 10;
  llm.reload_seconds = 90;
  llm.wake_seconds = 0.3;
  auto whisper = running(svc("whisper", 1, 4), 0);
  whisper.recent_uses = 1;
  whisper.reload_seconds = 8;
  const auto plan = plan_ensure(one_gpu({llm, whisper, svc("want", 5, 20)}), "want");
  ASSERT_TRUE(plan.ok) << plan.reason;
  EXPECT_EQ(std::vector<std::string>{"whisper"}, evicted(plan));
  EXPECT_EQ("start want on GPU 0 after stopping whisper", plan.reason);
}

TEST(Planner, ARefusalThatOnlyBusyServicesCauseSaysWhomToWaitFor) {
  auto busy = running(svc("a", 1, 16), 0);
  busy.busy = true;
  const auto plan = plan_ensure(one_gpu({busy, svc("b", 5, 16)}), "b");
  EXPECT_FALSE(plan.ok);
  EXPECT_EQ(std::vector<std::string>{"a"}, plan.waiting_for);
}

TEST(Planner, ARefusalThatWaitingCannotCureWaitsForNobody) {
  auto busy = running(svc("a", 1, 8), 0);
  busy.busy = true;
  // vip outranks b: a going idle would not be enough.
  const auto plan =
      plan_ensure(one_gpu({busy, running(svc("vip", 9, 12), 0), svc("b", 5, 16)}), "b");
  EXPECT_FALSE(plan.ok);
  EXPECT_TRUE(plan.waiting_for.empty()) << plan.reason;
  // Too large for any GPU: no wait helps either.
  EXPECT_TRUE(plan_ensure(one_gpu({busy, svc("huge", 5, 30)}), "huge").waiting_for.empty());
}

}  // namespace
}  // namespace gpuvisor
