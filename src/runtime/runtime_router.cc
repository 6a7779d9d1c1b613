#include "runtime/runtime_router.h"

#include <algorithm>

namespace gpuvisor {

Result<Runtime*> RuntimeRouter::backend(RuntimeKind kind) const {
  const auto it = backends_.find(kind);
  if (it == backends_.end()) {
    return make_error(ErrorCode::kUnavailable,
                      std::string("no ") + to_string(kind) + " runtime in this daemon");
  }
  return it->second;
}

Result<std::shared_ptr<Instance>> RuntimeRouter::start(const ServiceSpec& spec,
                                                       const LaunchOptions& options,
                                                       ExitCallback on_exit) {
  auto b = backend(spec.runtime);
  if (!b) return b.error();
  return (*b)->start(spec, options, std::move(on_exit));
}

Result<std::shared_ptr<Instance>> RuntimeRouter::adopt(const InstanceRecord& record,
                                                       const ServiceSpec* spec,
                                                       ExitCallback on_exit) {
  auto b = backend(record.runtime);
  if (!b) return b.error();
  return (*b)->adopt(record, spec, std::move(on_exit));
}

void RuntimeRouter::discard(const InstanceRecord& record) {
  if (auto b = backend(record.runtime)) (*b)->discard(record);
}

std::vector<std::string> RuntimeRouter::reclaim(const std::vector<InstanceRecord>& records) {
  std::vector<std::string> out;
  std::vector<Runtime*> asked;  // one backend may serve several kinds
  for (const auto& [kind, backend] : backends_) {
    if (std::find(asked.begin(), asked.end(), backend) != asked.end()) continue;
    asked.push_back(backend);
    auto lines = backend->reclaim(records);
    out.insert(out.end(), lines.begin(), lines.end());
  }
  return out;
}

Result<std::shared_ptr<Instance>> RuntimeRouter::adopt_existing(const ServiceSpec& spec,
                                                                ExitCallback on_exit) {
  auto b = backend(spec.runtime);
  if (!b) return b.error();
  return (*b)->adopt_existing(spec, std::move(on_exit));
}

nlohmann::json RuntimeRouter::details(const ServiceSpec& spec) const {
  auto b = backend(spec.runtime);
  return b ? (*b)->details(spec) : nlohmann::json(nullptr);
}

}  // namespace gpuvisor
