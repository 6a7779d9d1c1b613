#include "core/ownership.h"

namespace gpuvisor {

std::string Holder::owner() const {
  switch (kind) {
    case HolderKind::kService:
      return name;
    case HolderKind::kLease:
      return "lease:" + name;
    default:
      return "worker:" + name;
  }
}

std::string Holder::label() const {
  if (kind == HolderKind::kService) return name;
  if (kind == HolderKind::kLease) return "lease " + name + (type.empty() ? "" : " (" + type + ")");
  if (kind == HolderKind::kOutsideWorker) {
    const std::string_view prefix = "outside-";  // OutsideWorkers' ids: outside-<pid>
    const std::string pid = name.rfind(prefix, 0) == 0 ? name.substr(prefix.size()) : name;
    return "outside worker " + pid + " (" + type + ")";
  }
  return "worker " + name + (plugin.empty() ? "" : " (plugin " + plugin + ")");
}

void Ownership::add(Holder holder, const std::vector<pid_t>& pids) {
  const size_t at = holders_.size();
  holders_.push_back(std::move(holder));
  for (const pid_t pid : pids) by_pid_.emplace(pid, at);
}

const Holder* Ownership::find(pid_t pid) const {
  const auto it = by_pid_.find(pid);
  return it == by_pid_.end() ? nullptr : &holders_[it->second];
}

const Holder* Ownership::find(const std::string& owner) const {
  for (const auto& h : holders_) {
    if (h.owner() == owner) return &h;
  }
  return nullptr;
}

std::vector<pid_t> Ownership::pids_of(const std::string& owner) const {
  std::vector<pid_t> out;
  for (const auto& [pid, at] : by_pid_) {
    if (holders_[at].owner() == owner) out.push_back(pid);
  }
  return out;
}

}  // namespace gpuvisor
