#include "core/asio_clock.h"

#include <boost/asio/steady_timer.hpp>

namespace gpuvisor {

namespace {

// Asio cannot take back a completion it has already queued, so each arming gets a number and
// a completion runs its callback only if it is still the latest: cancel is then exact.
class AsioTimer final : public Timer {
 public:
  explicit AsioTimer(const boost::asio::any_io_executor& executor)
      : state_(std::make_shared<State>(executor)) {}
  ~AsioTimer() override { disarm(); }
  AsioTimer(const AsioTimer&) = delete;
  AsioTimer& operator=(const AsioTimer&) = delete;

  void arm_at(SteadyTime at, std::function<void()> fired) override {
    const uint64_t seq = ++state_->seq;
    state_->fired = std::move(fired);
    state_->timer.expires_at(at);
    state_->timer.async_wait(
        [weak = std::weak_ptr<State>(state_), seq](const boost::system::error_code&) {
          const auto state = weak.lock();
          if (!state || state->seq != seq || !state->fired) return;
          std::exchange(state->fired, nullptr)();
        });
  }
  void arm_after(Millis after, std::function<void()> fired) override {
    arm_at(std::chrono::steady_clock::now() + after, std::move(fired));
  }
  void cancel() override { disarm(); }
  bool armed() const override { return state_->fired != nullptr; }

 private:
  void disarm() {
    ++state_->seq;
    state_->fired = nullptr;
    state_->timer.cancel();
  }

  struct State {
    explicit State(const boost::asio::any_io_executor& executor) : timer(executor) {}
    boost::asio::steady_timer timer;
    uint64_t seq = 0;
    std::function<void()> fired;
  };
  std::shared_ptr<State> state_;
};

}  // namespace

std::unique_ptr<Timer> AsioClock::make_timer() {
  return std::make_unique<AsioTimer>(executor_);
}

}  // namespace gpuvisor
