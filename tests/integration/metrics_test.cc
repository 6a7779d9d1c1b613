// /metrics through the real daemon, over the fake NVML library: after a proxied request that
// evicts another service, the scrape says so, in valid Prometheus text.
#include <gtest/gtest.h>

#include <fstream>
#include <regex>
#include <sstream>

#include "testkit/daemon.h"
#include "testkit/fake_gpu.h"

namespace gpuvisor::itest {
namespace {

std::string big(const std::string& name, int port) {
  const std::string p = std::to_string(port);
  return "  " + name + ":\n    command: [$TESTSVC, --port, \"" + p +
         "\", --vram-mb, \"16000\"]\n    vram_mb: 16000\n    health: {tcp: \"127.0.0.1:" + p +
         "\"}\n    proxy: {url: \"http://127.0.0.1:" + p + "\", models: [" + name + "-model]}\n";
}

TEST(Metrics, AScrapeTellsStatesEvictionsVramProxyTrafficAndJobs) {
  const std::string dir = make_temp_dir("metrics");
  FakeGpu gpu(dir);
  std::ofstream(dir + "/gpu/devices.json") << R"({"devices": [{"total_mb": 24576}]})";
  Daemon d("services:\n" + big("a", free_port()) + big("b", free_port()), dir);
  ASSERT_TRUE(d.start()) << d.stderr_text();
  ASSERT_EQ(0, d.cli({"ensure", "a"}).exit_code);
  const auto reply = d.call("POST", "/v1/chat/completions", R"({"model": "b-model"})");
  ASSERT_TRUE(reply);
  ASSERT_EQ(200u, reply->status) << reply->body;  // b had to evict a to fit

  const auto scrape = d.call("GET", "/metrics");
  ASSERT_TRUE(scrape);
  ASSERT_EQ(200u, scrape->status);
  const std::string& text = scrape->body;
  for (const char* line : {
           "gpuvisor_service_state{service=\"a\",state=\"stopped\"} 1",
           "gpuvisor_service_state{service=\"b\",state=\"busy\"} 1",
           "gpuvisor_evictions_total{service=\"a\",for=\"b\"} 1",
           "gpuvisor_proxy_requests_total{service=\"b\"} 1",
           "gpuvisor_proxy_responses_total{service=\"b\",code=\"200\"} 1",
           "gpuvisor_service_start_duration_seconds_count{service=\"b\"} 1",
           "gpuvisor_gpu_memory_total_bytes{gpu=\"0\",",
           "gpuvisor_service_gpu_memory_bytes{gpu=\"0\",service=\"b\"} 16777216000",
           "gpuvisor_jobs{state=\"pending\"} 0",
       }) {
    EXPECT_NE(std::string::npos, text.find(line)) << line << "\n" << text;
  }
  // Every line is a comment or NAME{LABELS} VALUE, and each family is declared once.
  const std::regex sample(R"(^[a-z_:][a-z0-9_:]*(\{[^}]*\})? [-+0-9.eEinfIN]+$)");
  std::istringstream lines(text);
  std::set<std::string> types;
  for (std::string line; std::getline(lines, line);) {
    if (line.rfind("# TYPE ", 0) == 0) {
      EXPECT_TRUE(types.insert(line.substr(7, line.find(' ', 7) - 7)).second) << line;
    } else if (line.rfind("# HELP ", 0) != 0) {
      EXPECT_TRUE(std::regex_match(line, sample)) << line;
    }
  }
  EXPECT_EQ("text/plain; version=0.0.4; charset=utf-8", scrape->headers.at("content-type"));
}

}  // namespace
}  // namespace gpuvisor::itest
