#include "config/config_loader.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <future>
#include <memory>
#include <thread>

#include "config/closest_match.h"

namespace gpuvisor {
namespace {

using std::chrono::milliseconds;

// gmock is not linked into unit_tests, so its StartsWith / HasSubstr matchers are not at hand.
::testing::AssertionResult starts_with(const std::string& text, const std::string& prefix) {
  if (text.rfind(prefix, 0) == 0) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << "'" << text << "' does not start with '" << prefix << "'";
}

::testing::AssertionResult contains(const std::string& text, const std::string& part) {
  if (text.find(part) != std::string::npos) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << "'" << text << "' does not contain '" << part << "'";
}

// The error message of a config that must fail to load ("" when it loaded).
std::string errors_of(const std::string& yaml) {
  auto loaded = load_config_string(yaml, "test.yaml");
  if (loaded.ok()) return "";
  EXPECT_EQ(loaded.error().code, ErrorCode::kBadRequest);
  return loaded.error().message;
}

size_t line_count(const std::string& message) {
  return static_cast<size_t>(std::count(message.begin(), message.end(), '\n')) + 1;
}

TEST(ConfigLoader, FullExampleSetsEveryField) {
  const auto loaded = load_config_string(R"(daemon:
  listen: 0.0.0.0:9000
  state_dir: /var/lib/gpuvisor
  stop_services_on_exit: false
  use_cgroups: no
  log_ring_lines: 50
  nvml_library: /opt/nvidia/libnvidia-ml.so.1
  external_busy_percent: 30
  vram_release_timeout: 45s
services:
  comfyui:
    runtime: process
    description: Image generator
    command: ["/opt/comfy/run.sh", "--port", "8188"]
    env: {CUDA_VISIBLE_DEVICES: "0", MODE: fast}
    cwd: /opt/comfy
    vram_mb: 20000
    priority: -5
    phases: [3, 4]
    health:
      http: http://127.0.0.1:8188/system_stats
      interval: 3s
      timeout: 500ms
      failure_threshold: 4
      startup_poll_cap: 200ms
    startup_timeout: 2m
    stop_grace: 15s
    restart: always
    restart_backoff: 2s
    restart_backoff_max: 1h
    restart_limit: 0
    restart_reset_after: 90s
    pid_file: /run/comfy.pid
  probe-tcp:
    command: [a]
    health: {tcp: "127.0.0.1:8188"}
    restart: on-failure
  probe-exec:
    command: [b]
    health:
      exec: [/bin/check, arg]
    restart: no
)",
                                         "test.yaml");
  ASSERT_TRUE(loaded.ok()) << loaded.error().message;
  const Config& c = *loaded;
  EXPECT_EQ(c.path, "test.yaml");
  EXPECT_EQ(c.daemon.listen, "0.0.0.0:9000");
  EXPECT_EQ(c.daemon.state_dir, "/var/lib/gpuvisor");
  EXPECT_FALSE(c.daemon.stop_services_on_exit);
  EXPECT_FALSE(c.daemon.use_cgroups);
  EXPECT_EQ(c.daemon.log_ring_lines, 50u);
  EXPECT_EQ(c.daemon.nvml_library, "/opt/nvidia/libnvidia-ml.so.1");
  EXPECT_EQ(c.daemon.external_busy_percent, 30u);
  EXPECT_EQ(c.daemon.vram_release_timeout, Millis(45'000));
  ASSERT_EQ(c.services.size(), 3u);

  const ServiceSpec& s = c.services[0];
  EXPECT_EQ(s.name, "comfyui");
  EXPECT_EQ(s.origin, "test.yaml:11:3");
  EXPECT_EQ(s.runtime, RuntimeKind::kProcess);
  EXPECT_EQ(s.description, "Image generator");
  EXPECT_EQ(s.command, (std::vector<std::string>{"/opt/comfy/run.sh", "--port", "8188"}));
  EXPECT_FALSE(s.shell);
  EXPECT_EQ(s.env,
            (std::map<std::string, std::string>{{"CUDA_VISIBLE_DEVICES", "0"}, {"MODE", "fast"}}));
  EXPECT_EQ(s.cwd, "/opt/comfy");
  EXPECT_EQ(s.vram_mb, 20000);
  EXPECT_EQ(s.priority, -5);
  EXPECT_EQ(s.phases, (std::vector<int>{3, 4}));
  EXPECT_EQ(s.health.http, "http://127.0.0.1:8188/system_stats");
  EXPECT_TRUE(s.health.tcp.empty());
  EXPECT_TRUE(s.health.exec.empty());
  EXPECT_EQ(s.health.interval, milliseconds(3000));
  EXPECT_EQ(s.health.timeout, milliseconds(500));
  EXPECT_EQ(s.health.failure_threshold, 4);
  EXPECT_EQ(s.health.startup_poll_cap, milliseconds(200));
  EXPECT_EQ(s.startup_timeout, milliseconds(120'000));
  EXPECT_EQ(s.stop_grace, milliseconds(15'000));
  EXPECT_EQ(s.restart, RestartPolicy::kAlways);
  EXPECT_EQ(s.restart_backoff, milliseconds(2000));
  EXPECT_EQ(s.restart_backoff_max, milliseconds(3'600'000));
  EXPECT_EQ(s.restart_limit, 0);
  EXPECT_EQ(s.restart_reset_after, milliseconds(90'000));
  EXPECT_EQ(s.pid_file, "/run/comfy.pid");

  EXPECT_EQ(c.services[1].name, "probe-tcp");
  EXPECT_EQ(c.services[1].health.tcp, "127.0.0.1:8188");
  EXPECT_EQ(c.services[1].restart, RestartPolicy::kOnFailure);
  EXPECT_EQ(c.services[2].health.exec, (std::vector<std::string>{"/bin/check", "arg"}));
  EXPECT_EQ(c.services[2].restart, RestartPolicy::kNo);  // YAML 1.1's `no` is still the policy
  EXPECT_EQ(c.find("probe-exec"), &c.services[2]);
}

TEST(ConfigLoader, DefaultsAreTheStructDefaults) {
  const auto loaded = load_config_string("services:\n  a:\n    command: [x]\n", "test.yaml");
  ASSERT_TRUE(loaded.ok()) << loaded.error().message;
  const DaemonSpec d;
  EXPECT_EQ(loaded->daemon.listen, d.listen);
  EXPECT_EQ(loaded->daemon.state_dir, d.state_dir);
  EXPECT_EQ(loaded->daemon.stop_services_on_exit, d.stop_services_on_exit);
  EXPECT_EQ(loaded->daemon.use_cgroups, d.use_cgroups);
  EXPECT_EQ(loaded->daemon.log_ring_lines, d.log_ring_lines);

  ASSERT_EQ(loaded->services.size(), 1u);
  const ServiceSpec& s = loaded->services[0];
  ServiceSpec expected;
  EXPECT_EQ(s.command, std::vector<std::string>{"x"});
  EXPECT_EQ(s.description, expected.description);
  EXPECT_EQ(s.env, expected.env);
  EXPECT_EQ(s.cwd, expected.cwd);
  EXPECT_EQ(s.vram_mb, expected.vram_mb);
  EXPECT_EQ(s.priority, expected.priority);
  EXPECT_EQ(s.phases, expected.phases);
  EXPECT_TRUE(s.health.empty());
  EXPECT_EQ(s.health.interval, expected.health.interval);
  EXPECT_EQ(s.health.timeout, expected.health.timeout);
  EXPECT_EQ(s.health.failure_threshold, expected.health.failure_threshold);
  EXPECT_EQ(s.health.startup_poll_cap, expected.health.startup_poll_cap);
  EXPECT_EQ(s.startup_timeout, expected.startup_timeout);
  EXPECT_EQ(s.stop_grace, expected.stop_grace);
  EXPECT_EQ(s.restart, expected.restart);
  EXPECT_EQ(s.restart_backoff, expected.restart_backoff);
  EXPECT_EQ(s.restart_backoff_max, expected.restart_backoff_max);
  EXPECT_EQ(s.restart_limit, expected.restart_limit);
  EXPECT_EQ(s.restart_reset_after, expected.restart_reset_after);
  EXPECT_EQ(s.pid_file, expected.pid_file);
}

TEST(ConfigLoader, GpuPinsAServiceToOneIndex) {
  auto loaded = load_config_string("services:\n  a:\n    command: [x]\n    gpu: 1\n", "t.yaml");
  ASSERT_TRUE(loaded.ok()) << loaded.error().message;
  EXPECT_EQ(std::vector<unsigned>{1}, loaded->services[0].pinned_gpus);
  EXPECT_EQ(1u, loaded->services[0].gpu_count);
  EXPECT_TRUE(contains(errors_of("services:\n  a:\n    command: [x]\n    gpu: 64\n"),
                       "'gpu' must be at most 63, got 64"));
}

TEST(ConfigLoader, AServiceSpansGpusPinnedOrCounted) {
  auto loaded = load_config_string(R"(services:
  tp:
    command: [x]
    vram_mb: 20000
    gpu: [0, 1]
  any2:
    command: [x]
    vram_mb: 20000
    gpus: 2
  one_of:
    command: [x]
    gpu: [2, 3]
    gpus: 1
)",
                                   "t.yaml");
  ASSERT_TRUE(loaded.ok()) << loaded.error().message;
  EXPECT_EQ((std::vector<unsigned>{0, 1}), loaded->services[0].pinned_gpus);
  EXPECT_EQ(2u, loaded->services[0].gpu_count);  // a pinned list spans all it names
  EXPECT_TRUE(loaded->services[1].pinned_gpus.empty());
  EXPECT_EQ(2u, loaded->services[1].gpu_count);
  EXPECT_EQ(1u, loaded->services[2].gpu_count);  // one of the two
}

TEST(ConfigLoader, BadGpuSetsSayWhatAndWhere) {
  const auto message = errors_of(R"(services:
  a:
    command: [x]
    vram_mb: 1000
    gpu: [0, 0]
  b:
    command: [x]
    vram_mb: 1000
    gpu: [1]
    gpus: 2
  c:
    command: [x]
    gpus: 2
  d:
    command: [x]
    gpu: []
  e:
    command: [x]
    gpus: 0
)");
  EXPECT_TRUE(contains(message, "test.yaml:5:14: GPU 0 is listed twice in 'gpu'")) << message;
  EXPECT_TRUE(contains(message,
                       "test.yaml:10:11: service 'b': 'gpus: 2' but 'gpu' lists only 1 GPU "
                       "to choose from"))
      << message;
  EXPECT_TRUE(contains(message, "test.yaml:13:11: service 'c': 'gpus: 2' needs vram_mb (per GPU)"))
      << message;
  EXPECT_TRUE(contains(message, "test.yaml:16:10: 'gpu' must be a GPU index or a list of them"))
      << message;
  EXPECT_TRUE(contains(message, "'gpus' must be at least 1, got 0")) << message;
}

TEST(ConfigLoader, SleepAndWakeHooksOnAnyRuntime) {
  const auto loaded = load_config_string(R"(services:
  vllm:
    command: [vllm, serve, m, --enable-sleep-mode]
    sleep: {http: "http://127.0.0.1:8000/sleep?level=1"}
    wake: {http: "http://127.0.0.1:8000/wake_up", timeout: 1m}
)",
                                         "t.yaml");
  ASSERT_TRUE(loaded.ok()) << loaded.error().message;
  const auto& s = loaded->services[0];
  EXPECT_EQ(s.sleep.http, "http://127.0.0.1:8000/sleep?level=1");
  EXPECT_EQ(s.wake.timeout, milliseconds(60'000));
}

TEST(ConfigLoader, ExternalSleepAndTheServicesSleepAreOneHook) {
  const auto message = errors_of(R"(services:
  o:
    runtime: external
    external: {port: 11434, sleep: {exec: [a]}}
    sleep: {exec: [b]}
)");
  EXPECT_TRUE(contains(message, "'external.sleep' and 'sleep' are the same hook; keep one"))
      << message;
}

TEST(ConfigLoader, ExternalBusyPercentIsAPercentage) {
  EXPECT_TRUE(contains(errors_of("daemon:\n  external_busy_percent: 0\nservices: {}\n"),
                       "test.yaml:2:26: 'external_busy_percent' must be at least 1, got 0"));
  EXPECT_TRUE(contains(errors_of("daemon:\n  external_busy_percent: 101\nservices: {}\n"),
                       "'external_busy_percent' must be at most 100, got 101"));
}

TEST(ConfigLoader, EmptyServicesAndEmptySectionsAreAllowed) {
  auto loaded = load_config_string("services: {}\n", "test.yaml");
  ASSERT_TRUE(loaded.ok()) << loaded.error().message;
  EXPECT_TRUE(loaded->services.empty());
  loaded = load_config_string("daemon:\nservices:\n", "test.yaml");
  ASSERT_TRUE(loaded.ok()) << loaded.error().message;
  EXPECT_TRUE(loaded->services.empty());
}

TEST(ConfigLoader, ShellCommandIsOneString) {
  const auto loaded = load_config_string(
      "services:\n  a:\n    command: ./run.sh --port 1 | tee log\n    shell: true\n", "test.yaml");
  ASSERT_TRUE(loaded.ok()) << loaded.error().message;
  EXPECT_TRUE(loaded->services[0].shell);
  EXPECT_EQ(loaded->services[0].command, std::vector<std::string>{"./run.sh --port 1 | tee log"});
}

TEST(ConfigLoader, ScalarCommandWithoutShellSuggestsBothFixes) {
  const auto message = errors_of("services:\n  a:\n    command: ./run.sh --port 1\n");
  EXPECT_TRUE(starts_with(message, "test.yaml:3:14: 'command' is a single string"));
  EXPECT_TRUE(contains(message, "shell: true"));
  EXPECT_TRUE(contains(message, "list"));
}

TEST(ConfigLoader, ShellWithListCommandIsAnError) {
  const auto message = errors_of("services:\n  a:\n    shell: true\n    command: [a, b]\n");
  EXPECT_TRUE(starts_with(message, "test.yaml:4:14: 'command' must be a single string"));
}

TEST(ConfigLoader, EnvKeepsNumbersAndBoolsAsText) {
  const auto loaded = load_config_string(
      "services:\n  a:\n    command: [x]\n    env:\n      PORT: 8188\n      DEBUG: true\n"
      "      RATIO: 0.50\n      EMPTY: \"\"\n",
      "test.yaml");
  ASSERT_TRUE(loaded.ok()) << loaded.error().message;
  EXPECT_EQ(loaded->services[0].env, (std::map<std::string, std::string>{
                                         {"PORT", "8188"},
                                         {"DEBUG", "true"},
                                         {"RATIO", "0.50"},
                                         {"EMPTY", ""},
                                     }));
}

TEST(ConfigLoader, InvalidEnvNameAndValue) {
  const auto message =
      errors_of("services:\n  a:\n    command: [x]\n    env:\n      1BAD: x\n      LIST: [a]\n");
  EXPECT_EQ(line_count(message), 2u) << message;
  EXPECT_TRUE(starts_with(message, "test.yaml:5:7: invalid env name '1BAD'"));
  EXPECT_TRUE(contains(message, "\ntest.yaml:6:13: 'LIST' must be a string, got a list"));
}

TEST(ConfigLoader, UnknownTopLevelKeySuggestsTheNearestOne) {
  const auto message = errors_of("services: {}\ndeamon: {}\n");
  EXPECT_EQ(message,
            "test.yaml:2:1: unknown key 'deamon' at the top level (did you mean 'daemon'?)");
}

TEST(ConfigLoader, UnknownServiceKeySuggestsTheNearestOne) {
  const auto message = errors_of("services:\n  a:\n    command: [x]\n    vram: 5\n    zzzzzz: 1\n");
  EXPECT_EQ(line_count(message), 2u) << message;
  EXPECT_TRUE(starts_with(message,
                          "test.yaml:4:5: unknown key 'vram' in service 'a' (did you mean "
                          "'vram_mb'?)\n"));
  // Nothing is near enough to suggest: no "did you mean".
  EXPECT_TRUE(contains(message, "\ntest.yaml:5:5: unknown key 'zzzzzz' in service 'a'"));
  EXPECT_EQ(message.find("did you mean", message.find('\n')), std::string::npos);
}

TEST(ConfigLoader, UnknownDaemonAndHealthKeys) {
  const auto message = errors_of(
      "daemon:\n  listn: 1.2.3.4:5\nservices:\n  a:\n    command: [x]\n    health:\n"
      "      intervall: 5s\n");
  EXPECT_EQ(message,
            "test.yaml:2:3: unknown key 'listn' in 'daemon' (did you mean 'listen'?)\n"
            "test.yaml:7:7: unknown key 'intervall' in 'health' of service 'a' (did you mean "
            "'interval'?)");
}

TEST(ConfigLoader, WrongTypes) {
  const auto message = errors_of(
      "services:\n  a:\n    command: {x: 1}\n    vram_mb: abc\n    shell: maybe\n"
      "    description: [a]\n");
  EXPECT_EQ(message,
            "test.yaml:3:14: 'command' must be a list of strings, got a map\n"
            "test.yaml:4:14: 'vram_mb' must be an integer, got 'abc'\n"
            "test.yaml:5:12: 'shell' must be true or false, got 'maybe'\n"
            "test.yaml:6:18: 'description' must be a string, got a list");
}

TEST(ConfigLoader, IntegerRanges) {
  const auto message = errors_of(
      "daemon:\n  log_ring_lines: 5\nservices:\n  a:\n    command: [x]\n    vram_mb: -1\n"
      "    priority: 99999999999\n    phases: [1, -2]\n    health: {failure_threshold: 0}\n");
  EXPECT_EQ(line_count(message), 5u) << message;
  EXPECT_TRUE(
      starts_with(message, "test.yaml:2:19: 'log_ring_lines' must be at least 10, got 5\n"));
  EXPECT_TRUE(contains(message, "\ntest.yaml:6:14: 'vram_mb' must be at least 0, got -1\n"));
  EXPECT_TRUE(contains(message, "\ntest.yaml:7:15: 'priority' is too large"));
  EXPECT_TRUE(contains(message, "\ntest.yaml:8:17: 'phases' must be at least 0, got -2\n"));
  EXPECT_TRUE(contains(message, "\ntest.yaml:9:33: 'failure_threshold' must be at least 1"));
}

TEST(ConfigLoader, MissingCommand) {
  const auto message = errors_of("services:\n  web:\n    vram_mb: 10\n  other:\n");
  EXPECT_EQ(message,
            "test.yaml:2:3: service 'web': 'command' is required\n"
            "test.yaml:4:3: service 'other': 'command' is required");
}

TEST(ConfigLoader, EmptyCommand) {
  const auto message = errors_of("services:\n  a:\n    command: []\n  b:\n    command: ['', x]\n");
  EXPECT_EQ(message,
            "test.yaml:3:14: 'command' must not be empty\n"
            "test.yaml:5:14: 'command': the program (first element) is empty");
}

TEST(ConfigLoader, DuplicateServiceName) {
  const auto message = errors_of(
      "services:\n  web:\n    command: [a]\n  db:\n    command: [b]\n  web:\n"
      "    command: [c]\n");
  EXPECT_EQ(message, "test.yaml:6:3: duplicate service name 'web' (first declared at 2:3)");
}

TEST(ConfigLoader, DuplicateKeyInAService) {
  const auto message = errors_of("services:\n  a:\n    command: [a]\n    command: [b]\n");
  EXPECT_EQ(message, "test.yaml:4:5: duplicate key 'command' (first declared at 3:5)");
}

TEST(ConfigLoader, InvalidServiceName) {
  const auto message = errors_of("services:\n  -web:\n    command: [a]\n");
  EXPECT_TRUE(starts_with(message, "test.yaml:2:3: invalid service name '-web'"));
}

TEST(ConfigLoader, BadDuration) {
  const auto message = errors_of(
      "services:\n  a:\n    command: [x]\n    stop_grace: 10 sec\n    startup_timeout: 30\n"
      "    health: {interval: 0s}\n");
  EXPECT_EQ(message,
            "test.yaml:4:17: 'stop_grace': bad duration '10 sec' (use e.g. 500ms, 10s, 5m)\n"
            "test.yaml:5:22: 'startup_timeout': bad duration '30' (a number needs a unit: 30s, "
            "30ms)\n"
            "test.yaml:6:24: 'interval' must be greater than 0");
}

TEST(ConfigLoader, QueueMaxWaitIsADurationAndZeroTurnsItOff) {
  EXPECT_EQ(Millis(180'000), load_config_string("services: {}\n", "t")->daemon.queue_max_wait);
  EXPECT_EQ(Millis(120'000), load_config_string("daemon: {queue_max_wait: 2m}\nservices: {}\n", "t")
                                 ->daemon.queue_max_wait);
  EXPECT_EQ(Millis(0), load_config_string("daemon: {queue_max_wait: 0s}\nservices: {}\n", "t")
                           ->daemon.queue_max_wait);
  EXPECT_EQ(errors_of("daemon: {queue_max_wait: soon}\nservices: {}\n"),
            "test.yaml:1:26: 'queue_max_wait': bad duration 'soon' (use e.g. 500ms, 10s, 5m)");
}

TEST(ConfigLoader, UnknownRestartPolicyListsTheValidOnes) {
  const auto message = errors_of("services:\n  a:\n    command: [x]\n    restart: sometimes\n");
  EXPECT_EQ(message,
            "test.yaml:4:14: unknown restart policy 'sometimes' (valid: no, on-failure, always)");
}

TEST(ConfigLoader, Runtimes) {
  const auto message = errors_of(
      "services:\n  a:\n    command: [x]\n    runtime: kubernetes\n  b:\n    command: [x]\n"
      "    runtime: vm\n");
  EXPECT_EQ(line_count(message), 2u) << message;
  EXPECT_TRUE(starts_with(message,
                          "test.yaml:4:14: runtime 'kubernetes' is declared but not supported "
                          "yet (supported: process, docker, external, remote)\n"));
  EXPECT_TRUE(contains(
      message,
      "\ntest.yaml:7:14: unknown runtime 'vm' (valid: process, docker, external, remote)"));
}

TEST(ConfigLoader, DockerServices) {
  const auto loaded = load_config_string(R"(daemon: {docker_host: "unix:///run/d.sock"}
services:
  tts:
    runtime: docker
    docker: {container: mcn_cosyvoice}
  comfy:
    runtime: docker
    command: [python, main.py]
    env: {A: "1"}
    docker:
      image: ghcr.io/x/comfy:1.2
      mounts: ["/models:/models:ro"]
      ports: ["8188:8188", "127.0.0.1:9000:9000/udp"]
      network: none
      init: false
      gpus: all
)",
                                         "t.yaml");
  ASSERT_TRUE(loaded.ok()) << loaded.error().message;
  EXPECT_EQ(loaded->daemon.docker_host, "unix:///run/d.sock");
  const auto& tts = loaded->services[0];
  EXPECT_EQ(tts.runtime, RuntimeKind::kDocker);
  EXPECT_EQ(tts.docker.container, "mcn_cosyvoice");
  EXPECT_STREQ(execution_mode(tts), "docker");
  const auto& comfy = loaded->services[1];
  EXPECT_EQ(comfy.docker.image, "ghcr.io/x/comfy:1.2");
  EXPECT_EQ(comfy.docker.mounts, std::vector<std::string>{"/models:/models:ro"});
  EXPECT_EQ(comfy.docker.ports.size(), 2u);
  EXPECT_EQ(comfy.docker.network, "none");
  EXPECT_FALSE(comfy.docker.init);
  EXPECT_EQ(comfy.docker.gpus, DockerSpec::Gpus::kAll);
  EXPECT_EQ(comfy.command, (std::vector<std::string>{"python", "main.py"}));
}

TEST(ConfigLoader, BadDockerServicesSayWhatAndWhere) {
  const auto message = errors_of(R"(daemon: {docker_host: "tcp://1.2.3.4:2375"}
services:
  a:
    runtime: docker
  b:
    runtime: docker
    command: [x]
    docker: {container: "bad name", mounts: ["models:/m", "/m:/m:rx"], ports: ["99999:1"], gpus: some}
  c:
    command: [x]
    docker: {container: x}
  d:
    runtime: docker
    pid_file: /run/x.pid
    docker: {container: x}
)");
  EXPECT_TRUE(starts_with(message, "test.yaml:1:23: 'docker_host' must be a unix socket"))
      << message;
  EXPECT_TRUE(contains(message,
                       "test.yaml:3:3: service 'a': a docker service needs "
                       "docker.container (an existing container) or docker.image"))
      << message;
  EXPECT_TRUE(contains(message, "test.yaml:8:25: 'container' must be a container name")) << message;
  EXPECT_TRUE(contains(message, "test.yaml:8:46: each of 'mounts' must be")) << message;
  EXPECT_TRUE(contains(message, "test.yaml:8:59: each of 'mounts' must be")) << message;
  EXPECT_TRUE(contains(message, "test.yaml:8:80: each of 'ports' must be")) << message;
  EXPECT_TRUE(contains(message, "test.yaml:8:98: unknown docker.gpus 'some'")) << message;
  EXPECT_TRUE(contains(message, "test.yaml:7:14: service 'b': 'command' needs docker.image"))
      << message;
  EXPECT_TRUE(contains(message, "test.yaml:11:13: service 'c': 'docker' needs 'runtime: docker'"))
      << message;
  EXPECT_TRUE(contains(message, "test.yaml:14:15: service 'd': 'pid_file' is for process services"))
      << message;
}

TEST(ConfigLoader, ExternalServices) {
  const auto loaded = load_config_string(R"(services:
  ollama:
    runtime: external
    vram_mb: 18000
    external:
      port: 11434
      sleep: {http: "http://127.0.0.1:11434/api/generate", body: '{"model":"q","keep_alive":0}'}
      wake: {exec: [/usr/local/bin/warm, q], timeout: 2m}
    health: {http: "http://127.0.0.1:11434/api/tags"}
)",
                                         "t.yaml");
  ASSERT_TRUE(loaded.ok()) << loaded.error().message;
  const auto& s = loaded->services[0];
  EXPECT_EQ(s.runtime, RuntimeKind::kExternal);
  EXPECT_EQ(s.external.port, 11434u);
  // external.sleep and external.wake still work: they are the service's own hooks.
  EXPECT_EQ(s.sleep.http, "http://127.0.0.1:11434/api/generate");
  EXPECT_EQ(s.sleep.method, "POST");
  EXPECT_EQ(s.sleep.body, R"({"model":"q","keep_alive":0})");
  EXPECT_EQ(s.wake.exec, (std::vector<std::string>{"/usr/local/bin/warm", "q"}));
  EXPECT_EQ(s.wake.timeout, milliseconds(120'000));
  EXPECT_STREQ(execution_mode(s), "external");
}

TEST(ConfigLoader, BadExternalServicesSayWhatAndWhere) {
  const auto message = errors_of(R"(services:
  a:
    runtime: external
  b:
    runtime: external
    command: [x]
    external: {port: 70000, sleep: {}, wake: {http: "http://x/", exec: [y], method: FETCH}}
  c:
    command: [x]
    external: {port: 1}
)");
  EXPECT_TRUE(contains(message,
                       "test.yaml:2:3: service 'a': an external service needs a way to "
                       "be found: external.port, external.pid_file or a health check"))
      << message;
  EXPECT_TRUE(contains(message,
                       "test.yaml:6:14: service 'b': an external service has no "
                       "'command': gpuvisor does not start it"))
      << message;
  EXPECT_TRUE(contains(message, "test.yaml:7:22: 'port' must be at most 65535")) << message;
  EXPECT_TRUE(contains(message, "'sleep' of service 'b' needs 'http' (a URL) or 'exec'"))
      << message;
  EXPECT_TRUE(contains(message, "'wake' of service 'b' has both 'http' and 'exec'; set one"))
      << message;
  EXPECT_TRUE(contains(message, "'method' must be GET, POST, PUT, PATCH or DELETE, got 'FETCH'"))
      << message;
  EXPECT_TRUE(contains(message, "service 'c': 'external' needs 'runtime: external'")) << message;
}

TEST(ConfigLoader, CondaEnvironment) {
  const auto loaded = load_config_string(
      "services:\n  a:\n    command: [python, x.py]\n    conda_env: vision\n", "t.yaml");
  ASSERT_TRUE(loaded.ok()) << loaded.error().message;
  EXPECT_EQ(loaded->services[0].conda_env, "vision");
  EXPECT_STREQ(execution_mode(loaded->services[0]), "conda_env");
  EXPECT_TRUE(contains(errors_of("services:\n  a:\n    command: [x]\n    conda_env: a/b\n"),
                       "test.yaml:4:16: 'conda_env' must be a conda environment name"));
}

TEST(ConfigLoader, HealthWithBothHttpAndTcp) {
  const auto message = errors_of(
      "services:\n  a:\n    command: [x]\n    health:\n      http: http://127.0.0.1:1/\n"
      "      tcp: 127.0.0.1:1\n");
  EXPECT_TRUE(starts_with(message, "test.yaml:6:7: 'health' has both 'http' and 'tcp'"));
  EXPECT_EQ(line_count(message), 1u) << message;
}

TEST(ConfigLoader, BadAddressesAndPaths) {
  const auto message = errors_of(
      "daemon: {listen: 'localhost:99999'}\nservices:\n  a:\n    command: [x]\n    cwd: opt/x\n"
      "    health: {http: 'https://x/'}\n  b:\n    command: [x]\n    pid_file: run.pid\n"
      "    health: {tcp: nohost}\n");
  EXPECT_EQ(message,
            "test.yaml:1:18: 'listen' must be HOST:PORT with a port 0-65535, got "
            "'localhost:99999'\n"
            "test.yaml:5:10: 'cwd' must be an absolute path, got 'opt/x'\n"
            "test.yaml:6:20: 'http' must be a URL starting with http://, got 'https://x/'\n"
            "test.yaml:9:15: 'pid_file' must be an absolute path, got 'run.pid'\n"
            "test.yaml:10:19: 'tcp' must be HOST:PORT with a port 0-65535, got 'nohost'");
}

TEST(ConfigLoader, ServicesMissing) {
  EXPECT_EQ(errors_of("daemon:\n  listen: 127.0.0.1:1\n"), "test.yaml:1:1: 'services' is required");
  EXPECT_EQ(errors_of(""), "test.yaml:1:1: the config is empty: 'services' is required");
  EXPECT_EQ(errors_of("# nothing yet\n"),
            "test.yaml:1:1: the config is empty: 'services' is required");
}

TEST(ConfigLoader, TopLevelNotAMap) {
  EXPECT_TRUE(
      starts_with(errors_of("- a\n- b\n"),
                  "test.yaml:1:1: the top level must be a map with 'services', got a list"));
  EXPECT_TRUE(starts_with(errors_of("services: [a]\n"),
                          "test.yaml:1:11: 'services' must be a map of service name to settings"));
}

TEST(ConfigLoader, YamlSyntaxErrorHasAPosition) {
  const auto message = errors_of("services:\n  a:\n    command: [x, y\n  b: 1\n");
  EXPECT_TRUE(starts_with(message, "test.yaml:"));
  EXPECT_TRUE(contains(message, "YAML syntax error"));
  EXPECT_EQ(line_count(message), 1u) << message;
  EXPECT_TRUE(starts_with(errors_of("a: b: c\n"), "test.yaml:1:5: YAML syntax error: "));
  EXPECT_TRUE(starts_with(errors_of("services:\n  a: *nothing\n"), "test.yaml:2:6: YAML syntax"));
}

// yaml-cpp 0.7's LoadAll never returns on a document that starts with a stray ',' (found by
// fuzz/config_fuzz); run on a thread so that, without the fix, the test fails rather than hangs.
TEST(ConfigLoader, StrayCommaIsASyntaxErrorNotAHang) {
  for (const std::string yaml : {",", "services: {}\n---\n,\n"}) {
    auto promise = std::make_shared<std::promise<std::string>>();
    auto answer = promise->get_future();
    std::thread([promise, yaml] { promise->set_value(errors_of(yaml)); }).detach();
    ASSERT_EQ(answer.wait_for(std::chrono::seconds(10)), std::future_status::ready) << yaml;
    EXPECT_TRUE(contains(answer.get(), "YAML syntax error: unexpected character")) << yaml;
  }
}

// JSON (the API's replies) cannot carry it: dumping such a string throws (fuzz/manifest_fuzz).
TEST(ConfigLoader, TextThatIsNotUtf8IsRefusedWithItsPosition) {
  EXPECT_EQ(errors_of("services:\n  a:\n    command: [caf\xe9]\n"),
            "test.yaml:3:18: YAML syntax error: not valid UTF-8 (byte 0xE9)");
  EXPECT_EQ(errors_of("# \xc3\xa9t\xc3\xa9 \xed\xa0\x80\nservices: {}\n"),
            "test.yaml:1:7: YAML syntax error: not valid UTF-8 (byte 0xED)");
  EXPECT_TRUE(load_config_string("# caf\xc3\xa9 \xf0\x9f\x9a\x80\nservices: {}\n", "t").ok());
}

// yaml-cpp reads "\0N" as a lone 0x85 byte: a key that then made the error message itself
// impossible to send as JSON (fuzz/manifest_fuzz).
TEST(ConfigLoader, AControlCharacterIsRefusedWithItsPosition) {
  EXPECT_EQ(errors_of(std::string("services:\n  a\0N:\n", 16)),
            "test.yaml:2:4: YAML syntax error: a control character is not allowed (byte 0x00)");
  EXPECT_EQ(errors_of("services: {}\nx: \x7f\n"),
            "test.yaml:2:4: YAML syntax error: a control character is not allowed (byte 0x7F)");
  EXPECT_TRUE(load_config_string("services: {}\r\n# a\ttab\r\n", "t").ok());
}

// Each problem is one located line, even when what it quotes has a newline (fuzz/config_fuzz).
TEST(ConfigLoader, ProblemsQuotingANewlineStayOneLine) {
  const auto message = errors_of("services:\n  \"a\\nb\":\n    command: [x]\n");
  EXPECT_TRUE(starts_with(message, "test.yaml:2:3: ")) << message;
  EXPECT_EQ(message.find('\n'), std::string::npos) << message;
  EXPECT_TRUE(contains(message, "a\\nb")) << message;
}

TEST(ConfigLoader, OnlyOneYamlDocument) {
  EXPECT_TRUE(starts_with(errors_of("services: {}\n---\nservices: {a: {command: [x]}}\n"),
                          "test.yaml:3:1: only one YAML document is allowed"));
  EXPECT_EQ(errors_of("---\nservices: {}\n---\n"), "");  // an empty one is harmless
}

TEST(ConfigLoader, MultipleErrorsAreReportedTogetherInDocumentOrder) {
  const auto message = errors_of(
      "daemon:\n  use_cgroups: sure\nservices:\n  a:\n    restart: never\n    vram_mb: lots\n"
      "  b:\n    command: [x]\n    stop_grace: forever\n");
  EXPECT_EQ(message,
            "test.yaml:2:16: 'use_cgroups' must be true or false, got 'sure'\n"
            "test.yaml:4:3: service 'a': 'command' is required\n"
            "test.yaml:5:14: unknown restart policy 'never' (valid: no, on-failure, always)\n"
            "test.yaml:6:14: 'vram_mb' must be an integer, got 'lots'\n"
            "test.yaml:9:17: 'stop_grace': bad duration 'forever' (use e.g. 500ms, 10s, 5m)");
}

TEST(ConfigReport, KeepsWhatCouldBeReadBesideEveryProblem) {
  const auto report = read_config_string(
      "services:\n  good:\n    command: [x]\n  bad:\n    command: [y]\n    vram_mb: lots\n"
      "  worse:\n    priority: high\n",
      "c.yaml");
  EXPECT_EQ(report.problems,
            (std::vector<std::string>{"c.yaml:6:14: 'vram_mb' must be an integer, got 'lots'",
                                      "c.yaml:7:3: service 'worse': 'command' is required",
                                      "c.yaml:8:15: 'priority' must be an integer, got 'high'"}));
  ASSERT_EQ(1u, report.config.services.size());
  EXPECT_EQ("good", report.config.services[0].name);
  EXPECT_EQ(report.service_names, (std::vector<std::string>{"good", "bad", "worse"}));
}

TEST(ConfigReport, AnInlineManifestKnowsWhereItIs) {
  const auto report = read_config_string(
      "services: {}\nplugins:\n  manifests:\n    - {name: a}\n    - name: b\n", "c.yaml");
  ASSERT_TRUE(report.problems.empty());
  EXPECT_EQ(report.config.plugins.manifest_origins,
            (std::vector<std::string>{"c.yaml:4:7", "c.yaml:5:7"}));
}

TEST(ConfigLoader, LoadFileUsesThePathAsOrigin) {
  const std::string path = ::testing::TempDir() + "gpuvisor_config_loader_test.yaml";
  {
    std::ofstream out(path);
    out << "services:\n  a:\n    command: [x]\n  b:\n    command: [y]\n    vram_mb: x\n";
  }
  auto loaded = load_config_file(path);
  ASSERT_FALSE(loaded.ok());
  EXPECT_EQ(loaded.error().message, path + ":6:14: 'vram_mb' must be an integer, got 'x'");
  {
    std::ofstream out(path);
    out << "services:\n  a:\n    command: [x]\n";
  }
  loaded = load_config_file(path);
  ASSERT_TRUE(loaded.ok()) << loaded.error().message;
  EXPECT_EQ(loaded->path, path);
  EXPECT_EQ(loaded->services[0].origin, path + ":2:3");
  std::remove(path.c_str());
}

TEST(ConfigLoader, MissingFile) {
  const std::string path = ::testing::TempDir() + "no/such/gpuvisor.yaml";
  const auto loaded = load_config_file(path);
  ASSERT_FALSE(loaded.ok());
  EXPECT_EQ(loaded.error().code, ErrorCode::kBadRequest);
  EXPECT_EQ(loaded.error().message, path + ": cannot read: No such file or directory");
}

TEST(ClosestMatch, SuggestsNearCandidatesOnly) {
  const std::vector<std::string> keys = {"command", "cwd", "env", "restart", "restart_limit"};
  EXPECT_EQ(closest_match("comand", keys), "command");
  EXPECT_EQ(closest_match("comamnd", keys), "command");  // a swap is one step
  EXPECT_EQ(closest_match("Command", keys), "command");
  EXPECT_EQ(closest_match("restrat_limit", keys), "restart_limit");
  EXPECT_EQ(closest_match("ebv", keys), "env");
  EXPECT_EQ(closest_match("xy", keys), std::nullopt);
  EXPECT_EQ(closest_match("description", keys), std::nullopt);
  EXPECT_EQ(closest_match("restart_lim", keys), "restart_limit");  // a truncated name
  EXPECT_EQ(closest_match("cw", {"cwd_long"}), std::nullopt);      // too short to guess from
  EXPECT_EQ(closest_match("anything", {}), std::nullopt);
  EXPECT_EQ(edit_distance("kitten", "sitting"), 3u);
  EXPECT_EQ(edit_distance("", "abc"), 3u);
}

}  // namespace
}  // namespace gpuvisor
