#include "api/metrics.h"

#include <fmt/format.h>

#include <algorithm>

#include "core/duration.h"

namespace gpuvisor {

namespace {

constexpr int64_t kMinuteMs = 60'000;

constexpr ServiceState kStates[] = {ServiceState::kStopped,  ServiceState::kStarting,
                                    ServiceState::kReady,    ServiceState::kBusy,
                                    ServiceState::kStopping, ServiceState::kError,
                                    ServiceState::kUnknown,  ServiceState::kSleeping};

// A label value as the text format wants it: backslash, quote and newline escaped.
std::string esc(std::string_view v) {
  std::string out;
  for (const char c : v) {
    if (c == '\\') {
      out += "\\\\";
    } else if (c == '"') {
      out += "\\\"";
    } else if (c == '\n') {
      out += "\\n";
    } else {
      out += c;
    }
  }
  return out;
}

class Writer {
 public:
  void family(const char* name, const char* type, const char* help) {
    out_ += fmt::format("# HELP {} {}\n# TYPE {} {}\n", name, help, name, type);
  }
  void sample(const std::string& name, const std::string& labels, double value) {
    out_ += name;
    if (!labels.empty()) out_ += "{" + labels + "}";
    out_ += " " + fmt::format("{}", value) + "\n";
  }
  // A histogram's buckets (cumulative), +Inf, _sum and _count.
  template <size_t N>
  void histogram(const std::string& name, const std::string& labels, const double (&bounds)[N],
                 const uint64_t (&counts)[N], uint64_t count, double sum) {
    const std::string sep = labels.empty() ? "" : labels + ",";
    for (size_t i = 0; i < N; ++i) {
      sample(name + "_bucket", sep + fmt::format("le=\"{}\"", bounds[i]),
             static_cast<double>(counts[i]));
    }
    sample(name + "_bucket", sep + "le=\"+Inf\"", static_cast<double>(count));
    sample(name + "_sum", labels, sum);
    sample(name + "_count", labels, static_cast<double>(count));
  }
  // A family with one sample per item: labels(item) and value(item).
  template <typename Items, typename Labels, typename Value>
  void each(const char* name, const char* type, const char* help, const Items& items,
            const Labels& labels, const Value& value) {
    family(name, type, help);
    for (const auto& item : items) sample(name, labels(item), static_cast<double>(value(item)));
  }
  std::string take() { return std::move(out_); }

