#include "api/sse.h"

#include <boost/asio/redirect_error.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>

namespace gpuvisor {

namespace asio = boost::asio;

namespace {
constexpr auto kKeepalive = std::chrono::seconds(15);
// A client that reads slower than events come is cut off rather than let its queue grow
// without bound; it reconnects with Last-Event-ID and catches up from the history.
constexpr size_t kMaxQueued = 10'000;
}  // namespace

std::string sse_frame(const std::string& id, const std::string& event, const std::string& data) {
  std::string out;
  if (!id.empty()) out += "id: " + id + "\n";
  if (!event.empty()) out += "event: " + event + "\n";
  size_t start = 0;
  for (;;) {
    const auto nl = data.find('\n', start);
    out += "data: " + data.substr(start, nl - start) + "\n";
    if (nl == std::string::npos) break;
    start = nl + 1;
  }
  out += "\n";
  return out;
}

void SseQueue::push(std::string frame) {
  if (frames_.size() >= kMaxQueued) {
    ++dropped_;
  } else {
    frames_.push_back(std::move(frame));
  }
  wake_.cancel();
}

void SseQueue::finish() {
  finished_ = true;
  wake_.cancel();
}

asio::awaitable<void> SseQueue::run(boost::beast::tcp_stream& stream) {
  const std::string head =
      "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n"
      "Connection: close\r\nX-Accel-Buffering: no\r\n\r\n";
  boost::system::error_code ec;
  co_await asio::async_write(stream, asio::buffer(head),
                             asio::redirect_error(asio::use_awaitable, ec));
  while (!ec) {
    if (dropped_ > 0) co_return;
    if (!frames_.empty()) {
      std::string batch;
      while (!frames_.empty()) {
        batch += frames_.front();
        frames_.pop_front();
      }
      co_await asio::async_write(stream, asio::buffer(batch),
                                 asio::redirect_error(asio::use_awaitable, ec));
      continue;
    }
    if (finished_) co_return;
    wake_.expires_after(kKeepalive);
    boost::system::error_code wait_ec;
    co_await wake_.async_wait(asio::redirect_error(asio::use_awaitable, wait_ec));
    if (!wait_ec && frames_.empty()) {
      static const std::string kComment = ": keepalive\n\n";
      co_await asio::async_write(stream, asio::buffer(kComment),
                                 asio::redirect_error(asio::use_awaitable, ec));
    }
  }
}

}  // namespace gpuvisor
