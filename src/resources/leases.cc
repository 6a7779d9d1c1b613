#include "resources/leases.h"

#include <spdlog/spdlog.h>

#include <fstream>

#include "core/bytes.h"
#include "core/duration.h"
#include "runtime/atomic_file.h"
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

Leases::Leases(asio::any_io_executor executor, Clock& clock, EventBus& events,
               std::string state_file)
    : executor_(std::move(executor)),
      clock_(clock),
      events_(events),
      state_file_(std::move(state_file)) {}

Leases::~Leases() = default;

Result<Lease> Leases::grant(const LeaseRequest& request, const Fit& fit) {
  Pidfd pidfd;
  uint64_t pid_start_time = 0;
  if (request.pid) {
    // The pidfd first: while it shows the process alive, the start time read is its own.
    pidfd = Pidfd::open(*request.pid);
    const auto st = read_proc_stat(*request.pid);
    if (!pidfd.valid() || !st) {
      return make_error(ErrorCode::kNotFound, "pid " + std::to_string(*request.pid) +
                                                  " is not running: a lease for it would end now");
    }
    pid_start_time = st->start_time;
  }
  auto gpu = fit(request.bytes, request.gpu);
  if (!gpu) return gpu.error();
  const Lease lease{next_id_++,
                    request.bytes,
                    *gpu,
                    request.pid,
                    request.holder,
                    clock_.unix_ms(),
                    request.ttl ? clock_.unix_ms() + request.ttl->count() : 0,
                    pid_start_time};
  keep(lease, std::move(pidfd));
  save();
  events_.publish("lease.granted", lease.to_json());
  spdlog::info("lease {}: {} on GPU {}{}", lease.id, format_bytes(request.bytes), *gpu,
               request.holder.empty() ? "" : " for " + request.holder);
  return lease;
}

void Leases::keep(const Lease& lease, Pidfd pidfd) {
  const uint64_t id = lease.id;
  Held& held = leases_[id];
  held.lease = lease;
  if (lease.expires_unix_ms > 0) {
    held.ttl = clock_.make_timer();
    const Millis left(std::max<int64_t>(lease.expires_unix_ms - clock_.unix_ms(), 0));
    held.ttl->arm_after(left, [this, id] { end(id, "expired"); });
  }
  if (pidfd.valid()) {
    held.pidfd = std::make_unique<asio::posix::stream_descriptor>(executor_, pidfd.release());
    held.pidfd->async_wait(asio::posix::stream_descriptor::wait_read,
                           [this, id](boost::system::error_code ec) {
                             if (!ec) end(id, "pid_exited");  // aborted: released already
                           });
  }
}

void Leases::save() const {
  if (state_file_.empty()) return;
  nlohmann::json list = nlohmann::json::array();
  for (const auto& [id, held] : leases_) {
    auto j = held.lease.to_json();
    j["pid_start_time"] = held.lease.pid_start_time;
    list.push_back(std::move(j));
  }
  if (auto written = write_file_atomically(state_file_, list.dump() + "\n"); !written) {
    spdlog::warn("cannot save the VRAM leases: {}", written.error().message);
  }
}

size_t Leases::restore() {
  if (state_file_.empty()) return 0;
  std::ifstream in(state_file_);
  if (!in) return 0;
  const auto list = nlohmann::json::parse(in, nullptr, false);
  if (!list.is_array()) {
    spdlog::warn("{}: not a list of leases; starting without them", state_file_);
    return 0;
  }
  size_t restored = 0;
  for (const auto& j : list) {
    if (!j.is_object() || !j.value("id", nlohmann::json()).is_number_unsigned()) continue;
    Lease l;
    l.id = j["id"].get<uint64_t>();
    l.bytes = j.value("vram_bytes", uint64_t{0});
    l.gpu = j.value("gpu", 0U);
    if (j.value("pid", nlohmann::json()).is_number_integer()) l.pid = j["pid"].get<pid_t>();
    l.holder =
        j.value("holder", nlohmann::json()).is_string() ? j["holder"].get<std::string>() : "";
    l.created_unix_ms = j.value("created_unix_ms", int64_t{0});
    l.expires_unix_ms = j.value("expires_unix_ms", nlohmann::json()).is_number_integer()
                            ? j["expires_unix_ms"].get<int64_t>()
                            : 0;
    l.pid_start_time = j.value("pid_start_time", uint64_t{0});
    next_id_ = std::max(next_id_, l.id + 1);
    if (l.bytes == 0 || (l.expires_unix_ms > 0 && l.expires_unix_ms <= clock_.unix_ms())) continue;
    Pidfd pidfd;
    if (l.pid) {
      pidfd = Pidfd::open(*l.pid);
      if (!pidfd.valid() || !same_process_alive(*l.pid, l.pid_start_time)) continue;
    }
    keep(l, std::move(pidfd));
    ++restored;
  }
  save();  // without those that ended while no daemon watched
  if (restored > 0) spdlog::info("took back {} VRAM lease(s) granted before", restored);
  return restored;
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
  save();
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
