// The management API (/api/v1/...) and /healthz, on top of the Supervisor and the EventBus.
// docs/api.md describes every route; errors are {"error": {"code", "message"}}.
#pragma once

#include <boost/asio/awaitable.hpp>
#include <memory>
#include <string>
#include <variant>
#include <vector>

#include "api/http_server.h"
#include "api/metrics.h"
#include "api/proxy.h"
#include "api/request_parts.h"
#include "api/route_table.h"
#include "api/sse.h"
#include "events/event_bus.h"
#include "gpu/inventory.h"
#include "jobs/job_queue.h"
#include "plugins/registry.h"
#include "resources/leases.h"
#include "resources/outside_workers.h"
#include "resources/worker_registry.h"
#include "supervisor/supervisor.h"

namespace gpuvisor {

class Api {
 public:
  // token: when non-empty, every /api/ request needs "Authorization: Bearer <token>".
  // workers: for /workers; outside: the workers apps register; owners: which GPU processes are
  // ours, for the GPU views and /metrics. main: the executor of the daemon's main thread, where the
  // API runs.
  Api(boost::asio::any_io_executor main, Supervisor& supervisor, EventBus& events,
      GpuInventory& gpus, const WorkerRegistry& workers, OutsideWorkers& outside, Leases& leases,
      OwnershipSource& owners, PluginRegistry& plugins, JobQueue& jobs, const JobStore& job_store,
      Proxy& proxy, const Metrics& metrics, std::string token, unsigned external_busy_percent);

  boost::asio::awaitable<bool> handle(Incoming& in);

 private:
  // One request on its way through the route that took it.
  struct Call {
    boost::beast::tcp_stream& stream;
    HttpRequest& request;
    RouteMatch match;
    const std::string& arg(const std::string& name) const { return match.arg(name); }
  };
  // A route's handler: one that answers at once, or a coroutine that writes its own reply
  // (it waits for the supervisor or the job queue, or streams) and says whether to read on.
  using Respond = HttpResponse (Api::*)(const Call&);
  using Serve = boost::asio::awaitable<bool> (Api::*)(Call&);
  using Handler = std::variant<Respond, Serve>;

  void add_routes();
  void add(RouteSpec spec, Handler handler);

  bool authorized(const RequestHead& request) const;  // the bearer token, where one is set
  // A request for the API (or refused by it): its body read whole, small. Main thread.
  boost::asio::awaitable<bool> serve(Incoming& in);
  boost::asio::awaitable<bool> serve_on_main(Incoming& in);
  boost::asio::awaitable<bool> route(boost::beast::tcp_stream& stream, HttpRequest& request);

  // The routes, in routes.cc and job_routes.cc; docs/api.md says what each does.
  HttpResponse dashboard(const Call& call);
  HttpResponse metrics_page(const Call& call);
  HttpResponse services(const Call& call);
  HttpResponse service(const Call& call);
  HttpResponse plan(const Call& call);
  HttpResponse queue(const Call& call);
  HttpResponse gpus(const Call& call);  // and /processes, /resources: the path's last segment
  HttpResponse workers(const Call& call);
  HttpResponse register_worker(const Call& call);  // worker_routes.cc
  HttpResponse update_worker(const Call& call);
  HttpResponse unregister_worker(const Call& call);
  HttpResponse publish_event(const Call& call);
  HttpResponse leases(const Call& call);  // lease_routes.cc
  HttpResponse grant_lease(const Call& call);
  HttpResponse release_lease(const Call& call);
  HttpResponse plugins(const Call& call);
  HttpResponse plugin_stats(const Call& call);
  HttpResponse plugin(const Call& call);
  HttpResponse plugin_config(const Call& call);
  HttpResponse put_plugin_config(const Call& call);
  HttpResponse delete_plugin_config(const Call& call);
  HttpResponse jobs(const Call& call);
  HttpResponse job(const Call& call);
  HttpResponse job_result(const Call& call);
  boost::asio::awaitable<bool> ensure(Call& call);
  boost::asio::awaitable<bool> stop(Call& call);
  boost::asio::awaitable<bool> restart(Call& call);
  // action is a literal: its storage outlives the coroutine, which starts after this returns.
  boost::asio::awaitable<bool> service_action(Call& call, std::string_view action);
  boost::asio::awaitable<bool> phase_ensure(Call& call);
  boost::asio::awaitable<bool> logs(Call& call);
  boost::asio::awaitable<bool> events_stream(Call& call);
  boost::asio::awaitable<bool> submit_job(Call& call);
  boost::asio::awaitable<bool> cancel_job(Call& call);
  boost::asio::awaitable<bool> prune_jobs(Call& call);
  boost::asio::awaitable<bool> job_stream(Call& call);
  // Queues job's story so far; returns the subscription that goes on with it, 0 when the job
  // is already over (the queue is then finished).
  uint64_t follow_job(const std::shared_ptr<SseQueue>& queue, const Job& job);

  // /gpus, /processes, /resources: one NVML snapshot each, classified against our PIDs.
  Result<nlohmann::json> gpu_view(const std::string& what) const;
  std::string metrics_text() const;

  boost::asio::any_io_executor main_;
  Supervisor& supervisor_;
  EventBus& events_;
  GpuInventory& gpus_;
  const WorkerRegistry& workers_;
  OutsideWorkers& outside_;
  Leases& leases_;
  OwnershipSource& owners_;
  PluginRegistry& plugins_;
  JobQueue& jobs_;
  const JobStore& job_store_;
  Proxy& proxy_;
  const Metrics& metrics_;
  std::string token_;
  unsigned external_busy_percent_;
  RouteTable table_;
  std::vector<Handler> handlers_;  // by the number table_ gave each route
};

}  // namespace gpuvisor
