// Fakes for the supervisor's edges (STYLE.md practice 3): they record what happened and fail on
// cue. The supervisor drives them through the same Runtime / Prober interfaces as the real ones.
#pragma once

#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <chrono>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "gpu/inventory.h"
#include "runtime/runtime.h"
#include "supervisor/probe.h"

namespace gpuvisor::testing {

class FakeInstance : public Instance {
 public:
  FakeInstance(boost::asio::io_context& io, InstanceRecord record, ExitCallback on_exit)
      : io_(io), record_(std::move(record)), on_exit_(std::move(on_exit)) {}

  const InstanceRecord& record() const override { return record_; }
  bool exited() const override { return exited_; }
  std::vector<pid_t> pids() const override { return {record_.pid}; }
  void refresh() override {}
  void stop(Millis grace, std::function<void(StopOutcome)> done) override {
    stop_graces.push_back(grace);
    waiters_.push_back(std::move(done));
    if (grace.count() == 0) killed_ = true;
    if (!hold_stop) finish_stop();
  }

  // The main process exits on its own (a crash, or success).
  void exit(int code) {
    exited_ = true;
    if (on_exit_) {
      ExitInfo info{true, code, 0};
      boost::asio::post(io_, [cb = std::move(on_exit_), info] { cb(info); });
    }
  }
  // Completes pending stops (when hold_stop kept them waiting).
  void finish_stop() {
    exited_ = true;
    for (auto& w : waiters_) boost::asio::post(io_, [w = std::move(w), k = killed_] { w({k}); });
    waiters_.clear();
  }

  bool hold_stop = false;  // when set, stop() waits for finish_stop()
  std::vector<Millis> stop_graces;

 private:
  boost::asio::io_context& io_;
  InstanceRecord record_;
  ExitCallback on_exit_;
  bool exited_ = false;
  bool killed_ = false;
  std::vector<std::function<void(StopOutcome)>> waiters_;
};

class FakeRuntime : public Runtime {
 public:
  explicit FakeRuntime(boost::asio::io_context& io) : io_(io) {}

  Result<std::shared_ptr<Instance>> start(const ServiceSpec& spec, const LaunchOptions&,
                                          ExitCallback on_exit) override {
    started.push_back(spec.name);
    if (fail_start) return make_error(ErrorCode::kFailed, "cannot execute 'x': No such file");
    InstanceRecord record{spec.name, next_pid_++, 1000, "", false, 0};
    auto instance = std::make_shared<FakeInstance>(io_, record, std::move(on_exit));
    instance->hold_stop = hold_stops;
    instances[spec.name] = instance;
    return std::shared_ptr<Instance>(instance);
  }
  Result<std::shared_ptr<Instance>> adopt(const InstanceRecord& record, const ServiceSpec*,
                                          ExitCallback on_exit) override {
    adopted.push_back(record.service);
    if (!adoptable) return make_error(ErrorCode::kNotFound, "pid gone");
    auto instance = std::make_shared<FakeInstance>(io_, record, std::move(on_exit));
    instances[record.service] = instance;
    return std::shared_ptr<Instance>(instance);
  }
  void discard(const InstanceRecord& record) override { discarded.push_back(record.service); }
  std::vector<std::string> reclaim(const std::vector<InstanceRecord>& records) override {
    for (const auto& r : records) reclaim_saw.push_back(r.service);
    return reclaimed;
  }
  Result<std::shared_ptr<Instance>> adopt_existing(const ServiceSpec&, ExitCallback) override {
    return make_error(ErrorCode::kNotFound, "none");
  }

  std::vector<std::string> started;
  std::vector<std::string> adopted;
  std::vector<std::string> discarded;
  std::vector<std::string> reclaim_saw;  // the services whose records reclaim was told of
  std::vector<std::string> reclaimed;    // what reclaim answers
  std::map<std::string, std::shared_ptr<FakeInstance>> instances;
  bool fail_start = false;
  bool adoptable = true;
  bool hold_stops = false;

 private:
  boost::asio::io_context& io_;
  pid_t next_pid_ = 1000;
};

// Answers each check from a script: results queued per call, then `otherwise`. A check can be
// held (never answered) to model a hung health endpoint.
class FakeProber : public Prober {
 public:
  explicit FakeProber(boost::asio::io_context& io) : io_(io) {}
  void check(const HealthSpec&, Millis, std::function<void(ProbeResult)> done) override {
    ++checks;
    ProbeResult result = otherwise;
    if (!script.empty()) {
      result = script.front();
      script.pop_front();
    }
    boost::asio::post(io_, [done = std::move(done), result] { done(result); });
  }

  std::deque<ProbeResult> script;
  ProbeResult otherwise{true, "HTTP 200"};
  int checks = 0;

 private:
  boost::asio::io_context& io_;
};

// An NVML stand-in for the supervisor's unit tests: answers whatever the test put in `next`.
class FakeInventory : public GpuInventory {
 public:
  Result<GpuSnapshot> snapshot() override {
    ++snapshots;
    return next;
  }
  std::string describe() const override { return "fake"; }
  bool available() const override { return true; }

  Result<GpuSnapshot> next = GpuSnapshot{};
  int snapshots = 0;
};

// Runs the loop until pred holds; false if it still does not after limit (a test failure,
// never a timing assertion: limit only stops a broken test from hanging).
inline bool run_until(boost::asio::io_context& io, const std::function<bool()>& pred,
                      std::chrono::milliseconds limit = std::chrono::milliseconds(10'000)) {
  const auto end = std::chrono::steady_clock::now() + limit;
  while (!pred()) {
    if (std::chrono::steady_clock::now() > end) return false;
    io.restart();
    io.run_one_for(std::chrono::milliseconds(5));
  }
  return true;
}

}  // namespace gpuvisor::testing