 private:
  std::string out_;
};

std::string service_label(std::string_view service) {
  return fmt::format("service=\"{}\"", esc(service));
}

void render_services(Writer& w, const std::vector<ServiceView>& services) {
  w.family("gpuvisor_service_state", "gauge",
           "1 for the state each service is in, 0 for the others");
  for (const auto& s : services) {
    for (const auto state : kStates) {
      w.sample("gpuvisor_service_state",
               fmt::format("service=\"{}\",state=\"{}\"", esc(s.spec->name), to_string(state)),
               s.state == state ? 1 : 0);
    }
  }
  const auto service = [](const ServiceView& s) { return service_label(s.spec->name); };
  w.each("gpuvisor_service_priority", "gauge", "Each service's configured priority", services,
         service, [](const ServiceView& s) { return s.spec->priority; });
  w.each("gpuvisor_service_vram_bytes", "gauge",
         "The most GPU memory each service was seen holding (NVML)", services, service,
         [](const ServiceView& s) { return s.measured_vram_bytes; });
  w.each("gpuvisor_service_restarts", "gauge", "Automatic restarts in a row, per service", services,
         service, [](const ServiceView& s) { return s.restarts; });
}

void render_gpus(Writer& w, const GpuSnapshot& gpus, const Ownership& owners) {
  std::map<unsigned, std::pair<uint64_t, uint64_t>> split;  // ours, external
  std::map<std::pair<unsigned, std::string>, uint64_t> per_service;
  for (const auto& p : gpus.processes) {
    const uint64_t bytes = p.used_bytes.value_or(0);
    const Holder* owner = owners.find(p.pid);
    if (owner == nullptr) {
      split[p.gpu].second += bytes;
    } else {
      split[p.gpu].first += bytes;
      per_service[{p.gpu, owner->owner()}] += bytes;
    }
  }
  w.each(
      "gpuvisor_gpu_memory_total_bytes", "gauge", "Each GPU's memory", gpus.devices,
      [](const GpuDevice& d) {
        return fmt::format("gpu=\"{}\",uuid=\"{}\",name=\"{}\"", d.index, esc(d.uuid), esc(d.name));
      },
      [](const GpuDevice& d) { return d.total_bytes; });
  w.each(
      "gpuvisor_gpu_memory_used_bytes", "gauge", "Each GPU's memory in use, as NVML says",
      gpus.devices, [](const GpuDevice& d) { return fmt::format("gpu=\"{}\"", d.index); },
      [](const GpuDevice& d) { return d.used_bytes; });
  w.family("gpuvisor_gpu_memory_process_bytes", "gauge",
           "GPU memory held by processes, gpuvisor's own (owner=\"gpuvisor\") or not "
           "(owner=\"external\")");
  for (const auto& d : gpus.devices) {
    const auto held = split[d.index];
    w.sample("gpuvisor_gpu_memory_process_bytes",
             fmt::format("gpu=\"{}\",owner=\"gpuvisor\"", d.index),
             static_cast<double>(held.first));
    w.sample("gpuvisor_gpu_memory_process_bytes",
             fmt::format("gpu=\"{}\",owner=\"external\"", d.index),
             static_cast<double>(held.second));
  }
  w.each(
      "gpuvisor_service_gpu_memory_bytes", "gauge",
      "GPU memory each service (or worker) holds now, per GPU", per_service,
      [](const auto& kv) {
        return fmt::format("gpu=\"{}\",service=\"{}\"", kv.first.first, esc(kv.first.second));
      },
      [](const auto& kv) { return kv.second; });
}

void render_proxy(Writer& w, const std::map<std::string, ProxyCounts>& proxy) {
  const auto service = [](const auto& kv) { return service_label(kv.first); };
  w.each("gpuvisor_proxy_requests_total", "counter", "Requests the proxy took, per service", proxy,
         service, [](const auto& kv) { return kv.second.requests; });
  w.family("gpuvisor_proxy_responses_total", "counter",
           "Responses the proxy sent, per service and status code");
  for (const auto& [name, st] : proxy) {
    for (const auto& [code, n] : st.responses) {
      w.sample("gpuvisor_proxy_responses_total",
               fmt::format("service=\"{}\",code=\"{}\"", esc(name), code), static_cast<double>(n));
    }
  }
  w.each("gpuvisor_proxy_errors_total", "counter",
         "Requests gpuvisor answered itself with an error (not started, no answer, full)", proxy,
         service, [](const auto& kv) { return kv.second.errors; });
  w.each("gpuvisor_proxy_client_disconnects_total", "counter",
         "Clients that left before their response ended", proxy, service,
         [](const auto& kv) { return kv.second.client_gone; });
  w.each("gpuvisor_proxy_upgrades_total", "counter",
         "Connections the service switched to another protocol (WebSockets), per service", proxy,
         service, [](const auto& kv) { return kv.second.upgrades; });
  w.each("gpuvisor_proxy_open_tunnels", "gauge",
         "Upgraded connections (WebSockets) open now, per service", proxy, service,
         [](const auto& kv) { return kv.second.open_tunnels; });
  w.family("gpuvisor_proxy_response_head_seconds", "histogram",
           "Time from forwarding a request to the service's response head");
  for (const auto& [name, st] : proxy) {
    w.histogram("gpuvisor_proxy_response_head_seconds", service_label(name), ProxyCounts::kBuckets,
                st.latency_counts, st.latency_count, st.latency_sum);
  }
}

void render_jobs_and_workers(Writer& w, const Metrics::Scrape& now) {
  w.each(
      "gpuvisor_jobs", "gauge", "Jobs in the job store, by state", now.jobs,
      [](const auto& kv) { return fmt::format("state=\"{}\"", kv.first); },
      [](const auto& kv) { return kv.second; });
  std::map<std::pair<std::string, std::string>, int> workers;
  for (const WorkerInfo* wi : now.workers) ++workers[{wi->plugin, wi->status}];
  w.each(
      "gpuvisor_workers", "gauge", "Registered workers, by plugin and status", workers,
      [](const auto& kv) {
        return fmt::format("plugin=\"{}\",status=\"{}\"", esc(kv.first.first),
                           esc(kv.first.second));
      },
      [](const auto& kv) { return kv.second; });
}

}  // namespace

Metrics::Metrics(EventBus& events) : events_(events) {
  subscription_ = events_.subscribe([this](const Event& e) { on_event(e); });
}

Metrics::~Metrics() {
  events_.unsubscribe(subscription_);
}

void Metrics::on_event(const Event& e) {
  if (e.type == "plan.decided") {
    const std::string placed = e.data.value("service", "");
    const auto victims = e.data.value("evict", nlohmann::json::array());
    for (const auto& victim : victims) {
      if (victim.is_string()) ++evictions_[{victim.get<std::string>(), placed}];
    }
    if (!victims.empty()) {
      ++swaps_;
      swap_times_ms_.push_back(e.unix_ms);
      while (swap_times_ms_.front() < e.unix_ms - kMinuteMs) swap_times_ms_.pop_front();
    }
  } else if (e.type == "service.state_changed") {
    const std::string service = e.data.value("service", "");
    const std::string to = e.data.value("to", "");
    const std::string from = e.data.value("from", "");
    if (to == "starting" && from != "starting") {
      starting_since_ms_[service] = e.unix_ms;
      if (from == "error") ++restarts_[service];
    } else if (to == "ready" && from == "starting") {
      const auto since = starting_since_ms_.find(service);
      if (since != starting_since_ms_.end()) {
        const double seconds = static_cast<double>(e.unix_ms - since->second) / 1000.0;
        starts_[service].add(kStartBuckets, seconds);
        starting_since_ms_.erase(since);
      }
    } else if (to != "starting") {
      starting_since_ms_.erase(service);
    }
  } else if (e.type == "queue.dequeued" && e.data.value("placed", false)) {
    const double seconds = static_cast<double>(e.data.value("waited_ms", int64_t{0})) / 1000.0;
    waits_.add(kWaitBuckets, seconds);
  } else if (e.type == "queue.timeout") {
    ++queue_timeouts_;
  } else if (e.type == "gpu.conflict") {
    conflicts_[e.data.value("gpu", 0U)] = true;
  } else if (e.type == "gpu.conflict_cleared") {
    conflicts_[e.data.value("gpu", 0U)] = false;
  }
}

std::string Metrics::render(const Scrape& now) const {
  Writer w;
  render_services(w, now.services);
  w.family("gpuvisor_service_start_duration_seconds", "histogram",
           "Time from starting to ready, per service");
  for (const auto& [service, t] : starts_) {
    w.histogram("gpuvisor_service_start_duration_seconds", service_label(service), kStartBuckets,
                t.counts, t.count, t.sum);
  }
  w.each(
      "gpuvisor_evictions_total", "counter",
      "Services stopped (or put to sleep) to make room, by victim and by whom it was for",
      evictions_,
      [](const auto& kv) {
        return fmt::format("service=\"{}\",for=\"{}\"", esc(kv.first.first), esc(kv.first.second));
      },
      [](const auto& kv) { return kv.second; });
  w.family("gpuvisor_queue_depth", "gauge",
           "Placements waiting in the admission queue for busy services to go idle");
  w.sample("gpuvisor_queue_depth", "", static_cast<double>(now.queued));
  w.family("gpuvisor_queue_wait_seconds", "histogram",
           "Time a placement waited in the admission queue before it was placed");
  w.histogram("gpuvisor_queue_wait_seconds", "", kWaitBuckets, waits_.counts, waits_.count,
              waits_.sum);
  w.family("gpuvisor_queue_timeouts_total", "counter",
           "Placements that left the admission queue because every caller gave up");
  w.sample("gpuvisor_queue_timeouts_total", "", static_cast<double>(queue_timeouts_));
  w.family("gpuvisor_swaps_total", "counter",
           "Placements that stopped (or put to sleep) something to make room");
  w.sample("gpuvisor_swaps_total", "", static_cast<double>(swaps_));
  w.family("gpuvisor_swaps_last_minute", "gauge", "Swaps in the minute before the scrape");
  const auto recent = std::count_if(swap_times_ms_.begin(), swap_times_ms_.end(),
                                    [&](int64_t t) { return t >= now.unix_ms - kMinuteMs; });
  w.sample("gpuvisor_swaps_last_minute", "", static_cast<double>(recent));
  if (now.gpus) render_gpus(w, *now.gpus, now.owners);
  w.each(
      "gpuvisor_gpu_conflict", "gauge",
      "1 while processes gpuvisor did not start hold a large share of the GPU", conflicts_,
      [](const auto& kv) { return fmt::format("gpu=\"{}\"", kv.first); },
      [](const auto& kv) { return kv.second ? 1 : 0; });
  if (!now.proxy.empty()) render_proxy(w, now.proxy);
  render_jobs_and_workers(w, now);
  return w.take();
}

}  // namespace gpuvisor
