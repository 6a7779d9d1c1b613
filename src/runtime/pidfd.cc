#include "runtime/pidfd.h"

#include <sys/syscall.h>
#include <unistd.h>

namespace gpuvisor {

Pidfd::~Pidfd() {
  if (fd_ >= 0) close(fd_);
}

Pidfd& Pidfd::operator=(Pidfd&& other) noexcept {
  if (this != &other) {
    if (fd_ >= 0) close(fd_);
    fd_ = other.release();
  }
  return *this;
}

Pidfd Pidfd::open(pid_t pid) {
  return Pidfd(static_cast<int>(syscall(SYS_pidfd_open, pid, 0)));
}

bool Pidfd::send_signal(int pidfd, int sig) {
  if (pidfd < 0) return false;
  return syscall(SYS_pidfd_send_signal, pidfd, sig, nullptr, 0) == 0;
}

}  // namespace gpuvisor
