// SPDX-License-Identifier: Apache-2.0
// What a command that waits on the daemon (ensure, restart, stop, phase) shows meanwhile, on
// stderr (stdout keeps the result alone, for scripts): each step of the services concerned, from
// the daemon's event stream (waiting for placement, queued behind a busy service, evicting,
// waiting for VRAM, starting, health), with the time since the command began. On a terminal one
// line is redrawn in place, with the last health check's result and the service's last log line;
// elsewhere each step is a line of its own; quiet, nothing.
#pragma once

#include <condition_variable>
#include <mutex>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

#include "cli/http_client.h"

namespace gpuvisor {

class Progress {
 public:
  enum class Mode { kQuiet, kLines, kLive };
  // kLive when stderr is a terminal, kLines when not, kQuiet when asked (or with --json).
  static Mode mode_for(bool quiet);

  // Starts following at once, before the command's request goes out, so that no step is missed.
  // log_service: whose log's last line the live line shows (empty: none).
  Progress(const HttpClient& client, std::vector<std::string> services, std::string log_service,
           Mode mode);
  ~Progress() { finish(); }
  Progress(const Progress&) = delete;
  Progress& operator=(const Progress&) = delete;

  // Stops following and clears the live line, before the result is printed. Idempotent.
  // result: the reply, a service view. Its state was published before the reply was sent, but
  // the event stream may bring it after: the steps up to it are waited for (at most kSettle).
  void finish(const nlohmann::json& result = nullptr);

 private:
  bool concerns(const std::string& service) const;
  void on_event(const nlohmann::json& e);
  void step(const std::string& service, const std::string& what);
  void tick();
  void draw();  // the live line, under mutex_
  std::string elapsed() const;

  const HttpClient& client_;
  const std::vector<std::string> services_;
  const std::string log_service_;
  const Mode mode_;
  const long long started_ms_;

  std::mutex mutex_;
  std::condition_variable done_cv_;
  bool done_ = false;
  std::string step_;    // the latest step, "name: what"
  std::string state_;   // of log_service_: at the start, then as the events said
  std::string health_;  // its last health check, while it starts
  std::string last_log_;
  size_t drawn_ = 0;  // characters of the live line on screen

  StreamStop events_stop_;
  StreamStop logs_stop_;
  std::thread events_;
  std::thread logs_;
  std::thread ticker_;
};

}  // namespace gpuvisor
