// The lifecycle reducer's test bench: a spec, a state, and a clock that moves only when a step
// says so. Each test feeds inputs and checks the effects of the last step.
#pragma once

#include <gtest/gtest.h>

#include <chrono>
#include <optional>
#include <vector>

#include "supervisor/lifecycle.h"

namespace gpuvisor::lifecycle {

class LifecycleTest : public ::testing::Test {
 protected:
  LifecycleTest() {
    spec_.name = "llm";
    spec_.health.http = "http://127.0.0.1:1/health";
    spec_.health.interval = std::chrono::seconds(30);
    spec_.health.timeout = std::chrono::seconds(2);
    spec_.startup_timeout = std::chrono::seconds(300);
    spec_.stop_grace = std::chrono::seconds(10);
    spec_.restart = RestartPolicy::kAlways;
    spec_.restart_limit = 3;
    spec_.restart_backoff = std::chrono::seconds(1);
    spec_.restart_backoff_max = std::chrono::seconds(8);
  }

  // Steps the current state with in, at now_ (+ after), keeping the result.
  const std::vector<Effect>& feed(const Input& in, Millis after = Millis(0)) {
    now_ += after;
    last_ = step(state_, in, {spec_, now_, shutting_down_});
    state_ = last_.state;
    return last_.effects;
  }
  template <typename E>
  std::vector<E> all() const {
    std::vector<E> out;
    for (const auto& e : last_.effects) {
      if (const auto* x = std::get_if<E>(&e)) out.push_back(*x);
    }
    return out;
  }
  template <typename E>
  E one() const {
    const auto found = all<E>();
    EXPECT_EQ(1u, found.size());
    return found.empty() ? E{} : found.front();
  }
  std::optional<SteadyTime> armed(TimerKind kind) const {
    for (const auto& a : all<effect::Arm>()) {
      if (a.kind == kind) return a.at;
    }
    return std::nullopt;
  }
  // Ensured, launched and healthy.
  void make_ready() {
    feed(input::Ensure{1});
    feed(input::NewInstance{});
    feed(input::Launched{"ensure requested", std::nullopt});
    feed(input::ProbeDone{state_.generation, false, true, "HTTP 200", false});
    ASSERT_EQ(ServiceState::kReady, state_.state);
  }

  ServiceSpec spec_;
  UnitState state_;
  SteadyTime now_ = SteadyTime{} + std::chrono::hours(1);
  bool shutting_down_ = false;
  Step last_;
};

}  // namespace gpuvisor::lifecycle
