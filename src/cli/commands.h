// The client commands (status, ensure, stop, ..., plugins): each one HTTP call to the
// daemon, rendered as a table or, with --json, as the API's own JSON.
#pragma once

#include <CLI/CLI.hpp>
#include <functional>
#include <nlohmann/json.hpp>
#include <string>

#include "cli/http_client.h"
#include "core/duration.h"

namespace gpuvisor {

class Progress;

class ClientCommands {
 public:
  // Registers the subcommands and their options on app.
  explicit ClientCommands(CLI::App& app);
  // Runs whichever subcommand was parsed. 0 on success, 1 when the operation failed or the
  // daemon could not be reached.
  int run();

 private:
  // The subcommands by group, in the order --help lists them: one service's (status .. logs)
  // and the event stream; the GPUs and placement; the plugins; the jobs.
  void add_service_commands(CLI::App& app);
  void add_gpu_commands(CLI::App& app);
  void add_plugin_commands(CLI::App& app);
  void add_job_commands(CLI::App& app);
  // A subcommand of parent with --url.
  CLI::App* add_command(CLI::App& parent, const char* name, const char* help);
  // A client for --url (or GPUVISOR_URL) that sends GPUVISOR_TOKEN when it is set.
  Result<HttpClient> connect() const;
  int status();
  int action(const std::string& verb);
  int logs();
  int events();
  int plan();
  int phase();
  int plugins();
  int plugin_config();
  int jobs();
  // One request: errors become one line (exit 1); --json prints the body as is, otherwise
  // render(body).
  int call(const std::string& method, const std::string& target, Millis wait,
           const std::function<std::string(const nlohmann::json&)>& render,
           const std::string& request_body = "");

  CLI::App* status_ = nullptr;
  CLI::App* ensure_ = nullptr;
  CLI::App* stop_ = nullptr;
  CLI::App* restart_ = nullptr;
  CLI::App* logs_ = nullptr;
  CLI::App* events_ = nullptr;
  CLI::App* gpus_ = nullptr;
  CLI::App* ps_ = nullptr;
  CLI::App* leases_ = nullptr;
  CLI::App* plan_ = nullptr;
  CLI::App* queue_ = nullptr;
  CLI::App* phase_ = nullptr;
  CLI::App* plugins_ = nullptr;
  CLI::App* plugin_ = nullptr;
  CLI::App* plugin_config_ = nullptr;
  CLI::App* jobs_submit_ = nullptr;
  CLI::App* jobs_list_ = nullptr;
  CLI::App* jobs_show_ = nullptr;
  CLI::App* jobs_cancel_ = nullptr;
  CLI::App* jobs_watch_ = nullptr;
  CLI::App* jobs_prune_ = nullptr;
  std::string older_than_;
  long long keep_ = -1;  // -1: not given
  std::string input_;
  std::string state_filter_;
  std::string category_;
  std::string set_file_;
  bool delete_ = false;
  int phase_number_ = 0;

  std::string url_;
  bool json_ = false;
  std::string name_;
  std::string timeout_ = "5m";
  bool force_ = false;
  bool quiet_ = false;
  // Shown while a waiting command's request is out; finished before anything is printed.
  Progress* progress_ = nullptr;
  bool follow_ = false;
  int lines_ = 100;
};

}  // namespace gpuvisor
