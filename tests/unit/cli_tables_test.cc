#include <gtest/gtest.h>

#include "cli/tables.h"

namespace gpuvisor {
namespace {

TEST(Tables, ColumnsAreAlignedAndTheLastIsNotPadded) {
  EXPECT_EQ("NAME  STATE\nweb   ready\nllm2  stopped\n",
            render_table({"NAME", "STATE"}, {{"web", "ready"}, {"llm2", "stopped"}}));
}

TEST(Tables, AgoUsesTheLargestWholeUnit) {
  EXPECT_EQ("3s ago", ago(10'000, 13'500));
  EXPECT_EQ("2m ago", ago(1, 150'001));
  EXPECT_EQ("1h ago", ago(1, 3'600'001));
  EXPECT_EQ("-", ago(0, 5));  // never happened
}

TEST(Tables, StateChangesReadAsTransitions) {
  const auto e = nlohmann::json::parse(R"({"id": 7, "type": "service.state_changed",
      "data": {"service": "web", "from": "starting", "to": "ready", "reason": "HTTP 200"}})");
  EXPECT_EQ("#7 web starting -> ready (HTTP 200)", format_event(e));
}

TEST(Tables, OtherEventsShowTypeServiceAndFields) {
  const auto e = nlohmann::json::parse(R"({"id": 9, "type": "service.process_gone",
      "data": {"service": "web", "pid": 42, "after": "stop"}})");
  EXPECT_EQ("#9 service.process_gone web after=stop pid=42", format_event(e));
  EXPECT_EQ("#1 daemon.warning message=x",
            format_event(nlohmann::json::parse(
                R"({"id": 1, "type": "daemon.warning", "data": {"message": "x"}})")));
}

}  // namespace
}  // namespace gpuvisor
