// The Docker Engine API over its unix socket (Boost.Beast), never the docker CLI. Every call is
// asynchronous on the daemon's executor and bounded by a timeout, so an engine that hangs or is
// down costs a clear error, not a stuck daemon.
#pragma once

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/local/stream_protocol.hpp>
#include <boost/beast/core/basic_stream.hpp>
#include <functional>
#include <memory>
#include <optional>
#include <string>

#include "core/duration.h"
#include "core/result.h"
#include "runtime/oneshot.h"

namespace gpuvisor {

struct DockerReply {
  unsigned status = 0;
  std::string body;
};

class DockerClient {
 public:
  // The newest API version gpuvisor speaks; an older engine is spoken to in its own version.
  static constexpr const char* kApiVersion = "1.41";

  DockerClient(boost::asio::any_io_executor executor, std::string socket_path);

  const std::string& socket_path() const { return socket_path_; }

  // One request, "/v1.NN" put in front of target. Transport failures (no engine, timeout) are
  // errors; any HTTP status is a reply, for the caller to judge.
  boost::asio::awaitable<Result<DockerReply>> call(std::string method, std::string target,
                                                   std::string body, Millis timeout);

  // A streaming GET (events, logs): on_data gets the body as it arrives, until the engine
  // ends it, the connection drops, or control->cancel() is called (then: success).
  // on_data must outlive the call (the awaiting caller's frame holds it).
  boost::asio::awaitable<Status> stream(std::string target,
                                        const std::function<void(std::string_view)>& on_data,
                                        std::shared_ptr<StreamControl> control);

  // "unix:///var/run/docker.sock" or a path; what DOCKER_HOST or the config says.
  static Result<std::string> socket_from(const std::string& host);

 private:
  using Stream = boost::beast::basic_stream<boost::asio::local::stream_protocol>;
  boost::asio::awaitable<Status> negotiate(Millis timeout);
  boost::asio::awaitable<Status> open(Stream& stream, Millis timeout);

  boost::asio::any_io_executor executor_;
  std::string socket_path_;
  std::optional<std::string> prefix_;  // "/v1.41", once negotiated
};

// The engine's error text ({"message": "..."}), or the body itself when it is not that JSON.
std::string docker_message(const DockerReply& reply);

}  // namespace gpuvisor
