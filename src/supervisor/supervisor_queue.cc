// SPDX-License-Identifier: Apache-2.0
// The admission queue: a placement refused only because busy services are in the way waits for
// them to go idle instead of failing. It is looked at again whenever a service leaves busy (or
// stops, fails, or falls asleep), and every 250 ms for holders the supervisor does not see go
// idle (workers, leases). Its callers' own timeouts bound the wait; once nobody waits for it, it
// leaves the queue.
#include <spdlog/spdlog.h>

#include <algorithm>
#include <boost/asio/post.hpp>

#include "supervisor/supervisor.h"
#include "supervisor/unit.h"

namespace gpuvisor {

namespace {

constexpr Millis kQueueLook{250};

std::string names(const std::vector<std::string>& list) {
  std::string out;
  for (const auto& n : list) out += (out.empty() ? "" : ", ") + n;
  return out;
}

}  // namespace

void Supervisor::park(Unit& u, const std::string& why, const Plan& plan) {
  const std::string& name = u.spec.name;
  const auto it =
      std::find_if(parked_.begin(), parked_.end(), [&](const Parked& p) { return p.name == name; });
  if (it != parked_.end()) {
    it->waiting_for = plan.waiting_for;
  } else if (const auto back = requeued_.find(name); back != requeued_.end()) {
    // Looked at again and still blocked: it keeps its place in time.
    Parked again = back->second;
    again.waiting_for = plan.waiting_for;
    requeued_.erase(back);
    parked_.push_back(std::move(again));
  } else {
    parked_.push_back({name, why, plan.waiting_for, clock_.now(), clock_.unix_ms()});
    events_.publish("queue.enqueued", {{"service", name},
                                       {"waiting_for", plan.waiting_for},
                                       {"position", parked_.size()},
                                       {"reason", plan.reason}});
  }
  apply(u, lifecycle::input::Blocked{"waiting for busy " + names(plan.waiting_for) +
                                     " to go idle (queued; " + plan.reason + ")"});
  if (!queue_timer_armed_) {
    queue_timer_armed_ = true;
    queue_timer_->arm_after(kQueueLook, [this] {
      queue_timer_armed_ = false;
      look_at_queue();
    });
  }
}

void Supervisor::queue_may_move() {
  if (parked_.empty() || queue_look_posted_) return;
  // Posted: this is called from inside a unit's step, which must finish first.
  queue_look_posted_ = true;
  boost::asio::post(executor_, guarded([this] {
                      queue_look_posted_ = false;
                      look_at_queue();
                    }));
}

// Higher priority first, then first come: each goes back to the placement queue's front.
void Supervisor::look_at_queue() {
  if (parked_.empty()) return;
  std::vector<Parked> again(parked_.begin(), parked_.end());
  parked_.clear();
  std::stable_sort(again.begin(), again.end(), [this](const Parked& a, const Parked& b) {
    const Unit* ua = find(a.name);
    const Unit* ub = find(b.name);
    return (ua ? ua->spec.priority : 0) > (ub ? ub->spec.priority : 0);
  });
  for (auto p = again.rbegin(); p != again.rend(); ++p) {
    Unit* u = find(p->name);
    if (u == nullptr || !u->life.want_running) continue;
    if (u->waiters.empty()) {
      // Every caller gave up (its own timeout): nothing is started for nobody.
      events_.publish("queue.timeout", {{"service", p->name}, {"waiting_for", p->waiting_for}});
      apply(*u, lifecycle::input::Abandoned{"gave up waiting for busy " + names(p->waiting_for) +
                                            ": nobody waits for it any more"});
      continue;
    }
    requeued_[p->name] = *p;
    placement_queue_.emplace_front(p->name, p->why);
  }
  place_next();
}

// Placed (or refused for good) after waiting: how long it waited, on the event stream.
void Supervisor::leave_queue(const std::string& name, bool placed) {
  const auto it = requeued_.find(name);
  if (it == requeued_.end()) return;
  const auto waited = std::chrono::duration_cast<Millis>(clock_.now() - it->second.since);
  events_.publish("queue.dequeued",
                  {{"service", name}, {"waited_ms", waited.count()}, {"placed", placed}});
  requeued_.erase(it);
}

std::vector<QueueEntry> Supervisor::queue() const {
  std::vector<QueueEntry> out;
  const SteadyTime now = clock_.now();
  for (const auto& p : parked_) {
    out.push_back({p.name, p.waiting_for, p.since_unix_ms,
                   std::chrono::duration_cast<Millis>(now - p.since).count()});
  }
  return out;
}

}  // namespace gpuvisor
