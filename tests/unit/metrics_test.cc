// /metrics as text: one scrape with something in every family, against the exact text it must
// be (tests/clients checks the format with promtool; this checks every byte).
#include "api/metrics.h"

#include <gtest/gtest.h>

#include "core/duration.h"

namespace gpuvisor {
namespace {

ServiceSpec spec(const std::string& name, int priority) {
  ServiceSpec s;
  s.name = name;
  s.priority = priority;
  return s;
}

GpuDevice device(unsigned index, const std::string& uuid, const std::string& name, uint64_t total,
                 uint64_t used) {
  GpuDevice d;
  d.index = index;
  d.uuid = uuid;
  d.name = name;
  d.total_bytes = total;
  d.used_bytes = used;
  return d;
}

GpuProcess process(unsigned gpu, pid_t pid, std::optional<uint64_t> used) {
  GpuProcess p;
  p.gpu = gpu;
  p.pid = pid;
  p.used_bytes = used;
  return p;
}

WorkerInfo worker(const std::string& plugin, const std::string& status) {
  WorkerInfo w;
  w.plugin = plugin;
  w.status = status;
  return w;
}

// Captured from render() as it was before it was split into helpers; any byte that changes is a
// change to what Prometheus and its users see.
const char* kExpected =
    R"golden(# HELP gpuvisor_service_state 1 for the state each service is in, 0 for the others
# TYPE gpuvisor_service_state gauge
gpuvisor_service_state{service="llm",state="stopped"} 0
gpuvisor_service_state{service="llm",state="starting"} 0
gpuvisor_service_state{service="llm",state="ready"} 1
gpuvisor_service_state{service="llm",state="busy"} 0
gpuvisor_service_state{service="llm",state="stopping"} 0
gpuvisor_service_state{service="llm",state="error"} 0
gpuvisor_service_state{service="llm",state="unknown"} 0
gpuvisor_service_state{service="llm",state="sleeping"} 0
gpuvisor_service_state{service="i\"m\\g\n",state="stopped"} 0
gpuvisor_service_state{service="i\"m\\g\n",state="starting"} 0
gpuvisor_service_state{service="i\"m\\g\n",state="ready"} 0
gpuvisor_service_state{service="i\"m\\g\n",state="busy"} 0
gpuvisor_service_state{service="i\"m\\g\n",state="stopping"} 0
gpuvisor_service_state{service="i\"m\\g\n",state="error"} 1
gpuvisor_service_state{service="i\"m\\g\n",state="unknown"} 0
gpuvisor_service_state{service="i\"m\\g\n",state="sleeping"} 0
# HELP gpuvisor_service_priority Each service's configured priority
# TYPE gpuvisor_service_priority gauge
gpuvisor_service_priority{service="llm"} 10
gpuvisor_service_priority{service="i\"m\\g\n"} 100
# HELP gpuvisor_service_vram_bytes The most GPU memory each service was seen holding (NVML)
# TYPE gpuvisor_service_vram_bytes gauge
gpuvisor_service_vram_bytes{service="llm"} 17000000000
gpuvisor_service_vram_bytes{service="i\"m\\g\n"} 0
# HELP gpuvisor_service_restarts Automatic restarts in a row, per service
# TYPE gpuvisor_service_restarts gauge
gpuvisor_service_restarts{service="llm"} 2
gpuvisor_service_restarts{service="i\"m\\g\n"} 0
# HELP gpuvisor_service_start_duration_seconds Time from starting to ready, per service
# TYPE gpuvisor_service_start_duration_seconds histogram
# HELP gpuvisor_evictions_total Services stopped (or put to sleep) to make room, by victim and by whom it was for
# TYPE gpuvisor_evictions_total counter
gpuvisor_evictions_total{service="llm",for="img"} 1
# HELP gpuvisor_queue_depth Placements waiting in the admission queue for busy services to go idle
# TYPE gpuvisor_queue_depth gauge
gpuvisor_queue_depth 0
# HELP gpuvisor_queue_wait_seconds Time a placement waited in the admission queue before it was placed
# TYPE gpuvisor_queue_wait_seconds histogram
gpuvisor_queue_wait_seconds_bucket{le="0.1"} 0
gpuvisor_queue_wait_seconds_bucket{le="0.5"} 0
gpuvisor_queue_wait_seconds_bucket{le="1"} 0
gpuvisor_queue_wait_seconds_bucket{le="5"} 0
gpuvisor_queue_wait_seconds_bucket{le="10"} 0
gpuvisor_queue_wait_seconds_bucket{le="30"} 0
gpuvisor_queue_wait_seconds_bucket{le="60"} 0
gpuvisor_queue_wait_seconds_bucket{le="300"} 0
gpuvisor_queue_wait_seconds_bucket{le="1200"} 0
gpuvisor_queue_wait_seconds_bucket{le="+Inf"} 0
gpuvisor_queue_wait_seconds_sum 0
gpuvisor_queue_wait_seconds_count 0
# HELP gpuvisor_queue_timeouts_total Placements that left the admission queue because every caller gave up
# TYPE gpuvisor_queue_timeouts_total counter
gpuvisor_queue_timeouts_total 0
# HELP gpuvisor_swaps_total Placements that stopped (or put to sleep) something to make room
# TYPE gpuvisor_swaps_total counter
gpuvisor_swaps_total 1
# HELP gpuvisor_swaps_last_minute Swaps in the minute before the scrape
# TYPE gpuvisor_swaps_last_minute gauge
gpuvisor_swaps_last_minute 1
# HELP gpuvisor_gpu_memory_total_bytes Each GPU's memory
# TYPE gpuvisor_gpu_memory_total_bytes gauge
gpuvisor_gpu_memory_total_bytes{gpu="0",uuid="GPU-0",name="Fake 24GB"} 25769803776
gpuvisor_gpu_memory_total_bytes{gpu="1",uuid="GPU-1",name="Fake\"8GB"} 8589934592
# HELP gpuvisor_gpu_memory_used_bytes Each GPU's memory in use, as NVML says
# TYPE gpuvisor_gpu_memory_used_bytes gauge
gpuvisor_gpu_memory_used_bytes{gpu="0"} 20000000000
gpuvisor_gpu_memory_used_bytes{gpu="1"} 0
# HELP gpuvisor_gpu_memory_process_bytes GPU memory held by processes, gpuvisor's own (owner="gpuvisor") or not (owner="external")
# TYPE gpuvisor_gpu_memory_process_bytes gauge
gpuvisor_gpu_memory_process_bytes{gpu="0",owner="gpuvisor"} 18000000000
gpuvisor_gpu_memory_process_bytes{gpu="0",owner="external"} 2000000000
gpuvisor_gpu_memory_process_bytes{gpu="1",owner="gpuvisor"} 0
gpuvisor_gpu_memory_process_bytes{gpu="1",owner="external"} 0
# HELP gpuvisor_service_gpu_memory_bytes GPU memory each service (or worker) holds now, per GPU
# TYPE gpuvisor_service_gpu_memory_bytes gauge
gpuvisor_service_gpu_memory_bytes{gpu="0",service="llm"} 17000000000
gpuvisor_service_gpu_memory_bytes{gpu="0",service="worker:asr-1"} 1000000000
# HELP gpuvisor_gpu_conflict 1 while processes gpuvisor did not start hold a large share of the GPU
# TYPE gpuvisor_gpu_conflict gauge
gpuvisor_gpu_conflict{gpu="0"} 0
gpuvisor_gpu_conflict{gpu="1"} 1
# HELP gpuvisor_proxy_requests_total Requests the proxy took, per service
# TYPE gpuvisor_proxy_requests_total counter
gpuvisor_proxy_requests_total{service="llm"} 5
# HELP gpuvisor_proxy_responses_total Responses the proxy sent, per service and status code
# TYPE gpuvisor_proxy_responses_total counter
gpuvisor_proxy_responses_total{service="llm",code="200"} 4
gpuvisor_proxy_responses_total{service="llm",code="503"} 1
# HELP gpuvisor_proxy_errors_total Requests gpuvisor answered itself with an error (not started, no answer, full)
# TYPE gpuvisor_proxy_errors_total counter
gpuvisor_proxy_errors_total{service="llm"} 1
# HELP gpuvisor_proxy_client_disconnects_total Clients that left before their response ended
# TYPE gpuvisor_proxy_client_disconnects_total counter
gpuvisor_proxy_client_disconnects_total{service="llm"} 1
# HELP gpuvisor_proxy_upgrades_total Connections the service switched to another protocol (WebSockets), per service
# TYPE gpuvisor_proxy_upgrades_total counter
gpuvisor_proxy_upgrades_total{service="llm"} 2
# HELP gpuvisor_proxy_open_tunnels Upgraded connections (WebSockets) open now, per service
# TYPE gpuvisor_proxy_open_tunnels gauge
gpuvisor_proxy_open_tunnels{service="llm"} 1
# HELP gpuvisor_proxy_response_head_seconds Time from forwarding a request to the service's response head
# TYPE gpuvisor_proxy_response_head_seconds histogram
gpuvisor_proxy_response_head_seconds_bucket{service="llm",le="0.005"} 1
gpuvisor_proxy_response_head_seconds_bucket{service="llm",le="0.01"} 1
gpuvisor_proxy_response_head_seconds_bucket{service="llm",le="0.025"} 1
gpuvisor_proxy_response_head_seconds_bucket{service="llm",le="0.05"} 4
gpuvisor_proxy_response_head_seconds_bucket{service="llm",le="0.1"} 4
gpuvisor_proxy_response_head_seconds_bucket{service="llm",le="0.25"} 4
gpuvisor_proxy_response_head_seconds_bucket{service="llm",le="0.5"} 4
gpuvisor_proxy_response_head_seconds_bucket{service="llm",le="1"} 4
gpuvisor_proxy_response_head_seconds_bucket{service="llm",le="2.5"} 4
gpuvisor_proxy_response_head_seconds_bucket{service="llm",le="5"} 4
gpuvisor_proxy_response_head_seconds_bucket{service="llm",le="10"} 4
gpuvisor_proxy_response_head_seconds_bucket{service="llm",le="30"} 4
gpuvisor_proxy_response_head_seconds_bucket{service="llm",le="60"} 4
gpuvisor_proxy_response_head_seconds_bucket{service="llm",le="300"} 4
gpuvisor_proxy_response_head_seconds_bucket{service="llm",le="+Inf"} 4
gpuvisor_proxy_response_head_seconds_sum{service="llm"} 0.125
gpuvisor_proxy_response_head_seconds_count{service="llm"} 4
# HELP gpuvisor_jobs Jobs in the job store, by state
# TYPE gpuvisor_jobs gauge
gpuvisor_jobs{state="completed"} 3
gpuvisor_jobs{state="pending"} 1
# HELP gpuvisor_workers Registered workers, by plugin and status
# TYPE gpuvisor_workers gauge
gpuvisor_workers{plugin="asr_whisper",status="running"} 2
gpuvisor_workers{plugin="tts_x",status="idle"} 1
)golden";

TEST(Metrics, RendersEveryFamilyExactly) {
  EventBus events;
  Metrics metrics(events);
  events.publish("plan.decided", {{"service", "img"}, {"evict", {"llm", 7}}});
  events.publish("gpu.conflict", {{"gpu", 1}});
  events.publish("gpu.conflict_cleared", {{"gpu", 0}});

  const ServiceSpec llm = spec("llm", 10);
  const ServiceSpec img = spec("i\"m\\g\n", 100);  // every character a label value escapes
  Metrics::Scrape now;
  now.unix_ms = unix_ms_now();
  ServiceView a;
  a.spec = &llm;
  a.state = ServiceState::kReady;
  a.measured_vram_bytes = 17'000'000'000;
  a.restarts = 2;
  ServiceView b;
  b.spec = &img;
  b.state = ServiceState::kError;
  now.services = {a, b};
  GpuSnapshot gpus;
  gpus.devices = {device(0, "GPU-0", "Fake 24GB", 25'769'803'776, 20'000'000'000),
                  device(1, "GPU-1", "Fake\"8GB", 8'589'934'592, 0)};
  gpus.processes = {process(0, 100, 17'000'000'000), process(0, 101, 1'000'000'000),
                    process(0, 200, 2'000'000'000), process(0, 201, std::nullopt)};
  now.gpus = gpus;
  now.owners.add(Holder{HolderKind::kService, "llm"}, {100});
  now.owners.add(Holder{HolderKind::kWorker, "asr-1", "asr"}, {101});
  now.jobs = {{"completed", 3}, {"pending", 1}};
  ProxyCounts counts;
  counts.requests = 5;
  counts.responses = {{200, 4}, {503, 1}};
  counts.errors = 1;
  counts.client_gone = 1;
  counts.upgrades = 2;
  counts.open_tunnels = 1;
  for (size_t i = 0; i < std::size(ProxyCounts::kBuckets); ++i) {
    counts.latency_counts[i] = i < 3 ? 1 : 4;  // cumulative: one fast, three slower
  }
  counts.latency_count = 4;
  counts.latency_sum = 0.125;
  now.proxy = {{"llm", counts}};
  const WorkerInfo w1 = worker("asr_whisper", "running");
  const WorkerInfo w2 = worker("asr_whisper", "running");
  const WorkerInfo w3 = worker("tts_x", "idle");
  now.workers = {&w1, &w2, &w3};

  EXPECT_EQ(kExpected, metrics.render(now));
}

TEST(Metrics, SwapsOfTheLastMinuteAreCountedAndOlderOnesFallOut) {
  EventBus events;
  Metrics metrics(events);
  events.publish("plan.decided", {{"service", "b"}, {"evict", {"a"}}});
  events.publish("plan.decided", {{"service", "a"}, {"evict", nlohmann::json::array()}});  // none
  Metrics::Scrape now;
  now.unix_ms = unix_ms_now();
  const std::string fresh = metrics.render(now);
  EXPECT_NE(std::string::npos, fresh.find("\ngpuvisor_swaps_total 1\n")) << fresh;
  EXPECT_NE(std::string::npos, fresh.find("\ngpuvisor_swaps_last_minute 1\n")) << fresh;
  now.unix_ms += 61'000;
  const std::string later = metrics.render(now);
  EXPECT_NE(std::string::npos, later.find("\ngpuvisor_swaps_total 1\n")) << later;
  EXPECT_NE(std::string::npos, later.find("\ngpuvisor_swaps_last_minute 0\n")) << later;
}

}  // namespace
}  // namespace gpuvisor
