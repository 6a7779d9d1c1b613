#include "app/gpu_watch.h"

#include <spdlog/spdlog.h>

namespace gpuvisor {

GpuWatch::GpuWatch(Clock& clock, GpuInventory& gpus, Supervisor& supervisor,
                   OwnershipSource& owners, EventBus& events, unsigned external_busy_percent,
                   Millis interval)
    : timer_(clock.make_timer()),
      gpus_(gpus),
      supervisor_(supervisor),
      owners_(owners),
      events_(events),
      external_busy_percent_(external_busy_percent),
      interval_(interval) {}

void GpuWatch::start() {
  if (interval_.count() <= 0 || !gpus_.available()) return;
  look();
  arm();
}

void GpuWatch::arm() {
  timer_->arm_after(interval_, [this] {
    look();
    arm();
  });
}

void GpuWatch::look() {
  auto snapshot = gpus_.snapshot();
  if (!snapshot) {
    if (!failing_) spdlog::warn("GPU watch: {}", snapshot.error().message);
    failing_ = true;
    return;
  }
  failing_ = false;
  const Ownership owners = owners_.snapshot();
  supervisor_.observe(*snapshot, owners);
  auto now = find_conflicts(classify_gpus(*snapshot, owners, external_busy_percent_, process_name));
  const auto changes = diff_conflicts(conflicts_, now);
  for (const auto& c : changes.appeared) {
    spdlog::warn("GPU {}: processes gpuvisor did not start hold {} MiB", c.gpu,
                 c.external_bytes >> 20);
    events_.publish("gpu.conflict", c.to_json());
  }
  for (const auto& c : changes.cleared) {
    spdlog::info("GPU {}: the conflict cleared", c.gpu);
    events_.publish("gpu.conflict_cleared", {{"gpu", c.gpu}, {"uuid", c.uuid}});
  }
  conflicts_ = std::move(now);
}

}  // namespace gpuvisor
