#include "events/event_bus.h"

#include <chrono>

namespace gpuvisor {

nlohmann::json Event::to_json() const {
  return {{"id", id}, {"time_ms", unix_ms}, {"type", type}, {"data", data}};
}

const Event& EventBus::publish(std::string type, nlohmann::json data) {
  Event event;
  event.id = next_id_++;
  event.unix_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                      std::chrono::system_clock::now().time_since_epoch())
                      .count();
  event.type = std::move(type);
  event.data = std::move(data);
  history_.push_back(std::move(event));
  while (history_.size() > history_limit_) history_.pop_front();
  // Copy: a subscriber may unsubscribe itself (or another) while being called.
  const auto subscribers = subscribers_;
  for (const auto& [id, subscriber] : subscribers) subscriber(history_.back());
  return history_.back();
}

std::vector<Event> EventBus::since(uint64_t after) const {
  if (after > last_id()) after = 0;
  std::vector<Event> out;
  for (const auto& e : history_) {
    if (e.id > after) out.push_back(e);
  }
  return out;
}

uint64_t EventBus::subscribe(Subscriber subscriber) {
  const uint64_t id = next_subscriber_++;
  subscribers_.emplace(id, std::move(subscriber));
  return id;
}

void EventBus::unsubscribe(uint64_t id) {
  subscribers_.erase(id);
}

}  // namespace gpuvisor
