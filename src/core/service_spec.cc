#include "core/service_spec.h"

namespace gpuvisor {

const char* to_string(RuntimeKind kind) {
  switch (kind) {
    case RuntimeKind::kProcess:
      return "process";
  }
  return "process";
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

}  // namespace gpuvisor
