// Turns a call that completes through a callback into something a coroutine awaits.
#pragma once

#include <boost/asio/async_result.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <memory>

#include "core/result.h"

namespace gpuvisor {

// The result travels inside a shared_ptr: use_awaitable wants a default-constructible value.
// Deliberately not a coroutine, and the caller passes a named lambda by reference: g++ 12
// destroys a by-value coroutine parameter (or a temporary inside a co_await expression) twice
// when it owns memory, which corrupted the heap on every ensure.
template <typename T, typename Start>
boost::asio::awaitable<std::shared_ptr<Result<T>>> await_result(const Start& start) {
  return boost::asio::async_initiate<decltype(boost::asio::use_awaitable),
                                     void(std::shared_ptr<Result<T>>)>(
      [start](auto handler) mutable {
        auto shared = std::make_shared<decltype(handler)>(std::move(handler));
        start([shared](Result<T> result) {
          (*shared)(std::make_shared<Result<T>>(std::move(result)));
        });
      },
      boost::asio::use_awaitable);
}

}  // namespace gpuvisor
