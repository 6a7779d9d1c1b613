// Time, injected (DESIGN.md): everything that reads the time or waits for it takes a Clock&,
// so that the lifecycle's deadlines, backoffs and idle TTLs can be tested at chosen instants
// with a FakeClock instead of tiny real timers.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <utility>

#include "core/duration.h"

namespace gpuvisor {

using SteadyTime = std::chrono::steady_clock::time_point;

// A one-shot timer. Arming again replaces what was armed; cancel() and the destructor make
// sure the callback never runs, even one the clock has already found due.
class Timer {
 public:
  virtual ~Timer() = default;
  virtual void arm_at(SteadyTime at, std::function<void()> fired) = 0;
  virtual void arm_after(Millis after, std::function<void()> fired) = 0;
  virtual void cancel() = 0;
  virtual bool armed() const = 0;
};

class Clock {
 public:
  virtual ~Clock() = default;
  virtual SteadyTime now() const = 0;
  // Wall time in Unix milliseconds: what records, events and jobs carry.
  virtual int64_t unix_ms() const = 0;
  // Its callbacks run where the clock runs them: the io_context for the real one, inside
  // advance() for the fake.
  virtual std::unique_ptr<Timer> make_timer() = 0;
};

// Time stands still until advance(); due timers fire inside it, in deadline order (arming
// order among equal deadlines), each with now() at its deadline.
class FakeClock final : public Clock {
 public:
  FakeClock();
  ~FakeClock() override;
  SteadyTime now() const override { return now_; }
  int64_t unix_ms() const override;
  std::unique_ptr<Timer> make_timer() override;

  void advance(Millis by);
  // Fires what is due now (a timer armed for a moment already past); what advance(0) does.
  void run_due() { advance(Millis(0)); }
  size_t armed_count() const { return armed_.size(); }
  // When the earliest armed timer is due, if any.
  std::optional<SteadyTime> next_deadline() const;

 private:
  class FakeTimer;
  using Key = std::pair<SteadyTime, uint64_t>;  // deadline, arming order
  SteadyTime now_;
  SteadyTime start_;
  uint64_t next_seq_ = 0;
  std::map<Key, FakeTimer*> armed_;
};

}  // namespace gpuvisor
