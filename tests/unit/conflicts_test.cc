#include "resources/conflicts.h"

#include <gtest/gtest.h>

namespace gpuvisor {
namespace {

Ownership llm_owns(pid_t pid) {
  Ownership owners;
  owners.add(Holder{HolderKind::kService, "llm"}, {pid});
  return owners;
}

constexpr uint64_t kGiB = 1ULL << 30;

std::vector<GpuStatus> classify(const std::vector<GpuProcess>& processes) {
  GpuSnapshot s;
  s.devices.push_back(GpuDevice{0, "GPU-a", "A", 24 * kGiB, 0, 24 * kGiB, {}, {}});
  s.devices.push_back(GpuDevice{1, "GPU-b", "B", 80 * kGiB, 0, 80 * kGiB, {}, {}});
  s.processes = processes;
  return classify_gpus(s, llm_owns(100), 45, [](pid_t) { return std::string("x"); });
}

TEST(Conflicts, AGpuMostlyHeldByOthersIsInConflictWithOursNamed) {
  const auto now = find_conflicts(classify({{0, 100, 2 * kGiB, GpuProcessKind::kCompute},
                                            {0, 200, 12 * kGiB, GpuProcessKind::kCompute},
                                            {1, 300, 12 * kGiB, GpuProcessKind::kCompute}}));
  ASSERT_EQ(1u, now.size());  // 12 of 80 GiB on GPU 1 is under the threshold
  const auto& c = now.at(0);
  EXPECT_EQ("GPU-a", c.uuid);
  EXPECT_EQ(12 * kGiB, c.external_bytes);
  ASSERT_EQ(1u, c.external.size());
  EXPECT_EQ(200, c.external[0].pid);
  ASSERT_EQ(1u, c.app.size());
  EXPECT_EQ("llm", c.to_json()["app"][0]["owner"]);
}

TEST(Conflicts, OnlyAppearingAndClearingAreChanges) {
  const auto a = find_conflicts(classify({{0, 200, 12 * kGiB, GpuProcessKind::kCompute}}));
  const auto b = find_conflicts(classify({{0, 201, 20 * kGiB, GpuProcessKind::kCompute}}));
  const auto none = find_conflicts(classify({}));
  EXPECT_EQ(1u, diff_conflicts(none, a).appeared.size());
  EXPECT_TRUE(diff_conflicts(none, a).cleared.empty());
  // Other processes, the same squeezed GPU: not news.
  EXPECT_TRUE(diff_conflicts(a, b).appeared.empty());
  EXPECT_TRUE(diff_conflicts(a, b).cleared.empty());
  const auto gone = diff_conflicts(b, none);
  ASSERT_EQ(1u, gone.cleared.size());
  EXPECT_EQ(0u, gone.cleared[0].gpu);
}

}  // namespace
}  // namespace gpuvisor
