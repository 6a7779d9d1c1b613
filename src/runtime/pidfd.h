// A pidfd: a file descriptor that names one process for as long as it is open. Signals sent
// through it can never reach a different process that later got the same PID.
#pragma once

#include <sys/types.h>

namespace gpuvisor {

class Pidfd {
 public:
  Pidfd() = default;
  explicit Pidfd(int fd) : fd_(fd) {}
  ~Pidfd();
  Pidfd(Pidfd&& other) noexcept : fd_(other.release()) {}
  Pidfd& operator=(Pidfd&& other) noexcept;
  Pidfd(const Pidfd&) = delete;
  Pidfd& operator=(const Pidfd&) = delete;

  // Invalid (fd() < 0) when the process is gone or the kernel lacks pidfd_open (< 5.3).
  static Pidfd open(pid_t pid);

  bool valid() const { return fd_ >= 0; }
  int fd() const { return fd_; }
  int release() {
    const int fd = fd_;
    fd_ = -1;
    return fd;
  }
  // False when the process has exited (ESRCH) or the fd is invalid.
  bool send_signal(int sig) const { return send_signal(fd_, sig); }
  // The same through a pidfd owned elsewhere (an Asio descriptor watching it).
  static bool send_signal(int pidfd, int sig);

 private:
  int fd_ = -1;
};

}  // namespace gpuvisor
