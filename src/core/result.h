// Result<T>: the daemon's one error policy (STYLE.md practice 7). g++ 12 has no
// std::expected in C++20, so this is a small own type: a value or an Error.
#pragma once

#include <cassert>
#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <variant>
#include <vector>

namespace gpuvisor {

// What kind of failure, chosen so the HTTP layer can map each to one status code.
enum class ErrorCode {
  kBadRequest,        // 400: the caller sent something malformed
  kNotFound,          // 404: no such service (or other named thing)
  kConflict,          // 409: the operation clashes with a newer or running one
  kTimeout,           // 504: waited and gave up
  kFailed,            // 500: the operation ran and failed (service crashed, exec failed, ...)
  kUnavailable,       // 503: a dependency (cgroup, NVML, the daemon) cannot be reached
  kUnauthorized,      // 401: missing or wrong bearer token
  kMethodNotAllowed,  // 405: the route exists, with another method
  kTooLarge,          // 413: a request body over its limit
  kBadGateway,        // 502: a proxied service did not answer, or answered garbage
  kForbidden,         // 403: allowed to no caller of this daemon (another user's process)
};

const char* to_string(ErrorCode code);

struct Error {
  ErrorCode code = ErrorCode::kFailed;
  std::string message;
  // Lines that help explain the failure, e.g. a crashed service's last log lines.
  std::vector<std::string> context;
  // Structured detail for API clients (e.g. {"violations": [...]}), merged into the error body.
  nlohmann::json detail{};
};

inline Error make_error(ErrorCode code, std::string message) {
  return Error{code, std::move(message), {}};
}

template <typename T>
class [[nodiscard]] Result {
 public:
  Result(T value) : v_(std::move(value)) {}      // NOLINT(google-explicit-constructor)
  Result(Error error) : v_(std::move(error)) {}  // NOLINT(google-explicit-constructor)

  bool ok() const { return v_.index() == 0; }
  explicit operator bool() const { return ok(); }

  T& value() {
    assert(ok());
    return std::get<0>(v_);
  }
  const T& value() const {
    assert(ok());
    return std::get<0>(v_);
  }
  T& operator*() { return value(); }
  const T& operator*() const { return value(); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }

  const Error& error() const {
    assert(!ok());
    return std::get<1>(v_);
  }

 private:
  std::variant<T, Error> v_;
};

// Result<void>: success carries nothing.
template <>
class [[nodiscard]] Result<void> {
 public:
  Result() = default;
  Result(Error error) : error_(std::move(error)), ok_(false) {}  // NOLINT

  bool ok() const { return ok_; }
  explicit operator bool() const { return ok_; }
  const Error& error() const {
    assert(!ok_);
    return error_;
  }

 private:
  Error error_;
  bool ok_ = true;
};

using Status = Result<void>;

}  // namespace gpuvisor
