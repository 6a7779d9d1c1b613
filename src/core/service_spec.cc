#include "core/service_spec.h"

namespace gpuvisor {

const char* to_string(RuntimeKind kind) {
  switch (kind) {
    case RuntimeKind::kProcess:
      return "process";
    case RuntimeKind::kDocker:
      return "docker";
    case RuntimeKind::kExternal:
      return "external";
    case RuntimeKind::kRemote:
      return "remote";
  }
  return "process";
}

const char* execution_mode(const ServiceSpec& spec) {
  if (spec.runtime == RuntimeKind::kProcess && !spec.conda_env.empty()) return "conda_env";
  if (spec.runtime == RuntimeKind::kRemote) return spec.remote.kind.c_str();
  return to_string(spec.runtime);
}

const char* to_string(RestartPolicy policy) {
  switch (policy) {
    case RestartPolicy::kNo:
      return "no";
    case RestartPolicy::kOnFailure:
      return "on-failure";
    case RestartPolicy::kAlways:
      return "always";
  }
  return "no";
}

std::vector<std::string> conda_run(const std::string& conda, const std::string& env,
                                   const std::vector<std::string>& argv) {
  std::vector<std::string> wrapped = {conda.empty() ? "conda" : conda, "run", "--no-capture-output",
                                      "-n", env};
  wrapped.insert(wrapped.end(), argv.begin(), argv.end());
  return wrapped;
}

}  // namespace gpuvisor
