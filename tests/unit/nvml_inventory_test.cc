// NvmlInventory against the fake NVML library, loaded through the same dlopen path as the real
// libnvidia-ml.so.1. The fake's state is a directory this test writes (FAKE_NVML_DIR).
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "gpu/inventory.h"

namespace gpuvisor {
namespace {

class NvmlInventoryTest : public ::testing::Test {
 protected:
  void SetUp() override {
    static int counter = 0;
    dir_ = std::filesystem::path(::testing::TempDir()) /
           ("gv-nvml-" + std::to_string(getpid()) + "-" + std::to_string(++counter));
    std::filesystem::remove_all(dir_);
    std::filesystem::create_directories(dir_ / "holds");
    setenv("FAKE_NVML_DIR", dir_.c_str(), 1);
  }
  void TearDown() override { unsetenv("FAKE_NVML_DIR"); }

  void devices(const nlohmann::json& state) { std::ofstream(dir_ / "devices.json") << state; }
  void hold(const std::string& file, pid_t pid, unsigned gpu, unsigned mb) {
    std::ofstream(dir_ / "holds" / file) << nlohmann::json{{"pid", pid}, {"gpu", gpu}, {"mb", mb}};
  }
  std::unique_ptr<GpuInventory> open() { return open_nvml_inventory(GPUVISOR_FAKE_NVML); }

  std::filesystem::path dir_;
};

constexpr uint64_t kMiB = 1ULL << 20;

TEST_F(NvmlInventoryTest, WithoutStateThereIsOneSimulatedGpu) {
  auto snap = open()->snapshot();
  ASSERT_TRUE(snap.ok()) << snap.error().message;
  ASSERT_EQ(1u, snap->devices.size());
  EXPECT_EQ(24576 * kMiB, snap->devices[0].total_bytes);
  EXPECT_EQ(snap->devices[0].total_bytes, snap->devices[0].free_bytes);
  EXPECT_EQ("GPU-fake-0", snap->devices[0].uuid);
  EXPECT_TRUE(snap->processes.empty());
}

TEST_F(NvmlInventoryTest, EveryGpuAndTheProcessesHoldingItsMemory) {
  devices({{"devices",
            {{{"name", "Card A"}, {"total_mb", 24576}, {"base_used_mb", 500}, {"util_gpu", 30}},
             {{"name", "Card B"}, {"total_mb", 81920}}}}});
  hold("self.json", getpid(), 1, 1000);
  hold("gone.json", 999'999'999, 1, 5000);  // no such process: its memory is not counted
  auto snap = open()->snapshot();
  ASSERT_TRUE(snap.ok()) << snap.error().message;
  ASSERT_EQ(2u, snap->devices.size());
  EXPECT_EQ("Card A", snap->devices[0].name);
  EXPECT_EQ(500 * kMiB, snap->devices[0].used_bytes);
  EXPECT_EQ(30u, snap->devices[0].util_gpu_percent.value_or(0));
  EXPECT_EQ(1000 * kMiB, snap->devices[1].used_bytes);
  EXPECT_EQ(80920 * kMiB, snap->devices[1].free_bytes);
  ASSERT_EQ(1u, snap->processes.size());
  EXPECT_EQ(1u, snap->processes[0].gpu);  // measured on its own GPU, not on GPU 0
  EXPECT_EQ(getpid(), snap->processes[0].pid);
  EXPECT_EQ(1000 * kMiB, snap->processes[0].used_bytes.value_or(0));
}

TEST_F(NvmlInventoryTest, MoreProcessesThanTheFirstGuessAreAllRead) {
  for (int i = 0; i < 40; ++i) hold("p" + std::to_string(i) + ".json", getpid(), 0, 10);
  auto snap = open()->snapshot();
  ASSERT_TRUE(snap.ok()) << snap.error().message;
  EXPECT_EQ(40u, snap->processes.size());
  EXPECT_EQ(400 * kMiB, snap->devices[0].used_bytes);
}

TEST_F(NvmlInventoryTest, NoLibraryMeansNoInventoryWithTheReason) {
  auto inv = open_nvml_inventory("/nonexistent/libnvidia-ml.so.1");
  EXPECT_NE(std::string::npos, inv->describe().find("cannot load /nonexistent/libnvidia-ml.so.1"));
  auto snap = inv->snapshot();
  ASSERT_FALSE(snap.ok());
  EXPECT_EQ(ErrorCode::kUnavailable, snap.error().code);
  EXPECT_EQ(0u, snap.error().message.rfind("no GPU inventory: cannot load", 0));
}

TEST_F(NvmlInventoryTest, ALibraryThatIsNotNvmlIsNamed) {
  auto snap = open_nvml_inventory("libm.so.6")->snapshot();
  ASSERT_FALSE(snap.ok());
  EXPECT_NE(std::string::npos, snap.error().message.find("libm.so.6 lacks nvmlInit_v2"))
      << snap.error().message;
}

TEST_F(NvmlInventoryTest, InitFailureCarriesNvmlsOwnWords) {
  devices(nlohmann::json::parse(R"({"devices": [{}], "fail": {"nvmlInit_v2": 9}})"));
  auto snap = open()->snapshot();
  ASSERT_FALSE(snap.ok());
  EXPECT_NE(std::string::npos, snap.error().message.find("nvmlInit_v2 from"));
  EXPECT_NE(std::string::npos, snap.error().message.find("Driver Not Loaded (9)"))
      << snap.error().message;
}

TEST_F(NvmlInventoryTest, AFailingCallNamesTheGpuAndTheCall) {
  devices(nlohmann::json::parse(R"({"devices": [{}], "fail": {"nvmlDeviceGetMemoryInfo": 15}})"));
  auto snap = open()->snapshot();
  ASSERT_FALSE(snap.ok());
  EXPECT_EQ("GPU 0: nvmlDeviceGetMemoryInfo: GPU is lost (15)", snap.error().message);
}

TEST_F(NvmlInventoryTest, InconsistentMemoryIsRefusedNotBelieved) {
  devices({{"devices", {{{"memory", {{"total", 1000}, {"used", 5000}, {"free", 0}}}}}}});
  auto snap = open()->snapshot();
  ASSERT_FALSE(snap.ok());
  EXPECT_EQ("GPU 0: NVML memory reading is inconsistent (total 1000, used 5000, free 0 bytes)",
            snap.error().message);
}

}  // namespace
}  // namespace gpuvisor
