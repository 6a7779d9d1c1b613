// Bytes both ways between two connections, after a protocol switch (a WebSocket's 101): what
// one side sends, the other gets, until both directions have ended. An end of stream from one
// side is passed on as a half-close, so that a closing handshake can finish; an error on
// either side, or either socket closed from outside (the service stopped), ends both.
#pragma once

#include <boost/asio/awaitable.hpp>
#include <boost/asio/ip/tcp.hpp>

namespace gpuvisor {

boost::asio::awaitable<void> tunnel(boost::asio::ip::tcp::socket& a,
                                    boost::asio::ip::tcp::socket& b);

}  // namespace gpuvisor
