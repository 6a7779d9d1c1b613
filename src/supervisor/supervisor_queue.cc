// SPDX-License-Identifier: Apache-2.0
// The admission queue: a placement refused only because busy services are in the way waits for
// them to go idle instead of failing. It is looked at again whenever a service leaves busy (or
// stops, fails, or falls asleep), and every 250 ms for holders the supervisor does not see go
// idle (workers, leases). Its callers' own timeouts bound the wait; once nobody waits for it, it
// leaves the queue.
//
// Requests for a loaded service go straight to it, so they are served before a swap away from it
// (collation). Past daemon.queue_max_wait in the queue, its blockers drain: they take no new work,
// finish what they have, go idle, and the queued one gets its turn, so none starves.
#include <spdlog/spdlog.h>

#include <algorithm>
#include <boost/asio/post.hpp>

#include "core/duration.h"
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
  const bool found = it != parked_.end();
  if (found) {
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
  const Parked& p = found ? *it : parked_.back();
  const Millis max_wait = config_.daemon.queue_max_wait;
  if (max_wait.count() > 0 && clock_.now() - p.since >= max_wait) drain_for(p);
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
    if (u == nullptr || !u->life.want_running) {
      end_drain(p->name);
      continue;
    }
    if (u->waiters.empty()) {
      // Every caller gave up (its own timeout): nothing is started for nobody.
      events_.publish("queue.timeout", {{"service", p->name}, {"waiting_for", p->waiting_for}});
      end_drain(p->name);
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
  // Posted: the victims of name's plan are evicted first, so that work held back from them does
  // not land on an instance about to go.
  boost::asio::post(executor_, guarded([this, name] { end_drain(name); }));
  const auto it = requeued_.find(name);
  if (it == requeued_.end()) return;
  const auto waited = std::chrono::duration_cast<Millis>(clock_.now() - it->second.since);
  events_.publish("queue.dequeued",
                  {{"service", name}, {"waited_ms", waited.count()}, {"placed", placed}});
  requeued_.erase(it);
}

void Supervisor::drain_for(const Parked& p) {
  for (const auto& blocker : p.waiting_for) {
    Unit* b = find(blocker);  // a worker or a lease is not a unit: it cannot be asked to drain
    if (b == nullptr || !b->draining_for.empty()) continue;
    b->draining_for = p.name;
    const auto waited = std::chrono::duration_cast<Millis>(clock_.now() - p.since);
    spdlog::info("{}: takes no new work until {} is placed ({} queued for {})", blocker, p.name,
                 p.name, format_duration(waited));
    events_.publish("queue.draining",
                    {{"service", blocker}, {"for", p.name}, {"waited_ms", waited.count()}});
  }
}

void Supervisor::end_drain(const std::string& name) {
  for (auto& [blocker, b] : units_) {
    if (b->draining_for != name) continue;
    b->draining_for.clear();
    events_.publish("queue.drained", {{"service", blocker}, {"for", name}});
    for (const lifecycle::WaiterId id : std::exchange(b->held_back, {})) {
      if (b->waiters.contains(id)) apply(*b, lifecycle::input::Ensure{id});
    }
  }
}

bool Supervisor::held_back_timed_out(Unit& u, lifecycle::WaiterId id, Millis after) {
  const auto it = std::find(u.held_back.begin(), u.held_back.end(), id);
  if (it == u.held_back.end()) return false;
  u.held_back.erase(it);
  finish_waiters(u, {id},
                 make_error(ErrorCode::kTimeout,
                            "'" + u.spec.name + "' not ready after " + format_duration(after) +
                                " (draining: it takes no new work until " + u.draining_for +
                                ", which waited past daemon.queue_max_wait behind it, is "
                                "placed)"));
  return true;
}

bool Supervisor::draining(const std::string& name) const {
  const Unit* u = find(name);
  return u != nullptr && !u->draining_for.empty();
}

bool Supervisor::awaited(const std::string& name) const {
  return std::any_of(parked_.begin(), parked_.end(), [&](const Parked& p) {
    return std::find(p.waiting_for.begin(), p.waiting_for.end(), name) != p.waiting_for.end();
  });
}

std::vector<QueueEntry> Supervisor::queue() const {
  std::vector<QueueEntry> out;
  const SteadyTime now = clock_.now();
  for (const auto& p : parked_) {
    QueueEntry e{
        p.name, p.waiting_for,   {},
        0,      p.since_unix_ms, std::chrono::duration_cast<Millis>(now - p.since).count()};
    if (const Unit* u = find(p.name)) e.priority = u->spec.priority;
    for (const auto& blocker : p.waiting_for) {
      if (const Unit* b = find(blocker); b != nullptr && b->draining_for == p.name) {
        e.draining.push_back(blocker);
      }
    }
    out.push_back(std::move(e));
  }
  // The order look_at_queue takes them in.
  std::stable_sort(out.begin(), out.end(), [](const QueueEntry& a, const QueueEntry& b) {
    return a.priority > b.priority;
  });
  return out;
}

}  // namespace gpuvisor
