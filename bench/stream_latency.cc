// How long an SSE event takes from the moment the test service writes it to the moment a
// client reads it: straight from the service, or through a proxy. Each event carries its write
// time (CLOCK_MONOTONIC, this machine), so the difference of the two runs is what the proxy
// adds.
//
//   bench_stream_latency --url http://127.0.0.1:PORT/PATH/stream [--events 2000]
//                        [--interval-ms 2] [--streams 10]
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <string>
#include <vector>

#include "core/url.h"
#include "harness.h"
#include "stats.h"

namespace {

double now_ns() {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<double>(ts.tv_sec) * 1e9 + static_cast<double>(ts.tv_nsec);
}

// One stream: reads every "data: I T" line and records now - T in microseconds.
bool read_stream(const gpuvisor::HttpUrl& url, int events, int interval_ms,
                 std::vector<double>& out) {
  const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(std::atoi(url.port.c_str())));
  inet_pton(AF_INET, url.host.c_str(), &addr.sin_addr);
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    close(fd);
    return false;
  }
  const int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  const std::string request = "GET " + url.target + "?n=" + std::to_string(events) +
                              "&interval_ms=" + std::to_string(interval_ms) +
                              " HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
  if (write(fd, request.data(), request.size()) < 0) {
    close(fd);
    return false;
  }
  std::string buffer;
  char chunk[8192];
  int seen = 0;
  for (ssize_t n; seen < events && (n = read(fd, chunk, sizeof chunk)) > 0;) {
    const double read_at = now_ns();
    buffer.append(chunk, static_cast<size_t>(n));
    for (size_t at; (at = buffer.find("data: ")) != std::string::npos;) {
      const size_t end = buffer.find('\n', at);
      if (end == std::string::npos) break;
      const std::string line = buffer.substr(at + 6, end - at - 6);
      buffer.erase(0, end + 1);
      const auto space = line.find(' ');
      if (space == std::string::npos) continue;
      const double written = std::strtod(line.c_str() + space + 1, nullptr);
      out.push_back((read_at - written) / 1000.0);
      ++seen;
    }
  }
  close(fd);
  return seen == events;
}

}  // namespace

int main(int argc, char** argv) {
  std::string url_text;
  int events = 2000;
  int interval_ms = 2;
  int streams = 10;
  const std::string usage =
      "bench_stream_latency --url http://HOST:PORT/.../stream [--events N] [--interval-ms M] "
      "[--streams S]";
  if (!gpuvisor::bench::read_flags(argc, argv,
                                   {{"--url", &url_text},
                                    {"--events", &events},
                                    {"--interval-ms", &interval_ms},
                                    {"--streams", &streams}},
                                   usage)) {
    return 2;
  }
  const auto url = gpuvisor::parse_http_url(url_text);
  if (!url || events <= 0 || streams <= 0) {
    std::cerr << "usage: " << usage << "\n";
    return 2;
  }
  std::vector<double> samples;
  for (int s = 0; s < streams; ++s) {
    if (!read_stream(*url, events / streams, interval_ms, samples)) {
      std::cerr << "stream " << s << " from " << url_text << " ended early\n";
      return 1;
    }
  }
  std::cout << gpuvisor::bench::format("stream event latency " + url_text,
                                       gpuvisor::bench::summarize(samples), "us")
            << std::endl;
  return 0;
}
