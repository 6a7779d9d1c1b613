#include "runtime/docker_body.h"

#include <gtest/gtest.h>

#include "runtime/docker_client.h"
#include "runtime/docker_log_lines.h"

namespace gpuvisor {
namespace {

ServiceSpec comfy() {
  ServiceSpec s;
  s.name = "comfy";
  s.runtime = RuntimeKind::kDocker;
  s.command = {"python", "main.py"};
  s.docker.image = "comfy:1";
  s.docker.mounts = {"/models:/models:ro"};
  s.docker.ports = {"8188:8188", "127.0.0.1:9000:9001/udp"};
  return s;
}

TEST(DockerBody, CreateBodyCarriesTheSpecAndThePlacedGpu) {
  const auto body = container_create_body(comfy(), {1}, {{"A", "1"}});
  EXPECT_EQ(body["Image"], "comfy:1");
  EXPECT_EQ(body["Cmd"], (nlohmann::json{"python", "main.py"}));
  EXPECT_EQ(body["Env"], (nlohmann::json{"A=1"}));
  EXPECT_EQ(body["Labels"][kServiceLabel], "comfy");
  const auto& host = body["HostConfig"];
  EXPECT_TRUE(host["Init"].get<bool>());
  EXPECT_EQ(host["NetworkMode"], "host");
  EXPECT_EQ(host["Binds"], (nlohmann::json{"/models:/models:ro"}));
  EXPECT_EQ(host["PortBindings"]["8188/tcp"][0]["HostPort"], "8188");
  EXPECT_EQ(host["PortBindings"]["9001/udp"][0]["HostIp"], "127.0.0.1");
  EXPECT_EQ(host["PortBindings"]["9001/udp"][0]["HostPort"], "9000");
  EXPECT_TRUE(body["ExposedPorts"].contains("9001/udp"));
  EXPECT_EQ(host["DeviceRequests"][0]["Driver"], "nvidia");
  EXPECT_EQ(host["DeviceRequests"][0]["DeviceIDs"], (nlohmann::json{"1"}));
  EXPECT_EQ(host["DeviceRequests"][0]["Capabilities"], (nlohmann::json{{"gpu"}}));
}

TEST(DockerBody, AServiceSpanningGpusGetsThemAll) {
  const auto body = container_create_body(comfy(), {0, 2}, {});
  EXPECT_EQ(body["HostConfig"]["DeviceRequests"][0]["DeviceIDs"], (nlohmann::json{"0", "2"}));
}

TEST(DockerBody, GpuRulesAndShell) {
  auto s = comfy();
  // VRAM unknown (no NVML): the container still gets the GPUs, all of them.
  EXPECT_EQ(container_create_body(s, {}, {})["HostConfig"]["DeviceRequests"][0]["Count"], -1);
  s.docker.gpus = DockerSpec::Gpus::kNone;
  EXPECT_FALSE(container_create_body(s, {0}, {})["HostConfig"].contains("DeviceRequests"));
  s.docker.gpus = DockerSpec::Gpus::kAll;
  EXPECT_EQ(container_create_body(s, {0}, {})["HostConfig"]["DeviceRequests"][0]["Count"], -1);
  s.shell = true;
  s.command = {"echo hi && serve"};
  EXPECT_EQ(container_create_body(s, {0}, {})["Cmd"],
            (nlohmann::json{"/bin/sh", "-c", "echo hi && serve"}));
  s.command.clear();
  EXPECT_FALSE(container_create_body(s, {0}, {}).contains("Cmd"));  // the image's own
  EXPECT_EQ(owned_container_name(s), "gpuvisor-comfy");
  s.docker.container = "mine";
  EXPECT_EQ(owned_container_name(s), "mine");
}

TEST(DockerBody, InspectIsReadAndBadRepliesAreNamed) {
  const auto ok = parse_container_inspect(
      R"({"Id":"abc","State":{"Running":true,"Pid":42,"ExitCode":0,"OOMKilled":false},
          "Config":{"Tty":true,"Labels":{"io.gpuvisor.service":"comfy"}}})");
  ASSERT_TRUE(ok.ok()) << ok.error().message;
  EXPECT_EQ(ok->id, "abc");
  EXPECT_TRUE(ok->running);
  EXPECT_EQ(ok->pid, 42);
  EXPECT_TRUE(ok->tty);
  EXPECT_EQ(ok->service_label, "comfy");

