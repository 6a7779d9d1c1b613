// Outside workers (an app's own processes, registered so their VRAM counts as the app's) and
// app events onto the daemon's stream: seed 001's ResourceManager and EventBroadcaster
// protocols over HTTP.
#include "api/app_bodies.h"
#include "api/gpu_views.h"
#include "api/responses.h"
#include "api/routes.h"

namespace gpuvisor {

namespace http = boost::beast::http;

namespace {

Result<pid_t> path_pid(const RouteMatch& match) {
  return parse_pid(match.arg("pid"));
}

}  // namespace

HttpResponse Api::register_worker(const Call& call) {
  auto registration = parse_registration(call.request.body());
  if (!registration) return error_response(call.request, registration.error());
  const Ownership owners = owners_.snapshot();
  auto added = outside_.add(*registration, [&owners](pid_t pid) {
    const Holder* holder = owners.find(pid);
    return holder == nullptr ? std::string() : holder->label();
  });
  if (!added) return error_response(call.request, added.error());
  return json_response(call.request, http::status::created,
                       worker_json(*added, workers_.related_pids(added->id)));
}

HttpResponse Api::update_worker(const Call& call) {
  const auto pid = path_pid(call.match);
  if (!pid) return error_response(call.request, pid.error());
  auto update = parse_worker_update(call.request.body());
  if (!update) return error_response(call.request, update.error());
  auto updated = outside_.update(*pid, *update);
  if (!updated) return error_response(call.request, updated.error());
  return ok(call.request, worker_json(*updated, workers_.related_pids(updated->id)));
}

HttpResponse Api::unregister_worker(const Call& call) {
  const auto pid = path_pid(call.match);
  if (!pid) return error_response(call.request, pid.error());
  auto removed = outside_.remove(*pid);
  if (!removed) return error_response(call.request, removed.error());
  return ok(call.request, worker_json(*removed, {}));
}

HttpResponse Api::publish_event(const Call& call) {
  auto event = parse_app_event(call.request.body());
  if (!event) return error_response(call.request, event.error());
  const Event& published = events_.publish(event->type, std::move(event->data));
  return json_response(call.request, http::status::accepted, published.to_json());
}

}  // namespace gpuvisor
