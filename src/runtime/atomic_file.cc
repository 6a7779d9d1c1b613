#include "runtime/atomic_file.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace gpuvisor {

Status write_file_atomically(const std::string& path, const std::string& text) {
  const std::string tmp = path + ".tmp";
  const int fd = open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) return make_error(ErrorCode::kFailed, tmp + ": " + std::strerror(errno));
  // A full disk first takes part of a write and refuses only the rest: write until all of it
  // is out or a call fails, so the error says why (ENOSPC), not a stale errno.
  size_t done = 0;
  int saved_errno = 0;
  while (done < text.size()) {
    const ssize_t n = write(fd, text.data() + done, text.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      saved_errno = n < 0 ? errno : EIO;
      break;
    }
    done += static_cast<size_t>(n);
  }
  const bool written = done == text.size();
  const bool synced = written && fsync(fd) == 0;
  if (written && !synced) saved_errno = errno;
  close(fd);
  if (!synced || rename(tmp.c_str(), path.c_str()) != 0) {
    const std::string why = std::strerror(synced ? errno : saved_errno);
    unlink(tmp.c_str());
    return make_error(ErrorCode::kFailed, "cannot write " + path + ": " + why);
  }
  return {};
}

}  // namespace gpuvisor