  const auto exited = parse_container_inspect(
      R"({"Id":"abc","State":{"Running":false,"Pid":0,"ExitCode":137,"OOMKilled":true}})");
  ASSERT_TRUE(exited.ok());
  EXPECT_EQ(exited->exit_code, 137);
  EXPECT_TRUE(exited->oom_killed);

  const std::pair<const char*, const char*> bad[] = {
      {"<html>", "container inspect is not a JSON object"},
      {R"({"State":{}})", "container inspect has no Id"},
      {R"({"Id":"a"})", "container inspect has no State"},
      {R"({"Id":"a","State":{"Running":"yes"}})", "State.Running is missing or not a boolean"},
      {R"({"Id":"a","State":{"Running":true,"Pid":0}})", "a running container with no State.Pid"},
  };
  for (const auto& [body, why] : bad) {
    const auto r = parse_container_inspect(body);
    ASSERT_FALSE(r.ok()) << body;
    EXPECT_EQ(r.error().message, std::string("unexpected reply from the Docker engine: ") + why);
  }
}

TEST(DockerBody, EventsAreParsedAndGarbageIsDropped) {
  const auto die = parse_container_event(
      R"({"Type":"container","Action":"die","Actor":{"ID":"abc","Attributes":{"exitCode":"137"}},"timeNano":5})");
  ASSERT_TRUE(die);
  EXPECT_EQ(die->id, "abc");
  EXPECT_EQ(die->action, "die");
  EXPECT_EQ(die->exit_code, 137);
  EXPECT_EQ(die->time_ns, 5);
  const auto health = parse_container_event(
      R"({"Action":"health_status: unhealthy","Actor":{"ID":"abc"},"timeNano":6})");
  ASSERT_TRUE(health);
  EXPECT_EQ(health->action, "health_status: unhealthy");
  EXPECT_FALSE(parse_container_event("not json"));
  EXPECT_FALSE(parse_container_event(R"({"Action":"die"})"));
  EXPECT_FALSE(parse_container_event(
      R"({"Action":"die","Actor":{"ID":"a","Attributes":{"exitCode":"x"}}})"));
}

TEST(DockerBody, LogFramesAreDemultiplexedAcrossReads) {
  LogDemux demux(false);
  const std::string frame1 = std::string("\x01\0\0\0\0\0\0\x06", 8) + "hello\n";
  const std::string frame2 = std::string("\x02\0\0\0\0\0\0\x04", 8) + "err\n";
  const std::string both = frame1 + frame2;
  EXPECT_EQ(demux.feed(both.substr(0, 5)), "");
  EXPECT_EQ(demux.feed(both.substr(5, 12)), "hello\n");
  EXPECT_EQ(demux.feed(both.substr(17)), "err\n");
  LogDemux tty(true);
  EXPECT_EQ(tty.feed("raw text"), "raw text");
}

TEST(DockerClient, HostsMustBeUnixSockets) {
  EXPECT_EQ(*DockerClient::socket_from("unix:///run/docker.sock"), "/run/docker.sock");
  EXPECT_EQ(*DockerClient::socket_from("/run/docker.sock"), "/run/docker.sock");
  const auto tcp = DockerClient::socket_from("tcp://10.0.0.1:2375");
  ASSERT_FALSE(tcp.ok());
  EXPECT_NE(tcp.error().message.find("is not a unix socket"), std::string::npos);
  EXPECT_EQ(docker_message({404, R"({"message":"No such container: x"})"}), "No such container: x");
  EXPECT_EQ(docker_message({500, "plain text\n"}), "plain text");
  EXPECT_EQ(docker_message({502, ""}), "HTTP 502");
}

TEST(DockerLogLines, WholeLinesComeOutOnceWithoutTheirStamps) {
  DockerLogLines lines;
  EXPECT_EQ("a\n", lines.feed("2026-12-05T05:37:15.000000001Z a\n2026-12-05T05:37:15.5"));
  EXPECT_EQ("b c\nno stamp\n", lines.feed("00000000Z b c\nno stamp\n"));
  EXPECT_EQ(int64_t{1796449035} * 1'000'000'000 + 500'000'000, lines.last_ns());
  EXPECT_FALSE(parse_docker_timestamp("2026-12-05T05:37:15Z"));
  EXPECT_FALSE(parse_docker_timestamp("2026-12-05T05:37:15.00000000xZ"));
}

}  // namespace
}  // namespace gpuvisor
