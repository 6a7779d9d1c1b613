// Server-Sent Events over a plain HTTP/1.1 response that ends when the connection does.
#pragma once

#include <boost/asio/awaitable.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <deque>
#include <memory>
#include <string>

namespace gpuvisor {

// One SSE frame: "id: ..\nevent: ..\ndata: ..\n\n" (data split on newlines as the spec wants).
std::string sse_frame(const std::string& id, const std::string& event, const std::string& data);

// Frames waiting to be written to one client. A producer (an EventBus or LogTail subscriber)
// pushes; the connection's coroutine drains. Single-threaded: the strand orders both.
class SseQueue {
 public:
  explicit SseQueue(boost::asio::any_io_executor executor) : wake_(std::move(executor)) {}
  void push(std::string frame);
  // No more frames: run() returns once those queued are written.
  void finish();
  // Writes the response head, then frames as they come, a comment every keepalive to notice a
  // client that went away. Returns when the client disconnects or after finish().
  boost::asio::awaitable<void> run(boost::beast::tcp_stream& stream);

 private:
  std::deque<std::string> frames_;
  boost::asio::steady_timer wake_;
  size_t dropped_ = 0;
  bool finished_ = false;
};

}  // namespace gpuvisor
