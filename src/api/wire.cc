#include "api/wire.h"

#include <boost/beast/core/string.hpp>
#include <boost/beast/http/rfc7230.hpp>
#include <charconv>

namespace gpuvisor::wire {

namespace beast = boost::beast;
namespace http = beast::http;

namespace {

// Fields that describe one hop and are never forwarded (RFC 9110 7.6.1), besides those the
// Connection field names: the body's framing (Content-Length) among them, which the proxy
// writes for its own hop.
bool is_hop_name(http::field name) {
  switch (name) {
    case http::field::connection:
    case http::field::keep_alive:
    case http::field::proxy_connection:
    case http::field::te:
    case http::field::trailer:
    case http::field::upgrade:
    case http::field::transfer_encoding:
    case http::field::content_length:
      return true;
    default:
      return false;
  }
}

// Whether the Connection field (a list of field names, or none) names this one.
bool named_in(std::string_view connection, std::string_view name) {
  if (connection.empty()) return false;
  for (const auto token : http::token_list(connection)) {
    if (beast::iequals(token, name)) return true;
  }
  return false;
}

void append_field(std::string& out, std::string_view name, std::string_view value) {
  out.append(name);
  out += ": ";
  out.append(value);
  out += "\r\n";
}

// The message's end-to-end fields, as they came.
void append_end_to_end(std::string& out, const http::fields& fields, bool keep_host,
                       bool keep_authorization) {
  // Looked up once: the hot path runs this for every field of every message.
  const std::string_view connection = fields[http::field::connection];
  for (const auto& f : fields) {
    const std::string_view name = f.name_string();
    if (is_hop_name(f.name()) || named_in(connection, name)) continue;
    if (f.name() == http::field::host && !keep_host) continue;
    if (f.name() == http::field::authorization && !keep_authorization) continue;
    if (f.name() == http::field::expect) continue;
    append_field(out, name, f.value());
  }
}

void append_framing(std::string& out, Framing framing, uint64_t length) {
  if (framing == Framing::kLength) {
    char digits[24];
    const auto end = std::to_chars(std::begin(digits), std::end(digits), length).ptr;
    append_field(out, "Content-Length", std::string_view(digits, end - digits));
  } else if (framing == Framing::kChunked) {
    out += "Transfer-Encoding: chunked\r\n";
  }
}

}  // namespace

bool wants_upgrade(const http::request_header<>& head) {
  const auto connection = head.find(http::field::connection);
  if (connection == head.end() || head.find(http::field::upgrade) == head.end()) return false;
  return http::token_list(connection->value()).exists("upgrade");
}

void request_head(std::string& out, const http::request_header<>& head, const RequestLine& line) {
  out.append(head.method_string());
  out += ' ';
  out.append(line.target);
  out += " HTTP/1.1\r\n";
  if (!line.host.empty()) append_field(out, "Host", line.host);
  append_end_to_end(out, head, line.host.empty(), !line.strip_authorization);
  if (line.upgrade) {
    out += "Connection: Upgrade\r\n";
    append_field(out, "Upgrade", head[http::field::upgrade]);
  }
  append_framing(out, line.framing, line.length);
  out += "\r\n";
}

void response_head(std::string& out, const http::response_header<>& head, Framing framing,
                   uint64_t length, bool keep_alive, unsigned client_version) {
  const unsigned status = head.result_int();
  out += "HTTP/1.1 ";
  out += std::to_string(status);
  out += ' ';
  out.append(head.reason());
  out += "\r\n";
  const bool switching = status == 101;
  append_end_to_end(out, head, true, true);
  if (switching) {
    out += "Connection: Upgrade\r\n";
    append_field(out, "Upgrade", head[http::field::upgrade]);
  } else if (framing == Framing::kNone) {
    // What a HEAD or 304 answer says of the body it describes, kept as the service said it.
    if (const auto cl = head.find(http::field::content_length); cl != head.end()) {
      append_field(out, "Content-Length", cl->value());
    }
  } else {
    append_framing(out, framing, length);
  }
  if (!switching) {
    if (!keep_alive || framing == Framing::kClose) {
      out += "Connection: close\r\n";
    } else if (client_version < 11) {
      out += "Connection: keep-alive\r\n";
    }
  }
  out += "\r\n";
}

void append_chunk_header(std::string& out, size_t size) {
  char digits[20];
  const auto end = std::to_chars(std::begin(digits), std::end(digits), size, 16).ptr;
  out.append(digits, end);
  out += "\r\n";
}

std::string last_chunk(const http::fields& fields, size_t first) {
  std::string out = "0\r\n";
  size_t i = 0;
  for (const auto& f : fields) {
    if (i++ < first) continue;
    append_field(out, f.name_string(), f.value());
  }
  out += "\r\n";
  return out;
}

}  // namespace gpuvisor::wire
