#include "api/tunnel.h"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <memory>

namespace gpuvisor {

namespace asio = boost::asio;
using asio::ip::tcp;

namespace {

constexpr size_t kPiece = 16 * 1024;

// Lives in tunnel()'s frame, which outlives both directions: it waits for the second.
struct Ends {
  explicit Ends(const asio::any_io_executor& executor) : both_done(executor) {}
  int running = 2;
  asio::steady_timer both_done;
};

void close_both(tcp::socket& a, tcp::socket& b) {
  boost::system::error_code ignored;
  a.close(ignored);
  b.close(ignored);
}

// References, not values: g++ 12 mishandles by-value coroutine parameters that own memory.
asio::awaitable<void> one_way(tcp::socket& from, tcp::socket& to, Ends& ends) {
  const auto piece = std::make_unique<char[]>(kPiece);
  for (;;) {
    boost::system::error_code ec;
    const size_t n = co_await from.async_read_some(asio::buffer(piece.get(), kPiece),
                                                   asio::redirect_error(asio::use_awaitable, ec));
    if (ec == asio::error::eof) {
      to.shutdown(tcp::socket::shutdown_send, ec);
      if (!ec) break;
    }
    if (!ec)
      co_await asio::async_write(to, asio::buffer(piece.get(), n),
                                 asio::redirect_error(asio::use_awaitable, ec));
    if (ec) {
      close_both(from, to);
      break;
    }
  }
  if (--ends.running == 0) ends.both_done.cancel();
}

}  // namespace

asio::awaitable<void> tunnel(tcp::socket& a, tcp::socket& b) {
  Ends ends(a.get_executor());
  ends.both_done.expires_at(asio::steady_timer::time_point::max());
  asio::co_spawn(a.get_executor(), one_way(a, b, ends), asio::detached);
  co_await one_way(b, a, ends);
  if (ends.running > 0) {
    boost::system::error_code ec;
    co_await ends.both_done.async_wait(asio::redirect_error(asio::use_awaitable, ec));
  }
}

}  // namespace gpuvisor
