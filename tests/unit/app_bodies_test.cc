// What an app sends to register, update and publish: each bad body is refused with the field
// and what it must be, before anything changes.
#include "api/app_bodies.h"

#include <gtest/gtest.h>

namespace gpuvisor {
namespace {

std::string refusal(const Result<OutsideRegistration>& r) {
  return r ? "accepted" : r.error().message;
}

TEST(WorkerBodies, ARegistrationNeedsAPidAndAType) {
  const auto r = parse_registration(
      R"({"pid": 42, "worker_type": "transcription", "plugin_id": "asr_whisper",
          "plugin_name": null, "config": {"model": "large"}})");
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_EQ(42, r->pid);
  EXPECT_EQ("transcription", r->worker_type);
  EXPECT_EQ("asr_whisper", r->plugin_id.value_or(""));
  EXPECT_FALSE(r->plugin_name);
  EXPECT_EQ("large", r->config["model"]);

  EXPECT_EQ("the body must be the worker to register, a JSON object",
            refusal(parse_registration("[1]")));
  EXPECT_EQ("'pid' is required: the worker process's PID",
            refusal(parse_registration(R"({"worker_type": "llm"})")));
  EXPECT_EQ("'pid' must be a positive integer, got -3",
            refusal(parse_registration(R"({"pid": -3, "worker_type": "llm"})")));
  EXPECT_EQ("'pid' must be a positive integer, got \"42\"",
            refusal(parse_registration(R"({"pid": "42", "worker_type": "llm"})")));
  EXPECT_EQ("'pid' must be a positive integer, got 99999999999",
            refusal(parse_registration(R"({"pid": 99999999999, "worker_type": "llm"})")));
  EXPECT_EQ("'worker_type' is required (e.g. \"transcription\", \"llm\")",
            refusal(parse_registration(R"({"pid": 42})")));
  EXPECT_EQ("'worker_type' must be a non-empty string, got \"\"",
            refusal(parse_registration(R"({"pid": 42, "worker_type": ""})")));
  EXPECT_EQ("'config' must be an object or null, got [1]",
            refusal(parse_registration(R"({"pid": 42, "worker_type": "x", "config": [1]})")));
  EXPECT_EQ("unknown field 'gpu' (known: config, pid, plugin_id, plugin_name, worker_type)",
            refusal(parse_registration(R"({"pid": 42, "worker_type": "x", "gpu": 0})")));
}

TEST(WorkerBodies, AnUpdateLeavesOmittedFieldsAndClearsNulls) {
  const auto u = parse_worker_update(
      R"({"status": "running", "job_id": "abc123", "loaded_plugin_resource": null})");
  ASSERT_TRUE(u) << u.error().message;
  EXPECT_EQ("running", u->status.value_or(""));
  EXPECT_EQ("abc123", u->job->value_or(""));
  ASSERT_TRUE(u->loaded_resource.has_value());  // given: null clears it
  EXPECT_FALSE(u->loaded_resource->has_value());
  EXPECT_FALSE(u->plugin_name.has_value());  // omitted: left alone
  EXPECT_FALSE(u->config.has_value());

  EXPECT_EQ("'status' must be a non-empty string, got null",
            parse_worker_update(R"({"status": null})").error().message);
  EXPECT_EQ("'job_id' must be a non-empty string or null, got 7",
            parse_worker_update(R"({"job_id": 7})").error().message);
  EXPECT_NE(
      std::string::npos,
      parse_worker_update(R"({"state": "idle"})").error().message.find("unknown field 'state'"));
}

TEST(WorkerBodies, AnAppEventKeepsItsTypeAndData) {
  const auto e = parse_app_event(R"({"type": "transcription.progress", "data": {"pct": 40}})");
  ASSERT_TRUE(e) << e.error().message;
  EXPECT_EQ("transcription.progress", e->type);
  EXPECT_EQ(40, e->data["pct"]);
  EXPECT_TRUE(parse_app_event(R"({"type": "ping"})")->data.is_object());
  EXPECT_EQ("'type' is required (e.g. \"transcription.progress\")",
            parse_app_event(R"({"data": {}})").error().message);
  EXPECT_EQ("'type' must be 1 to 128 letters, digits, '.', '_', '-' or ':', got \"a b\"",
            parse_app_event(R"({"type": "a b"})").error().message);
  EXPECT_EQ("'type' must be 1 to 128 letters, digits, '.', '_', '-' or ':', got 5",
            parse_app_event(R"({"type": 5})").error().message);
}

TEST(WorkerBodies, ALeaseNeedsItsSizeAndTakesADurationOrSeconds) {
  auto l = parse_lease(R"({"vram_mb": 8192, "gpu": 1, "ttl": "10m", "pid": 42, "holder": "nb"})");
  ASSERT_TRUE(l) << l.error().message;
  EXPECT_EQ(8192ULL << 20, l->bytes);
  EXPECT_EQ(1u, l->gpu.value_or(9));
  EXPECT_EQ(Millis(600'000), l->ttl.value_or(Millis(0)));
  EXPECT_EQ(42, l->pid.value_or(0));
  EXPECT_EQ("nb", l->holder);
  EXPECT_EQ(Millis(1500), parse_lease(R"({"vram_mb": 1, "ttl": 1.5})")->ttl.value_or(Millis(0)));
  EXPECT_EQ("'vram_mb' must be a positive integer (MiB to reserve), got null",
            parse_lease("{}").error().message);
  EXPECT_EQ("'vram_mb' must be a positive integer (MiB to reserve), got 0",
            parse_lease(R"({"vram_mb": 0})").error().message);
  EXPECT_EQ("'gpu' must be a GPU index (0, 1, ...), got -1",
            parse_lease(R"({"vram_mb": 1, "gpu": -1})").error().message);
  EXPECT_EQ("'ttl' must be a duration such as \"30s\" or \"10m\", or seconds, got \"soon\"",
            parse_lease(R"({"vram_mb": 1, "ttl": "soon"})").error().message);
  EXPECT_EQ("'pid' must be a positive integer, got \"me\"",
            parse_lease(R"({"vram_mb": 1, "pid": "me"})").error().message);
}

TEST(WorkerBodies, APidInThePathIsAPositiveInteger) {
  EXPECT_EQ(123, *parse_pid("123"));
  EXPECT_EQ("'12a' is not a PID (a positive integer)", parse_pid("12a").error().message);
  EXPECT_FALSE(parse_pid("0"));
  EXPECT_FALSE(parse_pid("-1"));
  EXPECT_FALSE(parse_pid(""));
}

}  // namespace
}  // namespace gpuvisor
