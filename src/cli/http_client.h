// The client's side of the API: blocking calls (the CLI has nothing else to do meanwhile) with
// deadlines, over Boost.Beast. Knows nothing of the daemon's internals.
#pragma once

#include <functional>
#include <map>
#include <mutex>
#include <string>

#include "core/duration.h"
#include "core/result.h"

namespace gpuvisor {

struct HttpReply {
  unsigned status = 0;
  std::string body;
  std::map<std::string, std::string> headers{};  // names in lower case
};

// Ends a stream() from another thread: the read it is blocked in returns, and stream() with it.
// A stop that comes before the stream has connected ends it as soon as it has.
class StreamStop {
 public:
  void stop();

 private:
  friend class HttpClient;
  bool attach(int fd);  // false: stopped already
  void detach();
  std::mutex mutex_;
  int fd_ = -1;
  bool stopped_ = false;
};

struct SseMessage {
  std::string id;
  std::string event;
  std::string data;
};

class HttpClient {
 public:
  // base_url: "http://host:port"; token: sent as a bearer token when non-empty.
  static Result<HttpClient> create(const std::string& base_url, std::string token);

  // Unavailable when the daemon cannot be reached, Timeout when it does not answer in time.
  // body, when not empty, is sent as JSON.
  Result<HttpReply> request(const std::string& method, const std::string& target, Millis timeout,
                            const std::string& body = "") const;
  // Reads an SSE stream until it ends, on_message returns false, or stop is stopped.
  Status stream(const std::string& target, const std::function<bool(const SseMessage&)>& on_message,
                StreamStop* stop = nullptr) const;

  const std::string& base_url() const { return base_url_; }

 private:
  HttpClient(std::string base_url, std::string host, std::string port, std::string token)
      : base_url_(std::move(base_url)),
        host_(std::move(host)),
        port_(std::move(port)),
        token_(std::move(token)) {}

  std::string base_url_;
  std::string host_;
  std::string port_;
  std::string token_;
};

// Feeds raw SSE bytes and emits complete messages; split out so it can be tested on its own.
class SseParser {
 public:
  // Returns false when a callback asked to stop.
  bool feed(std::string_view bytes, const std::function<bool(const SseMessage&)>& on_message);

 private:
  std::string buffer_;
  SseMessage current_;
};

}  // namespace gpuvisor
