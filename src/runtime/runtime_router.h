// One Runtime for the supervisor that hands each call to the backend of the service's kind
// (processes, containers), so the supervisor never asks how a service runs.
#pragma once

#include <map>

#include "runtime/runtime.h"

namespace gpuvisor {

class RuntimeRouter : public Runtime {
 public:
  // Backends are borrowed and must outlive the router; a kind with none is refused clearly.
  void add(RuntimeKind kind, Runtime& backend) { backends_[kind] = &backend; }

  Result<std::shared_ptr<Instance>> start(const ServiceSpec& spec, const LaunchOptions& options,
                                          ExitCallback on_exit) override;
  Result<std::shared_ptr<Instance>> adopt(const InstanceRecord& record, const ServiceSpec* spec,
                                          ExitCallback on_exit) override;
  void discard(const InstanceRecord& record) override;
  std::vector<std::string> reclaim(const std::vector<InstanceRecord>& records) override;
  Result<std::shared_ptr<Instance>> adopt_existing(const ServiceSpec& spec,
                                                   ExitCallback on_exit) override;
  nlohmann::json details(const ServiceSpec& spec) const override;

 private:
  Result<Runtime*> backend(RuntimeKind kind) const;
  std::map<RuntimeKind, Runtime*> backends_;
};

}  // namespace gpuvisor
