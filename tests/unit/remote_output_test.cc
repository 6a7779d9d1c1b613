#include <gtest/gtest.h>

#include "runtime/remote_runtime.h"

namespace gpuvisor {
namespace {

TEST(ProviderOutput, TheLastJsonLineIsTheAnswer) {
  const auto r = parse_provider_output(
      "creating H100 instance...\n{\"instance_id\":\"i-1\",\"status\":\"running\","
      "\"endpoint\":\"http://10.0.0.1:8000\",\"ssh_host\":\"10.0.0.1\",\"ssh_port\":22}\n",
      true);
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_EQ(r->instance_id, "i-1");
  EXPECT_EQ(r->status, "running");
  EXPECT_EQ(r->endpoint, "http://10.0.0.1:8000");
  EXPECT_EQ(r->ssh_host, "10.0.0.1");
  EXPECT_EQ(r->ssh_port, 22u);
  EXPECT_TRUE(parse_provider_output(R"({"status":"pending"})", false).ok());
}

TEST(ProviderOutput, WhatIsWrongIsNamedWithWhatItSaid) {
  const std::pair<const char*, const char*> bad[] = {
      {"", "the provider printed no JSON object (it printed nothing)"},
      {"Error: token expired\n",
       "the provider printed no JSON object (last line: Error: token "
       "expired)"},
      {R"({"status":"running"})", "the provider sent no instance_id"},
      {R"({"instance_id":7,"status":"running"})", "the provider sent an instance_id that is not"},
      {R"({"instance_id":"i","status":""})", "the provider sent no status"},
      {R"({"instance_id":"i","status":"running","ssh_port":70000})",
       "the provider sent an ssh_port that is not a port number"},
  };
  for (const auto& [output, why] : bad) {
    const auto r = parse_provider_output(output, true);
    ASSERT_FALSE(r.ok()) << output;
    EXPECT_EQ(0u, r.error().message.rfind(why, 0)) << r.error().message;
  }
}

}  // namespace
}  // namespace gpuvisor
