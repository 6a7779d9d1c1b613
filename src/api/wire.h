// What the proxy writes on the wire itself: the head of a request it forwards and of a response
// it relays, and chunk framing. Written by hand because this is the hot path (one gathered write
// per small exchange); the unit tests parse every form back with Beast's parsers, and the
// integration tests with Node's, httpx's and Chromium's.
#pragma once

#include <boost/beast/http/fields.hpp>
#include <boost/beast/http/message.hpp>
#include <cstdint>
#include <string>
#include <string_view>

namespace gpuvisor::wire {

// How a message's body is delimited on one hop.
enum class Framing {
  kNone,     // no body: HEAD, 1xx, 204, 304, or a request without one
  kLength,   // Content-Length
  kChunked,  // Transfer-Encoding: chunked
  kClose,    // the body ends when the connection does (HTTP/1.0 servers, Python's http.server)
};

// Whether a request asks to switch protocols (a WebSocket handshake): "Connection: upgrade"
// with an Upgrade field.
bool wants_upgrade(const boost::beast::http::request_header<>& head);

struct RequestLine {
  std::string_view target;           // on the service
  std::string_view host;             // the Host to send; empty: keep the client's
  bool strip_authorization = false;  // gpuvisor's own key: not the service's business
  bool upgrade = false;              // keep Connection: upgrade and Upgrade
  Framing framing = Framing::kNone;  // kNone, kLength or kChunked
  uint64_t length = 0;               // with kLength
};

// The head gpuvisor sends a service for a client's request: always HTTP/1.1, kept alive (or
// upgrading), without Expect (gpuvisor answers 100-continue itself), and with the body's
// framing as forwarded.
// Appended to out, whose storage a caller may reuse from one request to the next.
void request_head(std::string& out, const boost::beast::http::request_header<>& head,
                  const RequestLine& line);

// The head of a service's response as the client gets it. framing kNone keeps the service's
// Content-Length (a HEAD or 304 answer describes the body it did not send); kLength writes
// length; kChunked the chunked coding; kClose neither, and the connection then closes.
// keep_alive: whether the client's connection carries another request (an HTTP/1.0 client is
// told so, since it assumes the opposite).
void response_head(std::string& out, const boost::beast::http::response_header<>& head,
                   Framing framing, uint64_t length, bool keep_alive, unsigned client_version);

// "HEX\r\n": the line before a chunk of size bytes (size > 0). The chunk ends with "\r\n".
void append_chunk_header(std::string& out, size_t size);

// The last chunk, with the trailer fields the service sent after its body (fields from index
// `first` on: a parser appends trailers after the head's fields).
std::string last_chunk(const boost::beast::http::fields& fields, size_t first);

}  // namespace gpuvisor::wire
