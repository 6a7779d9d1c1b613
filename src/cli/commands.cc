#include "cli/commands.h"

#include <fmt/format.h>

#include <algorithm>
#include <charconv>
#include <chrono>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "cli/http_client.h"
#include "cli/progress.h"
#include "cli/tables.h"
#include "core/duration.h"

namespace gpuvisor {

namespace {

constexpr Millis kReadTimeout{10'000};
// A cancel is answered once the job's worker has stopped (the daemon gives up after 15 s).
constexpr Millis kCancelTimeout{30'000};

std::string env_or(const char* name, const std::string& fallback) {
  const char* value = std::getenv(name);
  return value != nullptr && *value != '\0' ? value : fallback;
}

int fail(const std::string& message) {
  std::cerr << "gpuvisor: " << message << "\n";
  return 1;
}

// Prints an API error reply: the message, then any log lines the daemon attached.
int fail_reply(const HttpReply& reply) {
  const auto body = nlohmann::json::parse(reply.body, nullptr, false);
  if (body.is_discarded() || !body.contains("error")) {
    return fail("HTTP " + std::to_string(reply.status) + ": " + reply.body);
  }
  const auto& error = body["error"];
  std::cerr << "gpuvisor: " << error.value("message", "unknown error") << "\n";
  if (error.contains("log_tail") && !error["log_tail"].empty()) {
    std::cerr << "last log lines:\n";
    for (const auto& line : error["log_tail"]) std::cerr << "  " << line.get<std::string>() << "\n";
  }
  return 1;
}

std::string text(const nlohmann::json& j, const char* key) {
  if (!j.contains(key) || j[key].is_null()) return "-";
  if (j[key].is_string()) return j[key].get<std::string>();
  return j[key].dump();
}

}  // namespace

ClientCommands::ClientCommands(CLI::App& app)
    : url_(env_or("GPUVISOR_URL", "http://127.0.0.1:7733")) {
  add_service_commands(app);
  add_gpu_commands(app);
  add_plugin_commands(app);
  add_job_commands(app);
}

CLI::App* ClientCommands::add_command(CLI::App& parent, const char* name, const char* help) {
  CLI::App* sub = parent.add_subcommand(name, help);
  sub->add_option("--url", url_, "Daemon URL (env GPUVISOR_URL)")->capture_default_str();
  return sub;
}

void ClientCommands::add_service_commands(CLI::App& app) {
  status_ = add_command(app, "status", "Show every service, or one");
  status_->add_option("name", name_, "Service name");
  status_->add_flag("--json", json_, "Print the API's JSON");

  ensure_ = add_command(app, "ensure", "Start a service if needed and wait until it is ready");
  ensure_->add_option("name", name_, "Service name")->required();
  ensure_->add_option("--timeout", timeout_, "How long to wait, e.g. 90s, 5m")
      ->capture_default_str();
  ensure_->add_flag("--json", json_, "Print the API's JSON");
  ensure_->add_flag("-q,--quiet", quiet_, "Print no progress while waiting");

  stop_ = add_command(app, "stop", "Stop a service: SIGTERM, then SIGKILL after its stop_grace");
  stop_->add_option("name", name_, "Service name")->required();
  stop_->add_flag("--force", force_, "SIGKILL at once");
  stop_->add_flag("--json", json_, "Print the API's JSON");
  stop_->add_flag("-q,--quiet", quiet_, "Print no progress while waiting");

  restart_ = add_command(app, "restart", "Stop a service, then ensure it");
  restart_->add_option("name", name_, "Service name")->required();
  restart_->add_option("--timeout", timeout_, "How long to wait for ready")->capture_default_str();
  restart_->add_flag("--json", json_, "Print the API's JSON");
  restart_->add_flag("-q,--quiet", quiet_, "Print no progress while waiting");

  logs_ = add_command(app, "logs", "Show a service's output");
  logs_->add_option("name", name_, "Service name")->required();
  logs_->add_flag("-f,--follow", follow_, "Keep printing new lines");
  logs_->add_option("-n,--lines", lines_, "How many recent lines")
      ->check(CLI::Range(0, 100'000))
      ->capture_default_str();
  logs_->add_flag("--json", json_, "Print JSON (one object per line when following)");

  events_ = add_command(app, "events", "Follow the daemon's event stream");
  events_->add_flag("--json", json_, "Print each event as one JSON line");
}

void ClientCommands::add_gpu_commands(CLI::App& app) {
  gpus_ = add_command(app, "gpus", "Show every GPU: memory, utilisation, and who holds it");
  gpus_->add_flag("--json", json_, "Print the API's JSON (/api/v1/resources)");
  ps_ = add_command(app, "ps", "Show every process on a GPU, its VRAM and its owner");
  ps_->add_flag("--json", json_, "Print the API's JSON");
  leases_ = add_command(app, "leases", "Show the VRAM leases: reserved memory nobody holds yet");
  leases_->add_flag("--json", json_, "Print the API's JSON");
  queue_ =
      add_command(app, "queue", "Show what waits for busy services to go idle, and for how long");
  queue_->add_flag("--json", json_, "Print the API's JSON");
  plan_ = add_command(app, "plan",
                      "What ensure would do now: where it goes, what it stops, or why not");
  plan_->add_option("name", name_, "Service name")->required();
  plan_->add_flag("--json", json_, "Print the API's JSON");

  phase_ =
      add_command(app, "phase", "Ensure every service of a pipeline phase; none evicts another");
  phase_->add_option("number", phase_number_, "Phase number")
      ->required()
      ->check(CLI::NonNegativeNumber);
  phase_->add_option("--timeout", timeout_, "How long to wait, e.g. 90s, 5m")
      ->capture_default_str();
  phase_->add_flag("--json", json_, "Print the API's JSON");
  phase_->add_flag("-q,--quiet", quiet_, "Print no progress while waiting");
}

void ClientCommands::add_plugin_commands(CLI::App& app) {
  plugins_ = add_command(app, "plugins", "List the plugins: category, mode, location, configured");
  plugins_->add_option("--category", category_, "Only this category");
  plugins_->add_flag("--json", json_, "Print the API's JSON");
  plugin_ = app.add_subcommand("plugin", "One plugin's settings");
  plugin_->require_subcommand(1);
  plugin_config_ = add_command(*plugin_, "config", "Show a plugin's config, or set or delete it");
  plugin_config_->add_option("id", name_, "Plugin id (category_name)")->required();
  plugin_config_->add_option("--set", set_file_,
                             "Validate this JSON file against the plugin's schema and save it "
                             "('-': standard input)");
  plugin_config_->add_flag("--delete", delete_, "Forget the saved config");
  plugin_config_->add_flag("--json", json_, "Print the API's JSON");
}

void ClientCommands::add_job_commands(CLI::App& app) {
  CLI::App* jobs = app.add_subcommand("jobs", "Submit, list, show, cancel and watch jobs");
  jobs->require_subcommand(1);
  jobs_submit_ =
      add_command(*jobs, "submit", "Submit a job to a plugin; prints it once it is on disk");
  jobs_submit_->add_option("plugin", name_, "Plugin id (category_name)")->required();
  jobs_submit_->add_option("--input", input_, "The job's input, JSON ('@FILE' reads a file)");
  jobs_list_ = add_command(*jobs, "list", "List jobs, newest first");
  jobs_list_->add_option("--state", state_filter_,
                         "pending, running, completed, failed, cancelled");
  jobs_list_->add_option("--plugin", category_, "Only this plugin's");
  jobs_list_->add_flag("--json", json_, "Print the API's JSON");
  jobs_show_ = add_command(*jobs, "show", "Show one job, its result or error");
  jobs_show_->add_option("id", name_, "Job id")->required();
  jobs_cancel_ = add_command(*jobs, "cancel", "Cancel a pending or running job");
  jobs_cancel_->add_option("id", name_, "Job id")->required();
  jobs_watch_ = add_command(*jobs, "watch", "Follow a job until it ends; exit 0 if it completed");
  jobs_watch_->add_option("id", name_, "Job id")->required();
  jobs_prune_ = add_command(*jobs, "prune",
                            "Delete finished jobs now (default: by the configured retention)");
  jobs_prune_->add_option("--older-than", older_than_, "Those finished longer ago, e.g. 7d");
  jobs_prune_->add_option("--keep", keep_, "Keep only the newest N finished jobs")
      ->check(CLI::Range(0LL, 2147483647LL));
}

int ClientCommands::run() {
  if (status_->parsed()) return status();
  if (ensure_->parsed()) return action("ensure");
  if (stop_->parsed()) return action("stop");
  if (restart_->parsed()) return action("restart");
  if (logs_->parsed()) return logs();
  if (events_->parsed()) return events();
  if (gpus_->parsed()) return call("GET", "/api/v1/resources", kReadTimeout, render_gpus);
  if (ps_->parsed()) return call("GET", "/api/v1/processes", kReadTimeout, render_processes);
  if (leases_->parsed()) {
    return call("GET", "/api/v1/leases", kReadTimeout,
                [](const nlohmann::json& body) { return render_leases(body, unix_ms_now()); });
  }
  if (plan_->parsed()) return plan();
  if (queue_->parsed()) return call("GET", "/api/v1/queue", kReadTimeout, render_queue);
  if (phase_->parsed()) return phase();
  if (plugins_->parsed()) return plugins();
  if (plugin_config_->parsed()) return plugin_config();
  if (jobs_submit_->parsed() || jobs_list_->parsed() || jobs_show_->parsed() ||
      jobs_cancel_->parsed() || jobs_watch_->parsed() || jobs_prune_->parsed()) {
    return jobs();
  }
  return fail("no command given (try --help)");
}

int ClientCommands::plugins() {
  const std::string target =
      "/api/v1/plugins" + (category_.empty() ? "" : "?category=" + category_);
  return call("GET", target, kReadTimeout, [](const nlohmann::json& body) {
    std::vector<std::vector<std::string>> rows;
    for (const auto& p : body.value("plugins", nlohmann::json::array())) {
      rows.push_back({text(p, "id"), text(p, "category"), text(p, "mode"), text(p, "location"),
                      text(p, "service"), p.value("configured", false) ? "yes" : "no",
                      p.value("active", false) ? "yes" : "no", text(p, "title")});
    }
    return render_table(
        {"ID", "CATEGORY", "MODE", "LOCATION", "SERVICE", "CONFIGURED", "ACTIVE", "TITLE"}, rows);
  });
}

int ClientCommands::plugin_config() {
  const std::string target = "/api/v1/plugins/" + name_ + "/config";
  const auto show = [](const nlohmann::json& body) { return body["config"].dump(2) + "\n"; };
  if (delete_ && !set_file_.empty()) return fail("--set and --delete cannot be used together");
  if (delete_) {
    return call("DELETE", target, kReadTimeout,
                [this](const nlohmann::json&) { return "config of " + name_ + " deleted\n"; });
  }
  if (set_file_.empty()) return call("GET", target, kReadTimeout, show);
  std::ifstream file;
  std::istream* in = &std::cin;
  if (set_file_ != "-") {
    file.open(set_file_);
    if (!file) return fail("cannot read " + set_file_);
    in = &file;
  }
  const std::string text_in((std::istreambuf_iterator<char>(*in)), {});
  const auto parsed = nlohmann::json::parse(text_in, nullptr, false);
  if (!parsed.is_object()) return fail(set_file_ + ": not a JSON object");
  return call("PUT", target, kReadTimeout, show, parsed.dump());
}

int ClientCommands::jobs() {
  const auto job_json = [](const nlohmann::json& j) { return j.dump(2) + "\n"; };
  if (jobs_submit_->parsed()) {
    std::string text = input_.empty() ? "{}" : input_;
    if (!text.empty() && text.front() == '@') {
      std::ifstream file(text.substr(1));
      if (!file) return fail("cannot read " + text.substr(1));
      text.assign(std::istreambuf_iterator<char>(file), {});
    }
    const auto input = nlohmann::json::parse(text, nullptr, false);
    if (input.is_discarded()) return fail("--input is not valid JSON");
    return call("POST", "/api/v1/plugins/" + name_ + "/jobs", kReadTimeout, job_json, input.dump());
  }
  if (jobs_list_->parsed()) {
    std::string target = "/api/v1/jobs?limit=100";
    if (!state_filter_.empty()) target += "&state=" + state_filter_;
    if (!category_.empty()) target += "&plugin=" + category_;
    return call("GET", target, kReadTimeout, [](const nlohmann::json& body) {
      std::vector<std::vector<std::string>> rows;
      const long long now = unix_ms_now();
      for (const auto& j : body.value("jobs", nlohmann::json::array())) {
        rows.push_back({text(j, "id"), text(j, "plugin"), text(j, "state"),
                        ago(j.value("created_ms", 0LL), now), text(j, "attempts"),
                        j.value("error", "")});
      }
      return render_table({"ID", "PLUGIN", "STATE", "CREATED", "ATTEMPTS", "ERROR"}, rows);
    });
  }
  if (jobs_show_->parsed()) return call("GET", "/api/v1/jobs/" + name_, kReadTimeout, job_json);
  if (jobs_prune_->parsed()) {
    nlohmann::json params = nlohmann::json::object();
    if (!older_than_.empty()) {
      if (!parse_duration(older_than_)) {
        return fail("bad --older-than '" + older_than_ + "' (use e.g. 12h, 7d)");
      }
      params["older_than"] = older_than_;
    }
    if (keep_ >= 0) params["keep"] = keep_;
    return call(
        "POST", "/api/v1/jobs/prune", kReadTimeout,
        [](const nlohmann::json& body) {
          const long long n = body.value("deleted", 0LL);
          return "deleted " + std::to_string(n) + " finished job" + (n == 1 ? "" : "s") + "\n";
        },
        params.dump());
  }
  if (jobs_cancel_->parsed()) {
    return call("POST", "/api/v1/jobs/" + name_ + "/cancel", kCancelTimeout, job_json);
  }
  // watch: the job's own stream, until it ends; then its final state.
  long long id = 0;
  if (const auto [end, ec] = std::from_chars(name_.data(), name_.data() + name_.size(), id);
      ec != std::errc() || end != name_.data() + name_.size() || id <= 0) {
    return fail("bad job id '" + name_ + "': expected a positive integer");
  }
  auto client = connect();
  if (!client) return fail(client.error().message);
  std::string outcome;
  const auto streamed =
      client->stream("/api/v1/jobs/" + name_ + "/stream", [&](const SseMessage& m) {
        const auto e = nlohmann::json::parse(m.data, nullptr, false);
        if (e.is_discarded()) return true;
        if (m.event == "job") {
          const std::string state = e.value("state", "");
          if (state == "completed" || state == "failed" || state == "cancelled") outcome = state;
          return outcome.empty();
        }
        const auto& d = e["data"];
        std::cout << e.value("type", "");
        if (d.contains("state")) std::cout << " " << d.value("state", "");
        if (d.contains("progress")) std::cout << " " << d["progress"].dump();
        if (d.contains("data"))
          std::cout << " "
                    << (d["data"].is_string() ? d["data"].get<std::string>() : d["data"].dump());
        std::cout << "\n" << std::flush;
        return true;
      });
  if (outcome.empty() && !streamed) return fail(streamed.error().message);
  const int rc = call("GET", "/api/v1/jobs/" + name_, kReadTimeout, job_json);
  return rc != 0 ? rc : (outcome == "completed" ? 0 : 1);
}

int ClientCommands::phase() {
  const auto timeout = parse_duration(timeout_);
  if (!timeout) return fail("bad --timeout '" + timeout_ + "' (use e.g. 90s, 5m)");
  const std::string target = "/api/v1/phases/" + std::to_string(phase_number_) +
                             "/ensure?timeout=" + format_duration(*timeout);
  auto client = connect();
  if (!client) return fail(client.error().message);
  // The phase's members, whose steps are shown; none known (an old daemon): no progress.
  std::vector<std::string> members;
  if (const auto all = client->request("GET", "/api/v1/services", kReadTimeout);
      all && all->status == 200) {
    const auto body = nlohmann::json::parse(all->body, nullptr, false);
    for (const auto& s : body.is_object() ? body.value("services", nlohmann::json::array())
                                          : nlohmann::json::array()) {
      const auto phases = s.value("phases", nlohmann::json::array());
      if (std::find(phases.begin(), phases.end(), phase_number_) != phases.end()) {
        members.push_back(s.value("name", ""));
      }
    }
  }
  Progress progress(*client, members, "", Progress::mode_for(quiet_ || json_ || members.empty()));
  progress_ = &progress;
  const int rc = call("POST", target, *timeout + kReadTimeout, [](const nlohmann::json& body) {
    std::ostringstream out;
    for (const auto& s : body.value("services", nlohmann::json::array())) {
      out << text(s, "name") << " is " << text(s, "state");
      if (s.value("pid", 0LL) > 0) out << " (pid " << s.value("pid", 0LL) << ")";
      if (s.contains("gpu") && s["gpu"].is_number()) out << " on GPU " << s["gpu"];
      out << "\n";
    }
    return out.str();
  });
  progress_ = nullptr;
  return rc;
}

int ClientCommands::plan() {
  bool placeable = false;
  const int rc =
      call("GET", "/api/v1/plan/" + name_, kReadTimeout, [&placeable](const nlohmann::json& p) {
        placeable = p.value("ok", false);
        return p.value("reason", "") + "\n";
      });
  // A service that cannot be placed exits 1, so a script can test for it (--json: the body).
  if (rc != 0 || json_) return rc;
  return placeable ? 0 : 1;
}

int ClientCommands::call(const std::string& method, const std::string& target, Millis wait,
                         const std::function<std::string(const nlohmann::json&)>& render,
                         const std::string& request_body) {
  auto client = connect();
  if (!client) return fail(client.error().message);
  auto reply = client->request(method, target, wait, request_body);
  if (progress_ != nullptr) {
    progress_->finish(reply && reply->status == 200
                          ? nlohmann::json::parse(reply->body, nullptr, false)
                          : nlohmann::json());
  }
  if (!reply) return fail(reply.error().message);
  if (reply->status != 200) return fail_reply(*reply);
  if (json_) {
    std::cout << reply->body;
    return 0;
  }
  const auto body = nlohmann::json::parse(reply->body, nullptr, false);
  if (body.is_discarded()) return fail("the daemon sent a reply that is not JSON");
  std::cout << render(body);
  return 0;
}

Result<HttpClient> ClientCommands::connect() const {
  return HttpClient::create(url_, env_or("GPUVISOR_TOKEN", ""));
}

int ClientCommands::status() {
  const std::string target = name_.empty() ? "/api/v1/services" : "/api/v1/services/" + name_;
  return call("GET", target, kReadTimeout, [this](const nlohmann::json& body) {
    const auto services = name_.empty() ? body.value("services", nlohmann::json::array())
                                        : nlohmann::json::array({body});
    // Remote services cost money while they run: the cost so far gets a column of its own.
    const bool remote = std::any_of(services.begin(), services.end(), [](const auto& s) {
      return s.contains("remote") && s["remote"].is_object();
    });
    std::vector<std::vector<std::string>> rows;
    const long long now = unix_ms_now();
    for (const auto& s : services) {
      const long long pid = s.value("pid", 0LL);
      std::string gpus;
      for (const auto& g : s.value("gpus", nlohmann::json::array())) {
        gpus += (gpus.empty() ? "" : ",") + g.dump();
      }
      std::vector<std::string> row = {text(s, "name"),
                                      text(s, "state"),
                                      text(s, "mode"),
                                      pid > 0 ? std::to_string(pid) : "-",
                                      gpus.empty() ? "-" : gpus,
                                      text(s, "priority"),
                                      text(s, "vram_mb"),
                                      text(s, "restarts"),
                                      ago(s.value("since_ms", 0LL), now)};
      if (remote) {
        const bool has = s.contains("remote") && s["remote"].is_object();
        row.push_back(has ? fmt::format("${:.2f}", s["remote"].value("cost_usd", 0.0)) : "-");
      }
      row.push_back(text(s, "reason"));
      rows.push_back(std::move(row));
    }
    std::vector<std::string> header = {"NAME",     "STATE",   "MODE",     "PID",  "GPU",
                                       "PRIORITY", "VRAM_MB", "RESTARTS", "SINCE"};
    if (remote) header.push_back("COST");
    header.push_back("REASON");
    return render_table(header, rows);
  });
}

int ClientCommands::action(const std::string& verb) {
  const auto timeout = parse_duration(timeout_);
  if (!timeout) return fail("bad --timeout '" + timeout_ + "' (use e.g. 90s, 5m)");
  std::string target = "/api/v1/services/" + name_ + "/" + verb;
  Millis wait = kReadTimeout;
  if (verb == "stop") {
    if (force_) target += "?force=true";
    wait = Millis(24 * 3600 * 1000);  // a stop ends within the service's stop_grace
  } else {
    target += "?timeout=" + format_duration(*timeout);
    wait = *timeout + kReadTimeout;
  }
  const long long started = unix_ms_now();
  auto client = connect();
  if (!client) return fail(client.error().message);
  Progress progress(*client, {name_}, name_, Progress::mode_for(quiet_ || json_));
  progress_ = &progress;
  const int rc = call("POST", target, wait, [started](const nlohmann::json& s) {
    const double seconds = static_cast<double>(unix_ms_now() - started) / 1000.0;
    std::ostringstream out;
    out << text(s, "name") << " is " << text(s, "state");
    if (s.value("pid", 0LL) > 0) out << " (pid " << s.value("pid", 0LL) << ")";
    out << " after " << std::fixed << std::setprecision(2) << seconds << "s\n";
    return out.str();
  });
  progress_ = nullptr;
  return rc;
}

int ClientCommands::logs() {
  auto client = connect();
  if (!client) return fail(client.error().message);
  const std::string target = "/api/v1/services/" + name_ + "/logs?n=" + std::to_string(lines_);
  if (!follow_) {
    return call("GET", target, kReadTimeout, [](const nlohmann::json& body) {
      std::string out;
      for (const auto& line : body.value("lines", nlohmann::json::array())) {
        out += line.value("text", "") + "\n";
      }
      return out;
    });
  }
  auto done = client->stream(target + "&follow=true", [this](const SseMessage& m) {
    if (json_) {
      std::cout << nlohmann::json{{"seq", m.id}, {"text", m.data}}.dump() << std::endl;
    } else {
      std::cout << m.data << std::endl;
    }
    return true;
  });
  if (!done) {
    if (!done.error().context.empty()) {
      HttpReply reply{404, done.error().context.front()};
      return fail_reply(reply);
    }
    return fail(done.error().message);
  }
  return 0;
}

int ClientCommands::events() {
  auto client = connect();
  if (!client) return fail(client.error().message);
  auto done = client->stream("/api/v1/events", [this](const SseMessage& m) {
    if (json_) {
      std::cout << m.data << std::endl;
      return true;
    }
    const auto e = nlohmann::json::parse(m.data, nullptr, false);
    if (e.is_discarded()) return true;
    std::cout << format_event(e) << std::endl;
    return true;
  });
  if (!done) return fail(done.error().message);
  return 0;
}

}  // namespace gpuvisor
