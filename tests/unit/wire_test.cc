// What the proxy writes by hand, parsed back by Beast's parsers: the framing must be exactly
// what a strict HTTP/1.1 parser expects, once, with nothing after it.
#include "api/wire.h"

#include <gtest/gtest.h>

#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http/empty_body.hpp>
#include <boost/beast/http/parser.hpp>
#include <boost/beast/http/string_body.hpp>

#include "api/http_server.h"
#include "api/request_parts.h"

namespace gpuvisor {
namespace {

namespace http = boost::beast::http;
using wire::Framing;

std::string request_text(const http::request_header<>& head, const wire::RequestLine& line) {
  std::string out;
  wire::request_head(out, head, line);
  return out;
}

std::string response_text(const http::response_header<>& head, Framing framing, uint64_t length,
                          bool keep_alive, unsigned client_version) {
  std::string out;
  wire::response_head(out, head, framing, length, keep_alive, client_version);
  return out;
}

// Parses text as one message; returns it with what was left over after its end.
template <bool isRequest>
std::pair<http::message<isRequest, http::string_body>, std::string> parse(
    const std::string& text, bool head_request = false) {
  http::parser<isRequest, http::string_body> parser;
  parser.eager(true);
  if (head_request) parser.skip(true);
  boost::system::error_code ec;
  const size_t used = parser.put(boost::asio::buffer(text), ec);
  EXPECT_FALSE(ec) << ec.message() << " in:\n" << text;
  EXPECT_TRUE(parser.is_done()) << text;
  return {parser.release(), text.substr(used)};
}

http::request_header<> request_head(const std::string& text) {
  http::request_parser<http::empty_body> parser;
  boost::system::error_code ec;
  parser.put(boost::asio::buffer(text), ec);
  EXPECT_FALSE(ec) << ec.message();
  return parser.release().base();
}

http::response_header<> response_head(const std::string& text) {
  http::response_parser<http::empty_body> parser;
  parser.skip(true);
  boost::system::error_code ec;
  parser.put(boost::asio::buffer(text), ec);
  EXPECT_FALSE(ec) << ec.message();
  return parser.release().base();
}

TEST(Wire, ARequestHeadDropsHopFieldsAndFramesTheBodyForItsOwnHop) {
  const auto head = request_head(
      "POST /v1/chat HTTP/1.1\r\nHost: gpuvisor:7733\r\nConnection: keep-alive, X-Hop\r\n"
      "X-Hop: 1\r\nKeep-Alive: timeout=5\r\nTE: trailers\r\nExpect: 100-continue\r\n"
      "Transfer-Encoding: chunked\r\nAuthorization: Bearer ours\r\nX-Trace: abc\r\n\r\n");
  wire::RequestLine line;
  line.target = "/base/v1/chat";
  line.host = "127.0.0.1:8000";
  line.strip_authorization = true;
  line.framing = Framing::kLength;
  line.length = 5;
  const std::string text = request_text(head, line) + "hello";
  auto [request, rest] = parse<true>(text);
  EXPECT_EQ("", rest);
  EXPECT_EQ("/base/v1/chat", request.target());
  EXPECT_EQ("127.0.0.1:8000", request[http::field::host]);
  EXPECT_EQ("abc", request["X-Trace"]);
  EXPECT_EQ("hello", request.body());
  EXPECT_TRUE(request.keep_alive());
  for (const char* gone : {"Connection", "X-Hop", "Keep-Alive", "TE", "Expect", "Transfer-Encoding",
                           "Authorization"}) {
    EXPECT_EQ(request.end(), request.find(gone)) << gone << " was forwarded:\n" << text;
  }
}

TEST(Wire, AStreamedRequestIsChunkedAndAsIsKeepsHostAndAuthorization) {
  const auto head = request_head(
      "PUT /upload HTTP/1.1\r\nHost: localhost:8188\r\nAuthorization: Bearer theirs\r\n\r\n");
  wire::RequestLine line;
  line.target = "/upload";
  line.framing = Framing::kChunked;
  std::string text = request_text(head, line);
  for (const std::string piece : {"abc", "defgh"}) {
    wire::append_chunk_header(text, piece.size());
    text += piece + "\r\n";
  }
  text += wire::last_chunk({}, 0);
  auto [request, rest] = parse<true>(text);
  EXPECT_EQ("", rest);
  EXPECT_EQ("abcdefgh", request.body());
  EXPECT_EQ("localhost:8188", request[http::field::host]);
  EXPECT_EQ("Bearer theirs", request[http::field::authorization]);
}

TEST(Wire, AnUpgradeKeepsItsConnectionAndUpgradeFields) {
  const auto head = request_head(
      "GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
      "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n");
  EXPECT_TRUE(wire::wants_upgrade(head));
  EXPECT_FALSE(wire::wants_upgrade(request_head("GET / HTTP/1.1\r\nUpgrade: websocket\r\n\r\n")));
  wire::RequestLine line;
  line.target = "/ws";
  line.upgrade = true;
  auto [request, rest] = parse<true>(request_text(head, line));
  EXPECT_EQ("websocket", request[http::field::upgrade]);
  EXPECT_TRUE(http::token_list(request[http::field::connection]).exists("upgrade"));
  EXPECT_EQ("dGhlIHNhbXBsZSBub25jZQ==", request["Sec-WebSocket-Key"]);

  const auto switched = response_head(
      "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
      "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n");
  const std::string out = response_text(switched, Framing::kNone, 0, true, 11);
  EXPECT_NE(std::string::npos, out.find("HTTP/1.1 101 Switching Protocols\r\n")) << out;
  EXPECT_NE(std::string::npos, out.find("Connection: Upgrade\r\nUpgrade: websocket\r\n")) << out;
  EXPECT_NE(std::string::npos, out.find("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"));
}

TEST(Wire, AChunkedResponseEndsOnceWithItsTrailers) {
  // As a parser leaves it: the head's fields, then the trailers after the body.
  auto head = response_head(
      "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n"
      "Trailer: X-Checksum\r\n\r\n");
  std::string text = response_text(head, Framing::kChunked, 0, true, 11);
  wire::append_chunk_header(text, 9);
  text += "data: 1\n\n\r\n";
  const size_t head_fields = 3;
  head.insert("X-Checksum", "42");
  text += wire::last_chunk(head, head_fields);
  text += "HTTP/1.1 204 No Content\r\n\r\n";  // the next response on the connection
  auto [response, rest] = parse<false>(text);
  EXPECT_EQ("data: 1\n\n", response.body());
  EXPECT_EQ("42", response["X-Checksum"]);  // Beast appends trailers to the fields
  EXPECT_EQ("HTTP/1.1 204 No Content\r\n\r\n", rest) << "the terminator came twice:\n" << text;
  EXPECT_TRUE(response.keep_alive());
}

TEST(Wire, ResponsesWithoutABodyKeepTheLengthTheyDescribe) {
  const auto head =
      response_head("HTTP/1.1 200 OK\r\nContent-Length: 1234\r\nETag: \"v1\"\r\n\r\n");
  const std::string out = response_text(head, Framing::kNone, 0, true, 11);
  auto [response, rest] = parse<false>(out + "HTTP/1.1 304 Not Modified\r\n\r\n", true);
  EXPECT_EQ("1234", response[http::field::content_length]);
  EXPECT_EQ("", response.body());
  EXPECT_EQ("HTTP/1.1 304 Not Modified\r\n\r\n", rest);
}

TEST(Wire, AnHttp10ClientGetsACloseDelimitedBodyOrKeepAliveSaidAloud) {
  const auto head = response_head("HTTP/1.0 200 OK\r\nServer: SimpleHTTP/0.6\r\n\r\n");
  const std::string closing = response_text(head, Framing::kClose, 0, true, 10);
  EXPECT_NE(std::string::npos, closing.find("Connection: close\r\n")) << closing;
  EXPECT_EQ(std::string::npos, closing.find("Transfer-Encoding")) << closing;
  const std::string kept = response_text(head, Framing::kLength, 3, true, 10);
  EXPECT_NE(std::string::npos, kept.find("Connection: keep-alive\r\n")) << kept;
  EXPECT_NE(std::string::npos, kept.find("Content-Length: 3\r\n")) << kept;
}

TEST(Wire, KeepAliveOfAHeadFollowsTheVersionAndConnection) {
  EXPECT_TRUE(keep_alive(request_head("GET / HTTP/1.1\r\n\r\n")));
  EXPECT_FALSE(keep_alive(request_head("GET / HTTP/1.1\r\nConnection: close\r\n\r\n")));
  EXPECT_FALSE(keep_alive(request_head("GET / HTTP/1.0\r\n\r\n")));
  EXPECT_TRUE(keep_alive(request_head("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n")));
}

TEST(RequestParts, AQueryParamIsFoundAmongOthersAndDecoded) {
  EXPECT_EQ("gpt-4o realtime", query_param("/v1/realtime?a=1&model=gpt-4o%20realtime", "model"));
  EXPECT_EQ(std::nullopt, query_param("/v1/realtime?models=x", "model"));
  EXPECT_EQ(std::nullopt, query_param("/v1/realtime", "model"));
  EXPECT_EQ(std::nullopt, query_param("/v1/realtime?model=%zz", "model"));
}

}  // namespace
}  // namespace gpuvisor
