// The API's route table: which route a request reaches, and the one way each 404, 405 and
// unknown-parameter 400 is made.
#include "api/route_table.h"

#include <gtest/gtest.h>

#include <stdexcept>

namespace gpuvisor {
namespace {

using boost::beast::http::verb;

HttpRequest request(verb method, const std::string& target, const std::string& body = "") {
  HttpRequest r{method, target, 11};
  r.body() = body;
  return r;
}

class RouteTableTest : public ::testing::Test {
 protected:
  RouteTableTest() {
    services_ = table_.add({{verb::get}, "/api/v1/services", {}});
    service_ = table_.add({{verb::get}, "/api/v1/services/{name}", {}});
    ensure_ = table_.add({{verb::post}, "/api/v1/services/{name}/ensure", {"timeout"}, true});
    logs_ = table_.add({{verb::get}, "/api/v1/services/{name}/logs", {"n", "follow"}});
    stats_ = table_.add({{verb::get}, "/api/v1/plugins/stats", {}});
    plugin_ = table_.add({{verb::get}, "/api/v1/plugins/{id}", {}});
    get_config_ = table_.add({{verb::get}, "/api/v1/plugins/{id}/config", {}});
    put_config_ = table_.add({{verb::put, verb::delete_}, "/api/v1/plugins/{id}/config", {}});
    job_input_ = table_.add({{verb::post}, "/api/v1/plugins/{id}/jobs", {}});
  }

  RouteMatch hit(verb method, const std::string& target, const std::string& body = "") {
    auto routed = table_.match(request(method, target, body));
    if (const auto* miss = std::get_if<RouteMiss>(&routed)) {
      ADD_FAILURE() << target << ": " << miss->error.message;
      return {};
    }
    return std::get<RouteMatch>(routed);
  }

  RouteMiss miss(verb method, const std::string& target, const std::string& body = "") {
    auto routed = table_.match(request(method, target, body));
    if (std::holds_alternative<RouteMatch>(routed)) {
      ADD_FAILURE() << target << " matched route " << std::get<RouteMatch>(routed).route;
      return {};
    }
    return std::get<RouteMiss>(routed);
  }

