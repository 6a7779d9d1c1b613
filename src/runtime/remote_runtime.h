// Runtime for rented machines (cloud GPUs), driven through the provider's own commands: provision,
// status, terminate. gpuvisor tracks each resource (provider, region, instance id, endpoint, ssh,
// GPUs, price, status), accrues its cost while it runs, terminates it after an idle time or when
// its budget is spent, refuses to provision past the budget, and publishes every change.
#pragma once

#include <boost/asio/any_io_executor.hpp>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>

#include "runtime/runtime.h"

namespace gpuvisor {

class RemoteLedger;

class RemoteRuntime : public Runtime {
 public:
  using Publish = std::function<void(const std::string& type, nlohmann::json data)>;

  // ledger_path: where cost so far and the live resources are kept (state dir).
  RemoteRuntime(boost::asio::any_io_executor executor, std::string ledger_path, Publish publish);
  ~RemoteRuntime() override;

  Result<std::shared_ptr<Instance>> start(const ServiceSpec& spec, const LaunchOptions& options,
                                          ExitCallback on_exit) override;
  Result<std::shared_ptr<Instance>> adopt(const InstanceRecord& record, const ServiceSpec* spec,
                                          ExitCallback on_exit) override;
  void discard(const InstanceRecord&) override {}
  Result<std::shared_ptr<Instance>> adopt_existing(const ServiceSpec& spec,
                                                   ExitCallback on_exit) override;
  nlohmann::json details(const ServiceSpec& spec) const override;

 private:
  boost::asio::any_io_executor executor_;
  std::shared_ptr<RemoteLedger> ledger_;
};

// What a provider's provision or status command printed, checked: the resource's fields, or
// what is wrong with the output. Exposed for tests.
struct RemoteResource {
  std::string instance_id;
  std::string status;
  std::string endpoint;
  std::string ssh_host;
  unsigned ssh_port = 0;
};
Result<RemoteResource> parse_provider_output(const std::string& output, bool need_instance_id);

}  // namespace gpuvisor
