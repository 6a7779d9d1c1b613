#include "resources/leases.h"

#include <spdlog/spdlog.h>

#include "core/bytes.h"
#include "core/duration.h"
#include "runtime/pidfd.h"
#include "runtime/proc.h"

namespace gpuvisor {

namespace asio = boost::asio;

nlohmann::json Lease::to_json() const {
  using nlohmann::json;
  return {{"id", id},
          {"vram_bytes", bytes},
          {"gpu", gpu},
          {"pid", pid ? json(*pid) : json(nullptr)},
          {"holder", holder.empty() ? json(nullptr) : json(holder)},
          {"created_unix_ms", created_unix_ms},
          {"expires_unix_ms", expires_unix_ms > 0 ? json(expires_unix_ms) : json(nullptr)}};
}

Leases::Leases(asio::any_io_executor executor, Clock& clock, EventBus& events)
    : executor_(std::move(executor)), clock_(clock), events_(events) {}

Leases::~Leases() = default;

Result<Lease> Leases::grant(const LeaseRequest& request, const Fit& fit) {
  Pidfd pidfd;
  if (request.pid) {
    pidfd = Pidfd::open(*request.pid);
    if (!pidfd.valid()) {
      return make_error(ErrorCode::kNotFound, "pid " + std::to_string(*request.pid) +
                                                  " is not running: a lease for it would end now");
    }
  }
  auto gpu = fit(request.bytes, request.gpu);
  if (!gpu) return gpu.error();
  const uint64_t id = next_id_++;
  Held& held = leases_[id];
  held.lease = {id,
                request.bytes,
                *gpu,
                request.pid,
                request.holder,
                clock_.unix_ms(),
                request.ttl ? clock_.unix_ms() + request.ttl->count() : 0};
  if (request.ttl) {
    held.ttl = clock_.make_timer();
    held.ttl->arm_after(*request.ttl, [this, id] { end(id, "expired"); });
  }
  if (pidfd.valid()) {
    held.pidfd = std::make_unique<asio::posix::stream_descriptor>(executor_, pidfd.release());
    held.pidfd->async_wait(asio::posix::stream_descriptor::wait_read,
                           [this, id](boost::system::error_code ec) {
                             if (!ec) end(id, "pid_exited");  // aborted: released already
                           });
  }
  events_.publish("lease.granted", held.lease.to_json());
  spdlog::info("lease {}: {} on GPU {}{}", id, format_bytes(request.bytes), *gpu,
               request.holder.empty() ? "" : " for " + request.holder);
  return held.lease;
}

Result<Lease> Leases::release(uint64_t id) {
  const auto it = leases_.find(id);
  if (it == leases_.end()) {
    return make_error(ErrorCode::kNotFound, "no lease " + std::to_string(id));
  }
  const Lease gone = it->second.lease;
  end(id, "released");
  return gone;
}

void Leases::end(uint64_t id, const char* reason) {
  const auto it = leases_.find(id);
  if (it == leases_.end()) return;
  nlohmann::json data = it->second.lease.to_json();
  data["reason"] = reason;
  leases_.erase(it);  // cancels its timer and its watch
  spdlog::info("lease {} ended ({})", id, reason);
  events_.publish("lease.ended", std::move(data));
}

std::vector<Lease> Leases::all() const {
  std::vector<Lease> out;
  for (const auto& [id, held] : leases_) out.push_back(held.lease);
  return out;
}

void Leases::add_to(Ownership& owners) const {
  for (const auto& [id, held] : leases_) {
    const Lease& l = held.lease;
    Holder holder{HolderKind::kLease, std::to_string(id), "", l.holder};
    holder.reserved_bytes = l.bytes;
    holder.gpu = l.gpu;
    holder.expires_unix_ms = l.expires_unix_ms;
    std::vector<pid_t> pids;
    if (l.pid) {
      pids.push_back(*l.pid);
      for (const auto& p : list_service_tree(*l.pid)) pids.push_back(p.pid);
    }
    owners.add(std::move(holder), pids);
  }
}

}  // namespace gpuvisor
