// SPDX-License-Identifier: Apache-2.0
#include "cli/progress.h"

#include <fmt/format.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>

#include "core/duration.h"

namespace gpuvisor {

namespace {

constexpr auto kRedraw = std::chrono::milliseconds(200);
constexpr int kHealthEveryTicks = 5;  // the service's last health check, read once a second
constexpr Millis kReadTimeout{2000};
constexpr Millis kSettle{2000};  // the most the result waits for the steps before it

size_t terminal_width() {
  winsize ws{};
  if (ioctl(STDERR_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 10) return ws.ws_col;
  return 100;
}

std::string names(const nlohmann::json& list) {
  std::string out;
  for (const auto& n : list) {
    out += (out.empty() ? "" : ", ") + (n.is_string() ? n.get<std::string>() : n.dump());
  }
  return out;
}

}  // namespace

Progress::Mode Progress::mode_for(bool quiet) {
  if (quiet) return Mode::kQuiet;
  return isatty(STDERR_FILENO) ? Mode::kLive : Mode::kLines;
}

Progress::Progress(const HttpClient& client, std::vector<std::string> services,
                   std::string log_service, Mode mode)
    : client_(client),
      services_(std::move(services)),
      log_service_(std::move(log_service)),
      mode_(mode),
      started_ms_(unix_ms_now()) {
  if (mode_ == Mode::kQuiet) return;
  // The state it is in now: a command that changes nothing (an ensure of a ready service) has no
  // step to wait for.
  if (!log_service_.empty()) {
    const auto view = client_.request("GET", "/api/v1/services/" + log_service_, kReadTimeout);
    const auto body = view && view->status == 200
                          ? nlohmann::json::parse(view->body, nullptr, false)
                          : nlohmann::json();
    if (body.is_object()) state_ = body.value("state", "");
  }
  events_ = std::thread([this] {
    (void)client_.stream(
        "/api/v1/events?types=service.state_changed,plan.,queue.",
        [this](const SseMessage& m) {
          const auto e = nlohmann::json::parse(m.data, nullptr, false);
          if (e.is_object()) on_event(e);
          return true;
        },
        &events_stop_);
  });
  if (mode_ != Mode::kLive) return;
  if (!log_service_.empty()) {
    logs_ = std::thread([this] {
      (void)client_.stream(
          "/api/v1/services/" + log_service_ + "/logs?n=1&follow=true",
          [this](const SseMessage& m) {
            std::lock_guard lock(mutex_);
            last_log_ = m.data;
            return true;
          },
          &logs_stop_);
    });
  }
  ticker_ = std::thread([this] { tick(); });
}

void Progress::finish(const nlohmann::json& result) {
  if (mode_ == Mode::kQuiet) return;
  {
    std::unique_lock lock(mutex_);
    if (done_) return;
    const std::string final_state = result.is_object() ? result.value("state", "") : "";
    if (!final_state.empty() && result.value("name", "") == log_service_) {
      done_cv_.wait_for(lock, kSettle, [&] { return state_ == final_state; });
    }
    done_ = true;
  }
  done_cv_.notify_all();
  events_stop_.stop();
  logs_stop_.stop();
  for (std::thread* t : {&events_, &logs_, &ticker_}) {
    if (t->joinable()) t->join();
  }
  if (drawn_ > 0) std::fputs("\r\x1b[K", stderr);
  std::fflush(stderr);
}

bool Progress::concerns(const std::string& service) const {
  return std::find(services_.begin(), services_.end(), service) != services_.end();
}

void Progress::on_event(const nlohmann::json& e) {
  // The stream begins with the daemon's history: what came before this command is not its (by
  // the clock: the daemon's and this one's are the same machine's, or near enough).
  if (e.value("time_ms", 0LL) < started_ms_) return;
  const std::string type = e.value("type", "");
  const nlohmann::json data = e.value("data", nlohmann::json::object());
  const std::string service = data.value("service", "");
  if (type == "queue.draining" && concerns(data.value("for", ""))) {
    step(data.value("for", ""),
         "drains " + service + ": it takes no new work until this is placed");
    return;
  }
  if (!concerns(service)) return;
  if (type == "service.state_changed") {
    const std::string to = data.value("to", "");
    const std::string reason = data.value("reason", "");
    step(service, to + (reason.empty() ? "" : ": " + reason));
    {
      std::lock_guard lock(mutex_);
      if (service == log_service_) state_ = to;
      if (to != "starting") health_.clear();
    }
    done_cv_.notify_all();
  } else if (type == "plan.decided") {
    std::string what = "placed on GPU " + names(data.value("gpus", nlohmann::json::array()));
    if (!data.value("evict", nlohmann::json::array()).empty()) {
      what += ", evicting " + names(data["evict"]);
    }
    step(service, what);
  } else if (type == "plan.refused") {
    step(service, "refused: " + data.value("reason", ""));
  } else if (type == "queue.enqueued") {
    step(service,
         "queued behind busy " + names(data.value("waiting_for", nlohmann::json::array())));
  } else if (type == "queue.dequeued") {
    step(service, "leaves the queue");
  }
}

void Progress::step(const std::string& service, const std::string& what) {
  std::lock_guard lock(mutex_);
  const std::string line = service + ": " + what;
  if (line == step_ || done_) return;
  step_ = line;
  if (mode_ == Mode::kLines) {
    std::fprintf(stderr, "[%s] %s\n", elapsed().c_str(), line.c_str());
    std::fflush(stderr);
  } else {
    draw();
  }
}

void Progress::tick() {
  std::unique_lock lock(mutex_);
  for (int ticks = 1; !done_cv_.wait_for(lock, kRedraw, [this] { return done_; }); ++ticks) {
    if (ticks % kHealthEveryTicks == 0 && state_ == "starting") {
      lock.unlock();
      const auto view = client_.request("GET", "/api/v1/services/" + log_service_, kReadTimeout);
      lock.lock();
      if (view && view->status == 200) {
        const auto body = nlohmann::json::parse(view->body, nullptr, false);
        if (body.is_object()) health_ = body.value("last_health_check", "");
      }
      if (done_) break;
    }
    draw();
  }
}

void Progress::draw() {
  std::string line = "[" + elapsed() + "] " + (step_.empty() ? "waiting for the daemon" : step_);
  if (!health_.empty()) line += " | health: " + health_;
  if (!last_log_.empty()) line += " | log: " + last_log_;
  std::replace(line.begin(), line.end(), '\n', ' ');
  const size_t width = terminal_width() - 1;
  if (line.size() > width) line.replace(width - 3, std::string::npos, "...");
  std::fputs(("\r" + line + "\x1b[K").c_str(), stderr);
  std::fflush(stderr);
  drawn_ = line.size();
}

std::string Progress::elapsed() const {
  return fmt::format("{:.1f}s", static_cast<double>(unix_ms_now() - started_ms_) / 1000.0);
}

}  // namespace gpuvisor
