// A service's native process tree as the supervisor sees it (an Instance): its record, and the
// ChildProcess that does the watching and stopping.
#pragma once

#include <memory>
#include <utility>
#include <vector>

#include "runtime/child_process.h"
#include "runtime/runtime.h"

namespace gpuvisor {

class ProcessInstance : public Instance {
 public:
  ProcessInstance(InstanceRecord record, std::shared_ptr<ChildProcess> child)
      : record_(std::move(record)), child_(std::move(child)) {}

  // Begins watching the process; on_exit runs once, posted to the executor.
  void watch(ExitCallback on_exit) { child_->watch(std::move(on_exit)); }

  const InstanceRecord& record() const override { return record_; }
  bool exited() const override { return child_->exited(); }
  std::vector<pid_t> pids() const override { return child_->pids(); }
  void refresh() override { child_->refresh(); }
  void stop(Millis grace, std::function<void(StopOutcome)> done) override {
    child_->stop(grace, std::move(done));
  }

 private:
  InstanceRecord record_;
  std::shared_ptr<ChildProcess> child_;
};

}  // namespace gpuvisor
