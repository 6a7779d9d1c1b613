#include "resources/gpu_status.h"

#include <gtest/gtest.h>

#include <fstream>

namespace gpuvisor {
namespace {

Ownership llm_owns(pid_t pid) {
  Ownership owners;
  owners.add(Holder{HolderKind::kService, "llm"}, {pid});
  return owners;
}

constexpr uint64_t kGiB = 1ULL << 30;

GpuSnapshot two_gpus() {
  GpuSnapshot s;
  s.devices.push_back(GpuDevice{0, "GPU-a", "A", 24 * kGiB, 0, 24 * kGiB, {}, {}});
  s.devices.push_back(GpuDevice{1, "GPU-b", "B", 80 * kGiB, 0, 80 * kGiB, {}, {}});
  return s;
}

std::string no_name(pid_t) {
  return "x";
}

TEST(GpuStatus, OursAndExternalAreToldApartByPid) {
  auto s = two_gpus();
  s.processes = {{0, 100, 10 * kGiB, GpuProcessKind::kCompute},
                 {0, 200, 1 * kGiB, GpuProcessKind::kCompute}};
  const auto gpus = classify_gpus(s, llm_owns(100), 45, no_name);
  ASSERT_EQ(2u, gpus.size());
  EXPECT_EQ(GpuState::kAppBusy, gpus[0].state);
  ASSERT_EQ(1u, gpus[0].app.size());
  EXPECT_EQ("llm", gpus[0].app[0].owner);
  EXPECT_EQ(10 * kGiB, gpus[0].app_bytes);
  ASSERT_EQ(1u, gpus[0].external.size());
  EXPECT_EQ(200, gpus[0].external[0].pid);
  EXPECT_EQ(GpuState::kAvailable, gpus[1].state);
}

TEST(GpuStatus, ExternalShareIsMeasuredAgainstEachGpuItself) {
  auto s = two_gpus();
  // 12 GiB is half of GPU 0 but 15% of GPU 1: only GPU 0 is external_busy.
  s.processes = {{0, 300, 12 * kGiB, GpuProcessKind::kCompute},
                 {1, 301, 12 * kGiB, GpuProcessKind::kGraphics}};
  const auto gpus = classify_gpus(s, {}, 45, no_name);
  EXPECT_EQ(GpuState::kExternalBusy, gpus[0].state);
  EXPECT_EQ(GpuState::kAvailable, gpus[1].state);
  EXPECT_EQ(12 * kGiB, gpus[1].external_bytes);
}

TEST(GpuStatus, TheThresholdIsInclusiveAndConfigurable) {
  auto s = two_gpus();
  s.processes = {{1, 300, 40 * kGiB, GpuProcessKind::kCompute}};  // exactly 50%
  EXPECT_EQ(GpuState::kExternalBusy, classify_gpus(s, {}, 50, no_name)[1].state);
  EXPECT_EQ(GpuState::kAvailable, classify_gpus(s, {}, 51, no_name)[1].state);
}

TEST(GpuStatus, UnknownUsageCountsAsNothingButIsListed) {
  auto s = two_gpus();
  s.processes = {{0, 300, std::nullopt, GpuProcessKind::kCompute}};
  const auto gpus = classify_gpus(s, {}, 45, no_name);
  EXPECT_EQ(0u, gpus[0].external_bytes);
  EXPECT_EQ(1u, gpus[0].external.size());
}

TEST(GpuStatus, SystemMemoryFromMeminfo) {
  const std::string path = ::testing::TempDir() + "gv-meminfo";
  std::ofstream(path)
      << "MemTotal:       24576000 kB\nMemFree: 1 kB\nMemAvailable:   20000000 kB\n";
  const auto m = read_system_memory(path);
  ASSERT_TRUE(m);
  EXPECT_EQ(24576000ULL * 1024, m->total_bytes);
  EXPECT_EQ(20000000ULL * 1024, m->available_bytes);
  std::ofstream(path) << "MemTotal: 1 kB\n";
  EXPECT_FALSE(read_system_memory(path));
}

}  // namespace
}  // namespace gpuvisor
