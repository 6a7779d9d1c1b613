// Runtime for native processes: each instance is a ChildProcess, in a cgroup of its own under
// cgroup_parent where the machine allows one.
#pragma once

#include <boost/asio/any_io_executor.hpp>
#include <optional>
#include <string>

#include "runtime/runtime.h"

namespace gpuvisor {

class ProcessRuntime : public Runtime {
 public:
  // cgroup_parent: directory under which each service gets its own cgroup; empty disables
  // cgroups (see CgroupParent). conda: the executable that runs services with a
  // conda_env (empty: conda from PATH).
  ProcessRuntime(boost::asio::any_io_executor executor, std::string cgroup_parent,
                 std::string conda = "");

  Result<std::shared_ptr<Instance>> start(const ServiceSpec& spec, const LaunchOptions& options,
                                          ExitCallback on_exit) override;
  Result<std::shared_ptr<Instance>> adopt(const InstanceRecord& record, const ServiceSpec* spec,
                                          ExitCallback on_exit) override;
  void discard(const InstanceRecord& record) override;
  // Each cgroup under cgroup_parent that no record names is a leftover: its members are
  // killed (they are ours: only this daemon's predecessors create cgroups there) and the
  // directory removed.
  std::vector<std::string> reclaim(const std::vector<InstanceRecord>& records) override;

  // The process named by spec.pid_file, when it runs.
  Result<std::shared_ptr<Instance>> adopt_existing(const ServiceSpec& spec,
                                                   ExitCallback on_exit) override;

  bool uses_cgroups() const { return !cgroup_parent_.empty(); }

 private:
  boost::asio::any_io_executor executor_;
  std::string cgroup_parent_;
  std::string conda_;
  uint64_t next_instance_ = 0;
};

}  // namespace gpuvisor
