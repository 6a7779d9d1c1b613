// SPDX-License-Identifier: Apache-2.0
// Services that span GPUs (vLLM with --tensor-parallel-size 2): placed on a set of GPUs, evicting
// per GPU, told them all through CUDA_VISIBLE_DEVICES, and refused with each GPU's blockers named.
#include <gtest/gtest.h>

#include "testkit/daemon.h"
#include "testkit/fake_gpu.h"

namespace gpuvisor::itest {
namespace {

const char* kTwoGpus =
    R"({"devices": [{"name": "Sim 24G", "total_mb": 24576}, {"name": "Sim 24G", "total_mb": 24576}]})";

std::string service(const std::string& name, int port, int mb, int priority,
                    const std::string& extra = "") {
  return "  " + name + ":\n    command: [$TESTSVC, --port, \"" + std::to_string(port) +
         "\", --vram-mb, \"" + std::to_string(mb) + "\"]\n    vram_mb: " + std::to_string(mb) +
         "\n    priority: " + std::to_string(priority) +
         "\n    health: {http: \"http://127.0.0.1:" + std::to_string(port) + "/health\"}\n" + extra;
}

// Where the daemon says each of owner's processes holds memory, one entry per GPU.
std::vector<unsigned> gpus_held_by(Daemon& d, const std::string& owner) {
  std::vector<unsigned> out;
  const nlohmann::json processes = body(d.call("GET", "/api/v1/processes"))["processes"];
  for (const auto& p : processes) {
    if (p.value("owner", "") == owner) out.push_back(p["gpu"].get<unsigned>());
  }
  std::sort(out.begin(), out.end());
  return out;
}

TEST(Span, AServiceWithTwoGpusIsPlacedOnBothEvictingPerGpu) {
  const std::string dir = make_temp_dir("span");
  FakeGpu gpu(dir, kTwoGpus);
  Daemon d("services:\n" + service("a", free_port(), 16000, 1, "    gpu: 0\n") +
               service("b", free_port(), 6000, 1, "    gpu: 1\n") +
               service("tp", free_port(), 16000, 5, "    gpus: 2\n"),
           dir);
  ASSERT_TRUE(d.start()) << d.stderr_text();
  ASSERT_EQ(0, d.cli({"ensure", "a"}).exit_code);
  ASSERT_EQ(0, d.cli({"ensure", "b"}).exit_code);

  // GPU 0 must lose a; GPU 1 has room beside b.
  EXPECT_EQ("start tp on GPUs 0,1 after stopping a\n", d.cli({"plan", "tp"}).out);
  const auto tp = d.cli({"ensure", "tp"});
  ASSERT_EQ(0, tp.exit_code) << tp.err;
  EXPECT_EQ("stopped", d.service("a")["state"]);
  EXPECT_EQ("ready", d.service("b")["state"]);
  const auto svc = d.service("tp");
  EXPECT_EQ(nlohmann::json({0, 1}), svc["gpus"]) << svc.dump();
  // The process was told both GPUs, and holds its share on each.
  EXPECT_EQ((std::vector<unsigned>{0, 1}), gpus_held_by(d, "tp"));
  EXPECT_NE(std::string::npos, d.cli({"status", "tp"}).out.find("0,1"));
  // Measured per GPU: what it holds on one, not the sum over both.
  EXPECT_TRUE(eventually(
      [&] { return d.service("tp")["measured_vram_bytes"].get<uint64_t>() == 16000ULL << 20; },
      20s))
      << d.service("tp").dump();
}

TEST(Span, NoPairThatFitsIsRefusedNamingWhatBlocksEachGpu) {
  const std::string dir = make_temp_dir("spanno");
  FakeGpu gpu(dir, kTwoGpus);
  Daemon d("services:\n" + service("hi0", free_port(), 16000, 9, "    gpu: 0\n") +
               service("hi1", free_port(), 16000, 9, "    gpu: 1\n") +
               service("tp", free_port(), 16000, 5, "    gpu: [0, 1]\n"),
           dir);
  ASSERT_TRUE(d.start()) << d.stderr_text();
  ASSERT_EQ(0, d.cli({"ensure", "hi0"}).exit_code);
  ASSERT_EQ(0, d.cli({"ensure", "hi1"}).exit_code);
  const auto refused = d.cli({"ensure", "tp"});
  EXPECT_EQ(1, refused.exit_code);
  EXPECT_NE(std::string::npos, refused.err.find("GPU 0:")) << refused.err;
  EXPECT_NE(std::string::npos, refused.err.find("hi0 (priority 9 > 5")) << refused.err;
  EXPECT_NE(std::string::npos, refused.err.find("GPU 1:")) << refused.err;
  EXPECT_NE(std::string::npos, refused.err.find("hi1 (priority 9 > 5")) << refused.err;
  EXPECT_EQ("ready", d.service("hi0")["state"]);
  EXPECT_EQ("ready", d.service("hi1")["state"]);
}

TEST(Span, MoreGpusThanTheMachineHasIsRefusedAtOnce) {
  const std::string dir = make_temp_dir("spanmany");
  FakeGpu gpu(dir, kTwoGpus);
  Daemon d("services:\n" + service("tp4", free_port(), 8000, 5, "    gpus: 4\n"), dir);
  ASSERT_TRUE(d.start()) << d.stderr_text();
  const auto refused = d.cli({"ensure", "tp4"});
  EXPECT_EQ(1, refused.exit_code);
  EXPECT_NE(std::string::npos, refused.err.find("tp4 needs 4 GPUs")) << refused.err;
}

}  // namespace
}  // namespace gpuvisor::itest
