// SPDX-License-Identifier: Apache-2.0
// What `gpuvisor ensure` shows while it waits, from the event stream: a line per step on stderr
// off a terminal, one line redrawn in place on one (a real pseudo-terminal, through util-linux's
// script), nothing with --quiet; stdout has the result alone either way. The wait is a queue
// behind a busy service, an eviction and a start: two 16 GB services on a simulated 24 GB GPU.
#include <gtest/gtest.h>
#include <stdio.h>

#include <future>

#include "testkit/daemon.h"
#include "testkit/fake_gpu.h"

namespace gpuvisor::itest {
namespace {

std::string two_services() {
  std::string yaml = "services:\n";
  for (const auto& [name, priority] : {std::pair{"a", 10}, std::pair{"b", 20}}) {
    const std::string port = std::to_string(free_port());
    yaml +=
        std::string("  ") + name + ":\n    command: [$TESTSVC, --port, \"" + port +
        "\", --vram-mb, \"16000\", --ready-after, \"600\"]\n    vram_mb: 16000\n    priority: " +
        std::to_string(priority) + "\n    health: {http: \"http://127.0.0.1:" + port +
        "/health\", interval: 200ms}\n    proxy: {url: \"http://127.0.0.1:" + port + "\"}\n";
  }
  return yaml;
}

// a streams for about 1.5 s: b's ensure queues behind it, then evicts it.
std::future<Result<HttpReply>> keep_a_busy(Daemon& d) {
  auto stream = std::async(std::launch::async, [&d] {
    return d.call("GET", "/upstream/a/stream?n=15&interval_ms=100");
  });
  EXPECT_TRUE(d.wait_state("a", "busy"));
  return stream;
}

TEST(Progress, OffATerminalEachStepIsALineOnStderrAndStdoutHasTheResultAlone) {
  const std::string dir = make_temp_dir("progress");
  FakeGpu gpu(dir, R"({"devices": [{"name": "Sim 24G", "total_mb": 24576}]})");
  Daemon d(two_services(), dir);
  ASSERT_TRUE(d.start()) << d.stderr_text();
  auto stream = keep_a_busy(d);
  const auto ensured = d.cli({"ensure", "b"});
  ASSERT_EQ(0, ensured.exit_code) << ensured.err;
  EXPECT_EQ(0u, ensured.out.find("b is ready (pid ")) << ensured.out;
  EXPECT_EQ(1, std::count(ensured.out.begin(), ensured.out.end(), '\n')) << ensured.out;
  for (const char* step : {"] b: queued behind busy a\n", "] b: placed on GPU 0, evicting a\n",
                           "] b: ready: health check passed"}) {
    EXPECT_NE(std::string::npos, ensured.err.find(step)) << step << " in:\n" << ensured.err;
  }
  EXPECT_EQ(std::string::npos, ensured.err.find('\r')) << ensured.err;  // no live line
  ASSERT_TRUE(stream.get().ok());

  const auto quiet = d.cli({"stop", "b", "--quiet"});
  EXPECT_EQ(0, quiet.exit_code) << quiet.err;
  EXPECT_EQ("", quiet.err);
}

TEST(Progress, OnATerminalOneLineIsRedrawnWithTheElapsedTimeAndTheLastLogLine) {
  const std::string dir = make_temp_dir("progresstty");
  FakeGpu gpu(dir, R"({"devices": [{"name": "Sim 24G", "total_mb": 24576}]})");
  Daemon d(two_services(), dir);
  ASSERT_TRUE(d.start()) << d.stderr_text();
  auto stream = keep_a_busy(d);
  // script gives the command a pseudo-terminal and copies what it writes there to stdout.
  const std::string command =
      "script -qec '" GPUVISOR_BIN " ensure b --url " + d.url() + "' /dev/null";
  FILE* pipe = popen(command.c_str(), "r");
  ASSERT_NE(nullptr, pipe);
  std::string screen;
  char chunk[4096];
  for (size_t n; (n = fread(chunk, 1, sizeof chunk, pipe)) > 0;) screen.append(chunk, n);
  EXPECT_EQ(0, pclose(pipe)) << screen;
  EXPECT_NE(std::string::npos, screen.find("\r[")) << screen;
  EXPECT_NE(std::string::npos, screen.find("\x1b[K")) << screen;
  EXPECT_NE(std::string::npos, screen.find("b: queued behind busy a")) << screen;
  EXPECT_NE(std::string::npos, screen.find(" | log: testsvc")) << screen;
  // The live line is cleared before the result, which stands alone on its line.
  EXPECT_NE(std::string::npos, screen.find("\r\x1b[Kb is ready (pid ")) << screen;
  ASSERT_TRUE(stream.get().ok());
}

}  // namespace
}  // namespace gpuvisor::itest
