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

TEST(Tables, GpusShowMemoryOwnersAndState) {
  const auto r = nlohmann::json::parse(R"({"gpus": [{"index": 0, "name": "Card",
      "total_bytes": 25769803776, "used_bytes": 12884901888, "free_bytes": 12884901888,
      "util_gpu_percent": 40, "app_bytes": 10737418240, "external_bytes": 2147483648,
      "state": "app_busy"}], "memory": {"total_bytes": 1073741824, "available_bytes": 536870912}})");
  EXPECT_EQ(
      "GPU  NAME  USED / TOTAL         FREE      UTIL  OURS      EXTERNAL  STATE\n"
      "0    Card  12.0 GiB / 24.0 GiB  12.0 GiB  40%   10.0 GiB  2.0 GiB   app_busy\n"
      "system memory: 512 MiB available of 1.0 GiB\n",
      render_gpus(r));
}

TEST(Tables, ProcessesMarkExternalOnesAndUnknownVram) {
  const auto p = nlohmann::json::parse(R"({"processes": [
      {"gpu": 0, "pid": 10, "name": "llama", "used_bytes": 1073741824, "kind": "compute",
       "owner": "llm"},
      {"gpu": 1, "pid": 20, "name": "Xorg", "used_bytes": null, "kind": "graphics",
       "owner": null}]})");
  EXPECT_EQ(
      "GPU  PID  NAME   VRAM     KIND      OWNER\n"
      "0    10   llama  1.0 GiB  compute   llm\n"
      "1    20   Xorg   -        graphics  (external)\n",
      render_processes(p));
}

TEST(Tables, LeasesSayHowLongTheyHaveLeft) {
  const auto l = nlohmann::json::parse(R"({"leases": [
      {"id": 1, "vram_bytes": 8589934592, "gpu": 0, "pid": 42, "holder": "notebook",
       "created_unix_ms": 1000, "expires_unix_ms": 601000},
      {"id": 2, "vram_bytes": 1073741824, "gpu": 1, "pid": null, "holder": null,
       "created_unix_ms": 1000, "expires_unix_ms": null}]})");
  EXPECT_EQ(
      "ID  GPU  VRAM     PID  HOLDER    UNTIL\n"
      "1   0    8.0 GiB  42   notebook  in 9m\n"
      "2   1    1.0 GiB  -    -         released\n",
      render_leases(l, 61'000));
}

}  // namespace
}  // namespace gpuvisor
