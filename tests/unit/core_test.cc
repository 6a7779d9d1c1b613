#include <gtest/gtest.h>

#include "core/bytes.h"
#include "core/duration.h"
#include "core/json_text.h"
#include "core/service_state.h"
#include "core/url.h"

namespace gpuvisor {
namespace {

TEST(Duration, ParsesEveryUnit) {
  EXPECT_EQ(Millis(500), parse_duration("500ms"));
  EXPECT_EQ(Millis(10'000), parse_duration("10s"));
  EXPECT_EQ(Millis(300'000), parse_duration("5m"));
  EXPECT_EQ(Millis(7'200'000), parse_duration("2h"));
  EXPECT_EQ(Millis(30LL * 86'400'000), parse_duration("30d"));
  EXPECT_EQ("30d", format_duration(Millis(30LL * 86'400'000)));
  EXPECT_EQ(Millis(0), parse_duration("0s"));
}

TEST(Duration, RefusesWhatIsAmbiguousOrMalformed) {
  for (const char* bad : {"", "10", "s", "-1s", "1.5s", "10 s", "10sec", "5w", "ms10", "1e3ms",
                          "99999999999999999999h"}) {
    EXPECT_FALSE(parse_duration(bad).has_value()) << bad;
  }
}

TEST(Duration, FormatsTheShortestExactUnit) {
  EXPECT_EQ("1500ms", format_duration(Millis(1500)));
  EXPECT_EQ("10s", format_duration(Millis(10'000)));
  EXPECT_EQ("5m", format_duration(Millis(300'000)));
  EXPECT_EQ("1h", format_duration(Millis(3'600'000)));
  EXPECT_EQ("0ms", format_duration(Millis(0)));
}

TEST(ServiceState, NamesRoundTrip) {
  for (auto s :
       {ServiceState::kStopped, ServiceState::kStarting, ServiceState::kReady, ServiceState::kBusy,
        ServiceState::kStopping, ServiceState::kError, ServiceState::kUnknown}) {
    EXPECT_EQ(s, service_state_from_string(to_string(s)));
  }
  EXPECT_FALSE(service_state_from_string("running").has_value());
  EXPECT_FALSE(holds_vram(ServiceState::kStopped));
  EXPECT_TRUE(holds_vram(ServiceState::kStopping));
  EXPECT_TRUE(serves_traffic(ServiceState::kBusy));
  EXPECT_FALSE(serves_traffic(ServiceState::kStarting));
}

TEST(Url, ParsesHttpUrls) {
  auto u = parse_http_url("http://127.0.0.1:8188/system_stats?x=1");
  ASSERT_TRUE(u);
  EXPECT_EQ("127.0.0.1", u->host);
  EXPECT_EQ("8188", u->port);
  EXPECT_EQ("/system_stats?x=1", u->target);
  u = parse_http_url("http://localhost");
  ASSERT_TRUE(u);
  EXPECT_EQ("80", u->port);
  EXPECT_EQ("/", u->target);
  u = parse_http_url("http://[::1]:9000/h");
  ASSERT_TRUE(u);
  EXPECT_EQ("::1", u->host);
  EXPECT_EQ("9000", u->port);
}

TEST(Url, RefusesOtherSchemesAndBadPorts) {
  for (const char* bad : {"https://x/", "ftp://x", "http://", "http://:80/", "http://x:99999/",
                          "http://x:abc/", "http://user@x/", "127.0.0.1:80"}) {
    EXPECT_FALSE(parse_http_url(bad).has_value()) << bad;
  }
}

TEST(Url, ParsesHostPort) {
  auto hp = parse_host_port("127.0.0.1:7733");
  ASSERT_TRUE(hp);
  EXPECT_EQ("127.0.0.1", hp->host);
  EXPECT_EQ("7733", hp->port);
  hp = parse_host_port("[::1]:0");
  ASSERT_TRUE(hp);
  EXPECT_EQ("::1", hp->host);
  for (const char* bad : {"7733", ":7733", "host:", "host:65536", "::1:80", "[::1]80"}) {
    EXPECT_FALSE(parse_host_port(bad).has_value()) << bad;
  }
}

TEST(Bytes, SizesForPeople) {
  EXPECT_EQ("0 MiB", format_bytes(0));
  EXPECT_EQ("512 MiB", format_bytes(512ULL << 20));
  EXPECT_EQ("23.5 GiB", format_bytes(23ULL * (1ULL << 30) + (512ULL << 20)));
}

TEST(JsonText, BytesThatAreNotUtf8BecomeReplacementCharactersNotAnException) {
  EXPECT_EQ("\"x\xEF\xBF\xBD\"", json_text(nlohmann::json(std::string("x\xff"))));
  EXPECT_EQ(R"({"n":1})", json_text({{"n", 1}}));
}

}  // namespace
}  // namespace gpuvisor
