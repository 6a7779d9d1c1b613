#include "runtime/log_tail.h"

#include <fcntl.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <unistd.h>

#include <array>
#include <cstdio>

namespace gpuvisor {

namespace {
constexpr size_t kInitialTailBytes = 64 * 1024;
constexpr size_t kMaxLineBytes = 16 * 1024;  // a line without newline is cut here
}  // namespace

LogTail::LogTail(boost::asio::any_io_executor executor, std::string path, size_t ring_lines)
    : executor_(std::move(executor)), path_(std::move(path)), ring_lines_(ring_lines) {}

LogTail::~LogTail() {
  if (fd_ >= 0) close(fd_);
}

void LogTail::start() {
  open_file();
  // Start from the last 64 KiB so `logs` shows what happened before this daemon started.
  struct stat st {};
  if (fd_ >= 0 && fstat(fd_, &st) == 0 && static_cast<size_t>(st.st_size) > kInitialTailBytes) {
    lseek(fd_, st.st_size - static_cast<off_t>(kInitialTailBytes), SEEK_SET);
    std::array<char, 1> c{};
    while (read(fd_, c.data(), 1) == 1 && c[0] != '\n') {
    }
  }
  poll();
  const int ifd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
  if (ifd >= 0) {
    inotify_ = std::make_unique<boost::asio::posix::stream_descriptor>(executor_, ifd);
    watch_ = inotify_add_watch(ifd, path_.c_str(), IN_MODIFY);
    arm_watch();
  }
}

void LogTail::open_file() {
  if (fd_ >= 0) close(fd_);
  // Create it so there is something to watch before the service first writes.
  const int create = open(path_.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (create >= 0) close(create);
  fd_ = open(path_.c_str(), O_RDONLY | O_CLOEXEC);
}

void LogTail::arm_watch() {
  std::weak_ptr<LogTail> weak = weak_from_this();
  inotify_->async_wait(
      boost::asio::posix::stream_descriptor::wait_read,
      [weak](const boost::system::error_code& ec) {
        auto self = weak.lock();
        if (!self || ec) return;
        // Drain the events; which one came does not matter, only that
        // something was appended.
        std::array<char, 4096> events{};
        while (read(self->inotify_->native_handle(), events.data(), events.size()) > 0) {
        }
        self->poll();
        self->arm_watch();
      });
}

void LogTail::rotate_if_larger(size_t max_bytes) {
  struct stat st {};
  if (stat(path_.c_str(), &st) != 0 || static_cast<size_t>(st.st_size) <= max_bytes) return;
  poll();
  std::rename(path_.c_str(), (path_ + ".1").c_str());
  open_file();
  if (inotify_) {
    inotify_rm_watch(inotify_->native_handle(), watch_);
    watch_ = inotify_add_watch(inotify_->native_handle(), path_.c_str(), IN_MODIFY);
  }
}

void LogTail::note(const std::string& text) {
  poll();
  // Our note goes on a line of its own even when the service left one unfinished.
  const std::string line = (partial_.empty() ? "" : "\n") + ("gpuvisor: " + text + "\n");
  const int fd = open(path_.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (fd < 0) return;
  // A short write of a note only loses part of our own annotation; nothing to recover.
  const ssize_t ignored = write(fd, line.data(), line.size());
  (void)ignored;
  close(fd);
  poll();
}

void LogTail::poll() {
  if (fd_ < 0) return;
  struct stat st {};
  // Truncated by someone: start over from the beginning.
  if (fstat(fd_, &st) == 0 && lseek(fd_, 0, SEEK_CUR) > st.st_size) lseek(fd_, 0, SEEK_SET);
  std::array<char, 8192> buf{};
  ssize_t n = 0;
  while ((n = read(fd_, buf.data(), buf.size())) > 0) {
    size_t start = 0;
    for (size_t i = 0; i < static_cast<size_t>(n); ++i) {
      if (buf[i] != '\n') continue;
      partial_.append(buf.data() + start, i - start);
      push_line(std::move(partial_));
      partial_.clear();
      start = i + 1;
    }
    partial_.append(buf.data() + start, static_cast<size_t>(n) - start);
    if (partial_.size() > kMaxLineBytes) {
      push_line(std::move(partial_));
      partial_.clear();
    }
  }
}

void LogTail::push_line(std::string text) {
  if (!text.empty() && text.back() == '\r') text.pop_back();
  ring_.push_back(LogLine{next_seq_++, std::move(text)});
  while (ring_.size() > ring_lines_) ring_.pop_front();
  // Copy: a subscriber may unsubscribe itself while being called.
  const auto subscribers = subscribers_;
  for (const auto& [id, subscriber] : subscribers) subscriber(ring_.back());
}

std::vector<LogLine> LogTail::last(size_t n) const {
  const size_t take = std::min(n, ring_.size());
  return {ring_.end() - static_cast<std::ptrdiff_t>(take), ring_.end()};
}

uint64_t LogTail::subscribe(Subscriber subscriber) {
  const uint64_t id = next_subscriber_++;
  subscribers_.emplace(id, std::move(subscriber));
  return id;
}

void LogTail::unsubscribe(uint64_t id) {
  subscribers_.erase(id);
}

}  // namespace gpuvisor
