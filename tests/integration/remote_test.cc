// Remote services against the project's pretend cloud provider (a script with the shape of a
// provider's CLI): provisioning, cost, budget, idle termination and the provider's faults.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "testkit/daemon.h"

namespace gpuvisor::itest {
namespace {

const std::string kProvider = std::string(GPUVISOR_BIN_DIR) + "/gpuvisor-fake-provider";

// The provider's state, in the test's directory.
struct Provider {
  explicit Provider(const std::string& test_dir) : dir(test_dir + "/provider") {
    std::filesystem::create_directories(this->dir);
    setenv("FAKE_PROVIDER_DIR", this->dir.c_str(), 1);
  }
  ~Provider() { unsetenv("FAKE_PROVIDER_DIR"); }
  void fault(const std::string& name, const std::string& text = "") const {
    std::ofstream(dir + "/" + name) << text;
  }
  std::string instance(const std::string& id) const {
    std::ifstream in(dir + "/" + id);
    std::string s;
    in >> s;
    return s;
  }
  std::string dir;
};

std::string remote_yaml(const std::string& extra) {
  return "services:\n  box:\n    runtime: remote\n    remote:\n      provider: fakecloud\n"
         "      region: local-1\n      gpu_type: H100\n      gpu_count: 2\n"
         "      provision: [" +
         kProvider + ", provision, --gpu, H100]\n      status: [" + kProvider +
         ", status]\n      terminate: [" + kProvider +
         ", terminate]\n      status_interval: 20ms\n" + extra;
}

bool event_of(const nlohmann::json& e, const std::string& type) {
  return e["type"] == type;
}

TEST(Remote, ProvisionedTrackedCostedAndTerminated) {
  const std::string dir = make_temp_dir("remote");
  Provider provider(dir);
  Daemon d(remote_yaml("      cost_per_hour: 3600\n"), dir);  // $1 a second: cost shows at once
  ASSERT_TRUE(d.start()) << d.stderr_text();
  const auto ensured = d.cli({"ensure", "box"});
  ASSERT_EQ(0, ensured.exit_code) << ensured.err;
  auto svc = d.service("box");
  EXPECT_EQ("cloud_gpu", svc["mode"]);
  const auto& res = svc["remote"]["resource"];
  EXPECT_EQ("fakecloud", res["provider"]);
  EXPECT_EQ("local-1", res["region"]);
  EXPECT_EQ("fake-1", res["instance_id"]);
  EXPECT_EQ("http://10.0.0.1:8000", res["endpoint"]);
  EXPECT_EQ("10.0.0.1", res["ssh_host"]);
  EXPECT_EQ(22, res["ssh_port"]);
  EXPECT_EQ("H100", res["gpu_type"]);
  EXPECT_EQ(2, res["gpu_count"]);
  EXPECT_EQ("running", res["status"]);
  // Cost accrues while it runs, and every update is an event.
  EXPECT_TRUE(d.wait_event([](const nlohmann::json& e) {
    return event_of(e, "remote.cost") && e["data"]["cost_usd"].get<double>() > 0;
  }));
  const auto table = d.cli({"status"});
  EXPECT_NE(std::string::npos, table.out.find("$")) << table.out;

  ASSERT_EQ(0, d.cli({"stop", "box"}).exit_code);
  EXPECT_EQ("terminated", provider.instance("fake-1"));
  svc = d.service("box");
  EXPECT_EQ("stopped", svc["state"]);
  EXPECT_NE(std::string::npos, svc["reason"].get<std::string>().find("terminated remote instance "
                                                                     "fake-1"));
  EXPECT_GT(svc["remote"]["cost_usd"].get<double>(), 0);
  EXPECT_TRUE(svc["remote"]["resource"].is_null());
  EXPECT_TRUE(d.wait_event([](const nlohmann::json& e) {
    return event_of(e, "remote.terminated") && e["data"]["instance_id"] == "fake-1";
  }));
}

TEST(Remote, TheBudgetEndsItAndRefusesTheNextOneAcrossRestarts) {
  const std::string dir = make_temp_dir("remote-budget");
  Provider provider(dir);
  const std::string yaml = remote_yaml("      cost_per_hour: 3600\n      budget: 0.05\n");
  {
    Daemon d(yaml, dir);
    ASSERT_TRUE(d.start()) << d.stderr_text();
    ASSERT_EQ(0, d.cli({"ensure", "box"}).exit_code);
    EXPECT_TRUE(d.wait_state("box", "stopped")) << d.stderr_text();
    EXPECT_NE(std::string::npos,
              d.service("box")["reason"].get<std::string>().find("budget of $0.05 reached"));
    EXPECT_EQ("terminated", provider.instance("fake-1"));
    EXPECT_EQ(0, d.terminate());
  }
  Daemon again(yaml, dir);
  ASSERT_TRUE(again.start()) << again.stderr_text();
  const auto refused = again.cli({"ensure", "box"});
  EXPECT_NE(0, refused.exit_code);
  // How far past the budget it got depends on when the last status poll ran: not checked.
  EXPECT_NE(std::string::npos, refused.err.find("budget reached: $")) << refused.err;
  EXPECT_NE(std::string::npos, refused.err.find("of the $0.05 budget for box; nothing "
                                                "provisioned"))
      << refused.err;
  EXPECT_FALSE(std::filesystem::exists(provider.dir + "/fake-2"));
}

TEST(Remote, IdleInstancesAreTerminated) {
  const std::string dir = make_temp_dir("remote-idle");
  Provider provider(dir);
  Daemon d(remote_yaml("      idle_timeout: 100ms\n"), dir);
  ASSERT_TRUE(d.start()) << d.stderr_text();
  ASSERT_EQ(0, d.cli({"ensure", "box"}).exit_code);
  EXPECT_TRUE(d.wait_event([](const nlohmann::json& e) {
    return e["type"] == "service.state_changed" && e["data"]["to"] == "stopped" &&
           e["data"]["reason"].get<std::string>().find("idle for 100ms") != std::string::npos;
  })) << d.stderr_text();
  EXPECT_EQ("terminated", provider.instance("fake-1"));
}

TEST(Remote, EndedByTheProviderIsNoticed) {
  const std::string dir = make_temp_dir("remote-gone");
  Provider provider(dir);
  Daemon d(remote_yaml(""), dir);
  ASSERT_TRUE(d.start()) << d.stderr_text();
  ASSERT_EQ(0, d.cli({"ensure", "box"}).exit_code);
  provider.fault("fake-1", "terminated");  // the provider reclaimed it (a spot instance)
  EXPECT_TRUE(d.wait_event([](const nlohmann::json& e) {
    return e["type"] == "service.state_changed" && e["data"]["to"] == "error" &&
           e["data"]["reason"].get<std::string>().find(
               "remote instance fake-1 is terminated (ended by the provider)") != std::string::npos;
  })) << d.stderr_text();
}

TEST(Remote, AProviderThatFailsOrHangsIsAClearError) {
  const std::string dir = make_temp_dir("remote-faults");
  Provider provider(dir);
  Daemon d(remote_yaml("      command_timeout: 300ms\n"), dir);
  ASSERT_TRUE(d.start()) << d.stderr_text();
  provider.fault("fail-provision", "quota exceeded for H100 in local-1\n");
  auto r = d.cli({"ensure", "box"});
  EXPECT_NE(0, r.exit_code);
  EXPECT_NE(std::string::npos,
            r.err.find("provision failed: exited with status 1: quota exceeded for H100"))
      << r.err;
  std::filesystem::remove(provider.dir + "/fail-provision");
  provider.fault("hang-provision");
  r = d.cli({"ensure", "box"});
  EXPECT_NE(0, r.exit_code);
  EXPECT_NE(std::string::npos, r.err.find("provision failed: timed out after 300ms (check the "
                                          "provider: an instance may have been created)"))
      << r.err;
}

}  // namespace
}  // namespace gpuvisor::itest
