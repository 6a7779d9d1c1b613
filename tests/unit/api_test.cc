// Request parsing, SSE framing and parsing, the event bus: the pieces the API is built from.
#include <gtest/gtest.h>

#include "api/json_views.h"
#include "api/request_parts.h"
#include "api/responses.h"
#include "api/sse.h"
#include "cli/http_client.h"
#include "events/event_bus.h"

namespace gpuvisor {
namespace {

TEST(RequestParts, SplitsPathAndDecodesQuery) {
  auto parts =
      parse_request("/api/v1/services/llm/ensure?timeout=30s&x=a%20b", "", {"timeout", "x"});
  ASSERT_TRUE(parts.ok());
  EXPECT_EQ((std::vector<std::string>{"api", "v1", "services", "llm", "ensure"}), parts->segments);
  EXPECT_EQ("30s", parts->params["timeout"]);
  EXPECT_EQ("a b", parts->params["x"]);
}

TEST(RequestParts, UnknownParameterIsNamed) {
  auto parts = parse_request("/x?timeot=3s", "", {"timeout"});
  ASSERT_FALSE(parts.ok());
  EXPECT_EQ(ErrorCode::kBadRequest, parts.error().code);
  EXPECT_EQ("unknown parameter 'timeot' (allowed: timeout)", parts.error().message);
}

TEST(RequestParts, BodyMustBeAJsonObjectOfKnownFields) {
  EXPECT_TRUE(parse_request("/x", R"({"force": true})", {"force"}).ok());
  EXPECT_EQ("request body is not valid JSON",
            parse_request("/x", "{force", {"force"}).error().message);
  EXPECT_EQ("request body must be a JSON object",
            parse_request("/x", "[1]", {"force"}).error().message);
  EXPECT_EQ("body field 'force' must be a string, boolean or integer",
            parse_request("/x", R"({"force": [1]})", {"force"}).error().message);
  EXPECT_NE(std::string::npos,
            parse_request("/x", R"({"bogus": 1})", {"force"}).error().message.find("'bogus'"));
  EXPECT_FALSE(parse_request("/x?a=%zz", "", {"a"}).ok());
  EXPECT_FALSE(parse_request("/x?a=%4", "", {"a"}).ok());
}

TEST(RequestParts, TypedParametersExplainBadValues) {
  auto parts = parse_request("/x?timeout=soon&force=maybe&n=-3", "", {"timeout", "force", "n"});
  ASSERT_TRUE(parts.ok());
  EXPECT_EQ("'timeout': bad duration 'soon' (use e.g. 500ms, 30s, 5m)",
            duration_param(*parts, "timeout", Millis(1)).error().message);
  EXPECT_EQ("'force' must be true or false, got 'maybe'",
            bool_param(*parts, "force", false).error().message);
  EXPECT_EQ("'n' must be an integer from 0 to 10, got '-3'",
            int_param(*parts, "n", 1, 0, 10).error().message);
  EXPECT_EQ(Millis(7), *duration_param(*parts, "absent", Millis(7)));
}

TEST(Sse, FramesSplitMultilineData) {
  EXPECT_EQ("id: 3\nevent: log\ndata: a\ndata: b\n\n", sse_frame("3", "log", "a\nb"));
}

TEST(Sse, ParserReassemblesMessagesAcrossReads) {
  SseParser parser;
  std::vector<SseMessage> got;
  auto collect = [&](const SseMessage& m) {
    got.push_back(m);
    return true;
  };
  const std::string stream =
      sse_frame("1", "log", "hello\nworld") + ": keepalive\n\n" + sse_frame("2", "x", "{}");
  for (char c : stream) parser.feed(std::string_view(&c, 1), collect);
  ASSERT_EQ(2u, got.size());
  EXPECT_EQ("1", got[0].id);
  EXPECT_EQ("log", got[0].event);
  EXPECT_EQ("hello\nworld", got[0].data);
  EXPECT_EQ("{}", got[1].data);
}

TEST(EventBus, NumbersDeliversAndReplaysFromHistory) {
  EventBus bus(3);
  std::vector<uint64_t> seen;
  const auto id = bus.subscribe([&](const Event& e) { seen.push_back(e.id); });
  for (int i = 0; i < 5; ++i) bus.publish("t", {{"i", i}});
  bus.unsubscribe(id);
  bus.publish("t", {});
  EXPECT_EQ((std::vector<uint64_t>{1, 2, 3, 4, 5}), seen);
  const auto replay = bus.since(4);
  ASSERT_EQ(2u, replay.size());  // 5 and 6; the history holds only the last 3
  EXPECT_EQ(5u, replay[0].id);
  EXPECT_EQ(3u, bus.since(0).size());
  EXPECT_EQ(3u, bus.since(99).size());  // an id from a previous daemon run: everything retained
  EXPECT_TRUE(bus.since(6).empty());
}

// A percent-decoded parameter name (or a service's log tail) need not be UTF-8; dump() threw on
// it and the client got no answer at all (found by fuzz/request_body_fuzz).
TEST(Responses, TextThatIsNotUtf8IsReplacedNotThrown) {
  auto parts = parse_request("/x?%ff=1", "", {});
  ASSERT_FALSE(parts.ok());
  const HttpRequest request{boost::beast::http::verb::get, "/x?%ff=1", 11};
  const auto reply = error_response(request, parts.error());
  EXPECT_EQ(boost::beast::http::status::bad_request, reply.result());
  const auto body = nlohmann::json::parse(reply.body());
  EXPECT_EQ("unknown parameter '\xef\xbf\xbd' (this route takes none)",
            body["error"]["message"].get<std::string>());
}

TEST(JsonViews, ErrorsCarryCodeMessageAndLogTail) {
  Error e = make_error(ErrorCode::kFailed, "'x' failed");
  e.context = {"line 1"};
  const auto j = error_json(e);
  EXPECT_EQ("failed", j["error"]["code"]);
  EXPECT_EQ("'x' failed", j["error"]["message"]);
  EXPECT_EQ("line 1", j["error"]["log_tail"][0]);
  EXPECT_EQ(boost::beast::http::status::gateway_timeout, http_status(ErrorCode::kTimeout));
  EXPECT_EQ(boost::beast::http::status::conflict, http_status(ErrorCode::kConflict));
}

}  // namespace
}  // namespace gpuvisor
