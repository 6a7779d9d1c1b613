// Every state change, numbered and kept in a bounded history, fanned out to subscribers (the
// SSE endpoint, tests, later metrics). Lives on the daemon's one strand: no locks.
#pragma once

#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace gpuvisor {

struct Event {
  uint64_t id = 0;  // 1, 2, 3, ... for the life of the daemon; SSE's Last-Event-ID
  int64_t unix_ms = 0;
  std::string type;     // "service.state_changed", ...
  nlohmann::json data;  // type-specific fields

  nlohmann::json to_json() const;
};

class EventBus {
 public:
  using Subscriber = std::function<void(const Event&)>;

  explicit EventBus(size_t history = 1024) : history_limit_(history) {}

  // Numbers, stores and delivers the event to every subscriber, in order, before returning.
  const Event& publish(std::string type, nlohmann::json data);

  // Events with id > after that are still in the history (a reconnecting client's catch-up).
  // An id this bus never handed out came from an earlier daemon run (ids restart at 1): the
  // client missed an unknown amount, so it gets the whole history.
  std::vector<Event> since(uint64_t after) const;
  uint64_t last_id() const { return next_id_ - 1; }

  uint64_t subscribe(Subscriber subscriber);
  void unsubscribe(uint64_t id);
  size_t subscriber_count() const { return subscribers_.size(); }

 private:
  size_t history_limit_;
  std::deque<Event> history_;
  uint64_t next_id_ = 1;
  std::map<uint64_t, Subscriber> subscribers_;
  uint64_t next_subscriber_ = 1;
};

}  // namespace gpuvisor
