// The management API (/api/v1/...) and /healthz, on top of the Supervisor and the EventBus.
// docs/api.md describes every route; errors are {"error": {"code", "message"}}.
#pragma once

#include <boost/asio/awaitable.hpp>
#include <string>

#include "api/http_server.h"
#include "api/metrics.h"
#include "api/proxy.h"
#include "api/request_parts.h"
#include "events/event_bus.h"
#include "gpu/inventory.h"
#include "jobs/job_queue.h"
#include "plugins/registry.h"
#include "resources/worker_registry.h"
#include "supervisor/supervisor.h"

namespace gpuvisor {

class Api {
 public:
  // token: when non-empty, every /api/ request needs "Authorization: Bearer <token>".
  // workers: their processes count as ours in the GPU views (the jobs layer registers them).
  // main: the executor of the daemon's main thread, where the API runs.
  Api(boost::asio::any_io_executor main, Supervisor& supervisor, EventBus& events,
      GpuInventory& gpus, const WorkerRegistry& workers, PluginRegistry& plugins, JobQueue& jobs,
      const JobStore& job_store, Proxy& proxy, const Metrics& metrics, std::string token,
      unsigned external_busy_percent);

  boost::asio::awaitable<bool> handle(Incoming& in);

 private:
  bool authorized(const RequestHead& request) const;  // the bearer token, where one is set
  // A request for the API (or refused by it): its body read whole, small. Main thread.
  boost::asio::awaitable<bool> serve(Incoming& in);
  boost::asio::awaitable<bool> serve_on_main(Incoming& in);
  boost::asio::awaitable<bool> route(boost::beast::tcp_stream& stream, HttpRequest& request);
  boost::asio::awaitable<bool> service_action(boost::beast::tcp_stream& stream,
                                              HttpRequest& request, const std::string& name,
                                              const std::string& action);
  boost::asio::awaitable<bool> phase_ensure(boost::beast::tcp_stream& stream, HttpRequest& request,
                                            const std::string& phase);
  boost::asio::awaitable<bool> events_stream(boost::beast::tcp_stream& stream,
                                             HttpRequest& request);
  boost::asio::awaitable<bool> jobs_route(boost::beast::tcp_stream& stream, HttpRequest& request,
                                          const RequestParts& parts);
  boost::asio::awaitable<bool> job_stream(boost::beast::tcp_stream& stream, HttpRequest& request,
                                          const Job& job);
  boost::asio::awaitable<bool> logs(boost::beast::tcp_stream& stream, HttpRequest& request,
                                    const std::string& name);

  // /gpus, /processes, /resources: one NVML snapshot each, classified against our PIDs.
  Result<nlohmann::json> gpu_view(const std::string& what) const;
  std::string metrics_text() const;

  boost::asio::any_io_executor main_;
  Supervisor& supervisor_;
  EventBus& events_;
  GpuInventory& gpus_;
  const WorkerRegistry& workers_;
  PluginRegistry& plugins_;
  JobQueue& jobs_;
  const JobStore& job_store_;
  Proxy& proxy_;
  const Metrics& metrics_;
  std::string token_;
  unsigned external_busy_percent_;
};

}  // namespace gpuvisor
