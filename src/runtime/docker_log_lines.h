// A container's log, followed with timestamps=1 so that the daemon knows how far it got: each
// line comes as "<RFC3339Nano> <text>", the text goes to the service's log file and the time of
// the last line written to a small position file beside it (<log>.pos). A daemon that adopts the
// container after a restart asks the engine for what came after that time, so the log goes on
// where the previous daemon stopped, with no line lost or written twice.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace gpuvisor {

// Strips the engine's timestamps from whole lines; a line still incomplete waits for its rest.
class DockerLogLines {
 public:
  // The text of the lines completed by data, without their timestamps.
  std::string feed(std::string_view data);
  // The engine's time of the last line feed() returned, in ns since the epoch; 0: none yet.
  int64_t last_ns() const { return last_ns_; }

 private:
  std::string partial_;
  int64_t last_ns_ = 0;
};

// "2026-12-05T05:37:15.123456789Z" in ns since the epoch; nullopt for anything else. The engine
// writes that fixed form (9 digits, UTC) in front of each line.
std::optional<int64_t> parse_docker_timestamp(std::string_view text);

// The position file's path for a log file.
std::string log_position_path(const std::string& log_path);
// Records that lines up to ns are in the log; errors are ignored (a lost position costs
// duplicates or a gap after an adoption, never the log itself).
void write_log_position(int fd, int64_t ns);
// The recorded position, or 0 when there is none.
int64_t read_log_position(const std::string& log_path);

}  // namespace gpuvisor
