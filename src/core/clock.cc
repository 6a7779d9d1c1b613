#include "core/clock.h"

#include <optional>

namespace gpuvisor {

namespace {
// An arbitrary, fixed wall time for the fake: 2026-01-01T00:00:00Z.
constexpr int64_t kFakeEpochUnixMs = 1'767'225'600'000;
}  // namespace

class FakeClock::FakeTimer final : public Timer {
 public:
  explicit FakeTimer(FakeClock& clock) : clock_(clock) {}
  ~FakeTimer() override { disarm(); }
  FakeTimer(const FakeTimer&) = delete;
  FakeTimer& operator=(const FakeTimer&) = delete;

  void arm_at(SteadyTime at, std::function<void()> fired) override {
    disarm();
    key_ = Key{at, clock_.next_seq_++};
    fired_ = std::move(fired);
    clock_.armed_.emplace(*key_, this);
  }
  void arm_after(Millis after, std::function<void()> fired) override {
    arm_at(clock_.now() + after, std::move(fired));
  }
  void cancel() override { disarm(); }
  bool armed() const override { return key_.has_value(); }

  // Disarms it and hands its callback over, for the clock to run.
  std::function<void()> take() {
    key_.reset();
    return std::exchange(fired_, nullptr);
  }

 private:
  void disarm() {
    if (key_) clock_.armed_.erase(*key_);
    key_.reset();
    fired_ = nullptr;
  }

  FakeClock& clock_;
  std::optional<Key> key_;
  std::function<void()> fired_;
};

FakeClock::FakeClock() : now_(SteadyTime{} + std::chrono::hours(1)), start_(now_) {}

FakeClock::~FakeClock() {
  // Timers that outlive their clock must not reach into it.
  while (!armed_.empty()) armed_.begin()->second->cancel();
}

int64_t FakeClock::unix_ms() const {
  return kFakeEpochUnixMs + std::chrono::duration_cast<Millis>(now_ - start_).count();
}

std::unique_ptr<Timer> FakeClock::make_timer() {
  return std::make_unique<FakeTimer>(*this);
}

std::optional<SteadyTime> FakeClock::next_deadline() const {
  if (armed_.empty()) return std::nullopt;
  return armed_.begin()->first.first;
}

void FakeClock::advance(Millis by) {
  const SteadyTime target = now_ + by;
  while (!armed_.empty() && armed_.begin()->first.first <= target) {
    const auto it = armed_.begin();
    FakeTimer* timer = it->second;
    now_ = std::max(now_, it->first.first);
    armed_.erase(it);
    if (auto fired = timer->take()) fired();  // may arm, cancel or destroy any timer
  }
  now_ = target;
}

}  // namespace gpuvisor
