// Follows one service's log file. The service writes the file itself (so its output survives a
// daemon restart); the daemon reads what is appended through inotify, keeps the last lines in a
// bounded ring and hands new lines to subscribers (`gpuvisor logs -f`).
#pragma once

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace gpuvisor {

struct LogLine {
  uint64_t seq = 0;  // increases by one per line this daemon has read
  std::string text;
};

class LogTail : public std::enable_shared_from_this<LogTail> {
 public:
  using Subscriber = std::function<void(const LogLine&)>;

  LogTail(boost::asio::any_io_executor executor, std::string path, size_t ring_lines);
  ~LogTail();
  LogTail(const LogTail&) = delete;
  LogTail& operator=(const LogTail&) = delete;

  // Creates the file if needed, loads its last lines into the ring, starts watching.
  void start();

  const std::string& path() const { return path_; }
  // Moves a file larger than max_bytes aside (to path.1) before a new instance starts writing.
  void rotate_if_larger(size_t max_bytes);
  // Appends a line of the daemon's own ("gpuvisor: started pid 42") between service output.
  void note(const std::string& text);
  // Reads whatever was appended since the last read; also driven by inotify.
  void poll();

  std::vector<LogLine> last(size_t n) const;
  uint64_t subscribe(Subscriber subscriber);
  void unsubscribe(uint64_t id);

 private:
  void open_file();
  void arm_watch();
  void push_line(std::string text);

  boost::asio::any_io_executor executor_;
  std::string path_;
  size_t ring_lines_;
  int fd_ = -1;
  int watch_ = -1;
  std::unique_ptr<boost::asio::posix::stream_descriptor> inotify_;
  std::string partial_;
  std::deque<LogLine> ring_;
  uint64_t next_seq_ = 1;
  std::map<uint64_t, Subscriber> subscribers_;
  uint64_t next_subscriber_ = 1;
};

}  // namespace gpuvisor
