#include "api/metrics.h"

#include <fmt/format.h>

#include "core/duration.h"

namespace gpuvisor {

namespace {

constexpr ServiceState kStates[] = {
    ServiceState::kStopped,  ServiceState::kStarting, ServiceState::kReady,  ServiceState::kBusy,
    ServiceState::kStopping, ServiceState::kError,    ServiceState::kUnknown};

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
  std::string take() { return std::move(out_); }

 private:
  std::string out_;
};

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
    for (const auto& victim : e.data.value("evict", nlohmann::json::array())) {
      if (victim.is_string()) ++evictions_[{victim.get<std::string>(), placed}];
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
        auto& t = starts_[service];
        for (size_t i = 0; i < std::size(kStartBuckets); ++i) {
          if (seconds <= kStartBuckets[i]) ++t.counts[i];
        }
        ++t.count;
        t.sum += seconds;
        starting_since_ms_.erase(since);
      }
    } else if (to != "starting") {
      starting_since_ms_.erase(service);
    }
  } else if (e.type == "gpu.conflict") {
    conflicts_[e.data.value("gpu", 0U)] = true;
  } else if (e.type == "gpu.conflict_cleared") {
    conflicts_[e.data.value("gpu", 0U)] = false;
  }
}

std::string Metrics::render(const Scrape& now) const {
  Writer w;
  w.family("gpuvisor_service_state", "gauge",
           "1 for the state each service is in, 0 for the others");
  for (const auto& s : now.services) {
    for (const auto state : kStates) {
      w.sample("gpuvisor_service_state",
               fmt::format("service=\"{}\",state=\"{}\"", esc(s.spec->name), to_string(state)),
               s.state == state ? 1 : 0);
    }
  }
  w.family("gpuvisor_service_priority", "gauge", "Each service's configured priority");
  for (const auto& s : now.services) {
    w.sample("gpuvisor_service_priority", fmt::format("service=\"{}\"", esc(s.spec->name)),
             s.spec->priority);
  }
  w.family("gpuvisor_service_vram_bytes", "gauge",
           "The most GPU memory each service was seen holding (NVML)");
  for (const auto& s : now.services) {
    w.sample("gpuvisor_service_vram_bytes", fmt::format("service=\"{}\"", esc(s.spec->name)),
             static_cast<double>(s.measured_vram_bytes));
  }
  w.family("gpuvisor_service_restarts", "gauge", "Automatic restarts in a row, per service");
  for (const auto& s : now.services) {
    w.sample("gpuvisor_service_restarts", fmt::format("service=\"{}\"", esc(s.spec->name)),
             s.restarts);
  }
  w.family("gpuvisor_service_start_duration_seconds", "histogram",
           "Time from starting to ready, per service");
  for (const auto& [service, t] : starts_) {
    w.histogram("gpuvisor_service_start_duration_seconds",
                fmt::format("service=\"{}\"", esc(service)), kStartBuckets, t.counts, t.count,
                t.sum);
  }
  w.family("gpuvisor_evictions_total", "counter",
           "Services stopped (or put to sleep) to make room, by victim and by whom it was for");
  for (const auto& [key, n] : evictions_) {
    w.sample("gpuvisor_evictions_total",
             fmt::format("service=\"{}\",for=\"{}\"", esc(key.first), esc(key.second)),
             static_cast<double>(n));
  }

  if (now.gpus) {
    std::map<unsigned, std::pair<uint64_t, uint64_t>> split;  // ours, external
    std::map<std::pair<unsigned, std::string>, uint64_t> per_service;
    for (const auto& p : now.gpus->processes) {
      const uint64_t bytes = p.used_bytes.value_or(0);
      const auto owner = now.owners.find(p.pid);
      if (owner == now.owners.end()) {
        split[p.gpu].second += bytes;
      } else {
        split[p.gpu].first += bytes;
        per_service[{p.gpu, owner->second}] += bytes;
      }
    }
    w.family("gpuvisor_gpu_memory_total_bytes", "gauge", "Each GPU's memory");
    for (const auto& d : now.gpus->devices) {
      w.sample("gpuvisor_gpu_memory_total_bytes",
               fmt::format("gpu=\"{}\",uuid=\"{}\",name=\"{}\"", d.index, esc(d.uuid), esc(d.name)),
               static_cast<double>(d.total_bytes));
    }
    w.family("gpuvisor_gpu_memory_used_bytes", "gauge", "Each GPU's memory in use, as NVML says");
    for (const auto& d : now.gpus->devices) {
      w.sample("gpuvisor_gpu_memory_used_bytes", fmt::format("gpu=\"{}\"", d.index),
               static_cast<double>(d.used_bytes));
    }
    w.family("gpuvisor_gpu_memory_process_bytes", "gauge",
             "GPU memory held by processes, gpuvisor's own (owner=\"gpuvisor\") or not "
             "(owner=\"external\")");
    for (const auto& d : now.gpus->devices) {
      const auto held = split[d.index];
      w.sample("gpuvisor_gpu_memory_process_bytes",
               fmt::format("gpu=\"{}\",owner=\"gpuvisor\"", d.index),
               static_cast<double>(held.first));
      w.sample("gpuvisor_gpu_memory_process_bytes",
               fmt::format("gpu=\"{}\",owner=\"external\"", d.index),
               static_cast<double>(held.second));
    }
    w.family("gpuvisor_service_gpu_memory_bytes", "gauge",
             "GPU memory each service (or worker) holds now, per GPU");
    for (const auto& [key, bytes] : per_service) {
      w.sample("gpuvisor_service_gpu_memory_bytes",
               fmt::format("gpu=\"{}\",service=\"{}\"", key.first, esc(key.second)),
               static_cast<double>(bytes));
    }
  }
  w.family("gpuvisor_gpu_conflict", "gauge",
           "1 while processes gpuvisor did not start hold a large share of the GPU");
  for (const auto& [gpu, on] : conflicts_) {
    w.sample("gpuvisor_gpu_conflict", fmt::format("gpu=\"{}\"", gpu), on ? 1 : 0);
  }

  if (!now.proxy.empty()) {
    w.family("gpuvisor_proxy_requests_total", "counter", "Requests the proxy took, per service");
    for (const auto& [service, st] : now.proxy) {
      w.sample("gpuvisor_proxy_requests_total", fmt::format("service=\"{}\"", esc(service)),
               static_cast<double>(st.requests));
    }
    w.family("gpuvisor_proxy_responses_total", "counter",
             "Responses the proxy sent, per service and status code");
    for (const auto& [service, st] : now.proxy) {
      for (const auto& [code, n] : st.responses) {
        w.sample("gpuvisor_proxy_responses_total",
                 fmt::format("service=\"{}\",code=\"{}\"", esc(service), code),
                 static_cast<double>(n));
      }
    }
    w.family("gpuvisor_proxy_errors_total", "counter",
             "Requests gpuvisor answered itself with an error (not started, no answer, full)");
    for (const auto& [service, st] : now.proxy) {
      w.sample("gpuvisor_proxy_errors_total", fmt::format("service=\"{}\"", esc(service)),
               static_cast<double>(st.errors));
    }
    w.family("gpuvisor_proxy_client_disconnects_total", "counter",
             "Clients that left before their response ended");
    for (const auto& [service, st] : now.proxy) {
      w.sample("gpuvisor_proxy_client_disconnects_total",
               fmt::format("service=\"{}\"", esc(service)), static_cast<double>(st.client_gone));
    }
    w.family("gpuvisor_proxy_upgrades_total", "counter",
             "Connections the service switched to another protocol (WebSockets), per service");
    for (const auto& [service, st] : now.proxy) {
      w.sample("gpuvisor_proxy_upgrades_total", fmt::format("service=\"{}\"", esc(service)),
               static_cast<double>(st.upgrades));
    }
    w.family("gpuvisor_proxy_open_tunnels", "gauge",
             "Upgraded connections (WebSockets) open now, per service");
    for (const auto& [service, st] : now.proxy) {
      w.sample("gpuvisor_proxy_open_tunnels", fmt::format("service=\"{}\"", esc(service)),
               static_cast<double>(st.open_tunnels));
    }
    w.family("gpuvisor_proxy_response_head_seconds", "histogram",
             "Time from forwarding a request to the service's response head");
    for (const auto& [service, st] : now.proxy) {
      w.histogram("gpuvisor_proxy_response_head_seconds",
                  fmt::format("service=\"{}\"", esc(service)), ProxyCounts::kBuckets,
                  st.latency_counts, st.latency_count, st.latency_sum);
    }
  }

  w.family("gpuvisor_jobs", "gauge", "Jobs in the job store, by state");
  for (const auto& [state, n] : now.jobs) {
    w.sample("gpuvisor_jobs", fmt::format("state=\"{}\"", state), static_cast<double>(n));
  }
  w.family("gpuvisor_workers", "gauge", "Registered workers, by plugin and status");
  std::map<std::pair<std::string, std::string>, int> workers;
  for (const WorkerInfo* wi : now.workers) ++workers[{wi->plugin, wi->status}];
  for (const auto& [key, n] : workers) {
    w.sample("gpuvisor_workers",
             fmt::format("plugin=\"{}\",status=\"{}\"", esc(key.first), esc(key.second)), n);
  }
  return w.take();
}

}  // namespace gpuvisor
