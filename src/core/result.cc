#include "core/result.h"

namespace gpuvisor {

const char* to_string(ErrorCode code) {
  switch (code) {
    case ErrorCode::kBadRequest:
      return "bad_request";
    case ErrorCode::kNotFound:
      return "not_found";
    case ErrorCode::kConflict:
      return "conflict";
    case ErrorCode::kTimeout:
      return "timeout";
    case ErrorCode::kFailed:
      return "failed";
    case ErrorCode::kUnavailable:
      return "unavailable";
    case ErrorCode::kUnauthorized:
      return "unauthorized";
    case ErrorCode::kMethodNotAllowed:
      return "method_not_allowed";
    case ErrorCode::kTooLarge:
      return "too_large";
    case ErrorCode::kBadGateway:
      return "bad_gateway";
    case ErrorCode::kForbidden:
      return "forbidden";
  }
  return "failed";
}

}  // namespace gpuvisor