  RouteTable table_;
  size_t services_ = 0, service_ = 0, ensure_ = 0, logs_ = 0, stats_ = 0, plugin_ = 0,
         get_config_ = 0, put_config_ = 0, job_input_ = 0;
};

TEST_F(RouteTableTest, MatchesLiteralPathsAndNamesTheParameters) {
  EXPECT_EQ(services_, hit(verb::get, "/api/v1/services").route);
  const auto one = hit(verb::get, "/api/v1/services/llm");
  EXPECT_EQ(service_, one.route);
  EXPECT_EQ("llm", one.arg("name"));
  const auto ensure = hit(verb::post, "/api/v1/services/llm/ensure");
  EXPECT_EQ(ensure_, ensure.route);
  EXPECT_EQ("llm", ensure.arg("name"));
  EXPECT_EQ((std::vector<std::string>{"api", "v1", "services", "llm", "ensure"}),
            ensure.parts.segments);
  // Empty segments are skipped, as they always were.
  EXPECT_EQ(service_, hit(verb::get, "/api//v1/services/llm/").route);
}

TEST_F(RouteTableTest, ParametersAreNotPercentDecodedSoAnIdCheckSeesTheEscape) {
  EXPECT_EQ("..%2Fx", hit(verb::get, "/api/v1/plugins/..%2Fx").arg("id"));
}

TEST_F(RouteTableTest, ALiteralSegmentWinsOverAParameter) {
  EXPECT_EQ(stats_, hit(verb::get, "/api/v1/plugins/stats").route);
  EXPECT_EQ(plugin_, hit(verb::get, "/api/v1/plugins/tts").route);
  // The literal's path takes only GET, whatever {id} would take.
  const auto refused = miss(verb::put, "/api/v1/plugins/stats");
  EXPECT_EQ(ErrorCode::kMethodNotAllowed, refused.error.code);
  EXPECT_EQ("GET", refused.allow);
}

TEST_F(RouteTableTest, AnUnknownPathIsA404NamingMethodAndTarget) {
  for (const auto* target : {"/api/v1/nothing", "/api/v2/services", "/api/v1/services/a/b/c",
                             "/api/v1", "/elsewhere?x=1"}) {
    const auto refused = miss(verb::get, target);
    EXPECT_EQ(ErrorCode::kNotFound, refused.error.code) << target;
    EXPECT_EQ(std::string("no route GET ") + target, refused.error.message);
    EXPECT_EQ("", refused.allow);
  }
}

TEST_F(RouteTableTest, AKnownPathWithAnotherMethodIsA405ListingEveryMethodItTakes) {
  auto refused = miss(verb::get, "/api/v1/services/web/ensure");
  EXPECT_EQ(ErrorCode::kMethodNotAllowed, refused.error.code);
  EXPECT_EQ("POST", refused.allow);
  EXPECT_EQ("/api/v1/services/web/ensure takes POST", refused.error.message);
  // Two routes on one path: the Allow header has both routes' methods, in table order.
  refused = miss(verb::post, "/api/v1/plugins/tts/config");
  EXPECT_EQ("GET, PUT, DELETE", refused.allow);
  EXPECT_EQ("/api/v1/plugins/tts/config takes GET, PUT, DELETE", refused.error.message);
  EXPECT_EQ(put_config_, hit(verb::delete_, "/api/v1/plugins/tts/config").route);
  EXPECT_EQ(get_config_, hit(verb::get, "/api/v1/plugins/tts/config").route);
  // The method is checked before the query: a 405 says so even with a bad parameter.
  EXPECT_EQ("GET", miss(verb::post, "/api/v1/services?bogus=1").allow);
}

TEST_F(RouteTableTest, MissResponseSetsAllowOnlyOnA405) {
  const auto head = request(verb::get, "/api/v1/services/web/stop");
  RouteMiss not_allowed{make_error(ErrorCode::kMethodNotAllowed, "x takes POST"), "POST"};
  auto response = miss_response(head, not_allowed);
  EXPECT_EQ(405u, response.result_int());
  EXPECT_EQ("POST", response[boost::beast::http::field::allow]);
  response = miss_response(head, {make_error(ErrorCode::kNotFound, "no route"), ""});
  EXPECT_EQ(404u, response.result_int());
  EXPECT_EQ(response.end(), response.find(boost::beast::http::field::allow));
}

TEST_F(RouteTableTest, QueryParametersAreDecodedAndCheckedAgainstTheRoute) {
  const auto logs = hit(verb::get, "/api/v1/services/web/logs?n=5&follow");
  EXPECT_EQ(logs_, logs.route);
  EXPECT_EQ("5", logs.parts.params.at("n"));
  EXPECT_EQ("", logs.parts.params.at("follow"));
  EXPECT_EQ(
      "30s",
      hit(verb::post, "/api/v1/services/web/ensure?timeout=30%73").parts.params.at("timeout"));

  auto refused = miss(verb::get, "/api/v1/services/web/logs?n=5&force=1");
  EXPECT_EQ(ErrorCode::kBadRequest, refused.error.code);
  EXPECT_EQ("unknown parameter 'force' (allowed: n, follow)", refused.error.message);
  refused = miss(verb::get, "/api/v1/services?n=1");
  EXPECT_EQ("unknown parameter 'n' (this route takes none)", refused.error.message);
  refused = miss(verb::get, "/api/v1/services/web/logs?n=%zz");
  EXPECT_EQ(ErrorCode::kBadRequest, refused.error.code);
  EXPECT_NE(std::string::npos, refused.error.message.find("malformed query"))
      << refused.error.message;
}

TEST_F(RouteTableTest, OnlyARouteWithBodyParamsReadsItsBodyAsParameters) {
  const auto ensure =
      hit(verb::post, "/api/v1/services/web/ensure?timeout=1s", R"({"timeout": "2s"})");
  EXPECT_EQ("2s", ensure.parts.params.at("timeout"));  // the body wins
  EXPECT_EQ("unknown parameter 'force' (allowed: timeout)",
            miss(verb::post, "/api/v1/services/web/ensure", R"({"force": true})").error.message);
  // A job's input is the handler's, whatever fields it has.
  const auto job = hit(verb::post, "/api/v1/plugins/tts/jobs", R"({"text": "hi"})");
  EXPECT_EQ(job_input_, job.route);
  EXPECT_TRUE(job.parts.params.empty());
}

TEST(RouteTable, RefusesAMalformedPatternOrAMethodTakenTwice) {
  RouteTable table;
  table.add({{verb::get}, "/a/{x}", {}});
  EXPECT_THROW(table.add({{verb::get}, "/a/{y}", {}}), std::logic_error);
  EXPECT_NO_THROW(table.add({{verb::post}, "/a/{y}", {}}));
  EXPECT_THROW(table.add({{verb::get}, "a", {}}), std::logic_error);
  EXPECT_THROW(table.add({{verb::get}, "/a/x{", {}}), std::logic_error);
  EXPECT_THROW(table.add({{}, "/b", {}}), std::logic_error);
}

}  // namespace
}  // namespace gpuvisor
