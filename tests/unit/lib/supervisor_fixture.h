// The Supervisor on a real io_context with fake edges (runtime, prober, GPU inventory), shared by
// the lifecycle and the placement tests.
#pragma once

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <optional>

#include "core/asio_clock.h"
#include "fakes.h"
#include "supervisor/supervisor.h"

namespace gpuvisor {

using testing::FakeProber;
using testing::FakeRuntime;
using testing::run_until;

inline ServiceSpec make_spec(const std::string& name) {
  ServiceSpec s;
  s.name = name;
  s.command = {"/bin/true"};
  s.health.http = "http://127.0.0.1:1/health";
  s.health.interval = Millis(5);
  s.startup_timeout = Millis(5'000);
  s.stop_grace = Millis(1'000);
  s.restart_backoff = Millis(5);
  s.restart_backoff_max = Millis(20);
  return s;
}

inline std::string temp_dir() {
  static int counter = 0;
  const auto dir = std::filesystem::path(::testing::TempDir()) /
                   ("gv-sup-" + std::to_string(getpid()) + "-" + std::to_string(++counter));
  std::filesystem::remove_all(dir);
  return dir.string();
}

class SupervisorTest : public ::testing::Test {
 protected:
  void SetUp() override {
    config_.services.push_back(make_spec("llm"));
    config_.services.push_back(make_spec("tts"));
  }

  ServiceSpec& spec(const std::string& name) {
    for (auto& s : config_.services) {
      if (s.name == name) return s;
    }
    throw std::runtime_error("no spec " + name);
  }

  Supervisor& sup() {
    if (!supervisor_) {
      auto opened = StateStore::open(state_dir_);
      EXPECT_TRUE(opened.ok());
      store_.emplace(std::move(*opened));
      Clock& clock = fake_clock_ ? static_cast<Clock&>(*fake_clock_) : asio_clock_;
      supervisor_ = std::make_unique<Supervisor>(io_.get_executor(), clock, config_, runtime_,
                                                 prober_, *store_, events_);
      supervisor_->start();
    }
    return *supervisor_;
  }

  ServiceState state(const std::string& name) { return sup().get(name)->state; }

  // Issues an ensure and returns a slot the result lands in.
  std::shared_ptr<std::optional<Result<ServiceView>>> ensure(const std::string& name,
                                                             Millis timeout = Millis(10'000)) {
    auto slot = std::make_shared<std::optional<Result<ServiceView>>>();
    sup().ensure(name, timeout, [slot](Result<ServiceView> r) { *slot = std::move(r); });
    return slot;
  }
  std::shared_ptr<std::optional<Result<ServiceView>>> stop(const std::string& name,
                                                           bool force = false) {
    auto slot = std::make_shared<std::optional<Result<ServiceView>>>();
    sup().stop(name, force, [slot](Result<ServiceView> r) { *slot = std::move(r); });
    return slot;
  }
  // Time stands still for the supervisor until advance(): call before the first sup().
  void use_fake_clock() { fake_clock_.emplace(); }
  // Moves the fake time on, then runs what that set off (probes, exits, callbacks) until the
  // loop is idle: the state an instant after `by`, with no real waiting.
  // Steps from one due timer to the next, running the loop between them, so that a probe's
  // answer is seen before the next timer fires, as it would be in real time.
  void advance(Millis by) {
    const SteadyTime target = fake_clock_->now() + by;
    for (;;) {
      io_.restart();
      io_.poll();
      const auto next = fake_clock_->next_deadline();
      if (!next || *next > target) break;
      fake_clock_->advance(std::chrono::duration_cast<Millis>(*next - fake_clock_->now()));
    }
    fake_clock_->advance(std::chrono::duration_cast<Millis>(target - fake_clock_->now()));
    io_.restart();
    io_.poll();
  }
  bool wait(const std::shared_ptr<std::optional<Result<ServiceView>>>& slot) {
    return run_until(io_, [&] { return slot->has_value(); });
  }
  bool wait_state(const std::string& name, ServiceState s) {
    return run_until(io_, [&] { return state(name) == s; });
  }
  std::vector<std::string> transitions(const std::string& name) {
    std::vector<std::string> out;
    for (const auto& e : events_.since(0)) {
      if (e.type == "service.state_changed" && e.data["service"] == name) {
        out.push_back(e.data["to"].get<std::string>());
      }
    }
    return out;
  }

  boost::asio::io_context io_;
  AsioClock asio_clock_{io_.get_executor()};
  std::optional<FakeClock> fake_clock_;
  Config config_;
  FakeRuntime runtime_{io_};
  FakeProber prober_{io_};
  EventBus events_;
  std::string state_dir_ = temp_dir();
  std::optional<StateStore> store_;
  std::unique_ptr<Supervisor> supervisor_;
};

}  // namespace gpuvisor
