#include "runtime/docker_log_lines.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <charconv>
#include <cstdio>
#include <ctime>

namespace gpuvisor {

namespace {

constexpr size_t kTimestampSize = 30;  // "2026-12-05T05:37:15.123456789Z"

bool digits(std::string_view text, size_t at, size_t n, int& out) {
  const char* first = text.data() + at;
  const auto [end, ec] = std::from_chars(first, first + n, out);
  return ec == std::errc() && end == first + n;
}

}  // namespace

std::optional<int64_t> parse_docker_timestamp(std::string_view t) {
  if (t.size() != kTimestampSize || t[4] != '-' || t[7] != '-' || t[10] != 'T' || t[13] != ':' ||
      t[16] != ':' || t[19] != '.' || t[29] != 'Z') {
    return std::nullopt;
  }
  int year = 0, month = 0, day = 0, hour = 0, minute = 0, second = 0, nanos = 0;
  if (!digits(t, 0, 4, year) || !digits(t, 5, 2, month) || !digits(t, 8, 2, day) ||
      !digits(t, 11, 2, hour) || !digits(t, 14, 2, minute) || !digits(t, 17, 2, second) ||
      !digits(t, 20, 9, nanos)) {
    return std::nullopt;
  }
  std::tm tm{};
  tm.tm_year = year - 1900;
  tm.tm_mon = month - 1;
  tm.tm_mday = day;
  tm.tm_hour = hour;
  tm.tm_min = minute;
  tm.tm_sec = second;
  const time_t seconds = timegm(&tm);
  if (seconds < 0) return std::nullopt;
  return static_cast<int64_t>(seconds) * 1'000'000'000 + nanos;
}

std::string DockerLogLines::feed(std::string_view data) {
  partial_.append(data);
  std::string out;
  size_t start = 0;
  for (size_t nl; (nl = partial_.find('\n', start)) != std::string::npos; start = nl + 1) {
    std::string_view line(partial_.data() + start, nl + 1 - start);
    // A line without the engine's stamp (there should be none) is kept as it came.
    if (line.size() > kTimestampSize && line[kTimestampSize] == ' ') {
      if (const auto ns = parse_docker_timestamp(line.substr(0, kTimestampSize))) {
        last_ns_ = std::max(last_ns_, *ns);
        line.remove_prefix(kTimestampSize + 1);
      }
    }
    out.append(line);
  }
  partial_.erase(0, start);
  return out;
}

std::string log_position_path(const std::string& log_path) {
  return log_path + ".pos";
}

void write_log_position(int fd, int64_t ns) {
  // Fixed width at offset 0: one pwrite replaces the last value whole.
  char text[24];
  const int n = std::snprintf(text, sizeof text, "%020lld\n", static_cast<long long>(ns));
  if (n > 0) (void)::pwrite(fd, text, static_cast<size_t>(n), 0);
}

int64_t read_log_position(const std::string& log_path) {
  const int fd = ::open(log_position_path(log_path).c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return 0;
  char text[32] = {};
  const ssize_t n = ::pread(fd, text, sizeof text - 1, 0);
  ::close(fd);
  int64_t ns = 0;
  if (n <= 0) return 0;
  const auto [end, ec] = std::from_chars(text, text + n, ns);
  return ec == std::errc() && ns > 0 ? ns : 0;
}

}  // namespace gpuvisor
