#include "supervisor/hold.h"

#include "supervisor/supervisor.h"

namespace gpuvisor {

Hold& Hold::operator=(Hold&& other) noexcept {
  if (this == &other) return *this;
  release();
  supervisor_ = std::exchange(other.supervisor_, nullptr);
  alive_ = std::move(other.alive_);
  service_ = std::move(other.service_);
  token_ = other.token_;
  return *this;
}

bool Hold::active() const {
  return supervisor_ != nullptr && !alive_.expired() && supervisor_->held(service_, token_);
}

void Hold::release() {
  Supervisor* supervisor = std::exchange(supervisor_, nullptr);
  if (supervisor != nullptr && !alive_.expired()) supervisor->release(service_, token_);
}

}  // namespace gpuvisor
