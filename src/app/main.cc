// gpuvisor: one binary, the daemon (`serve`) and the client commands that talk to it.
#include <CLI/CLI.hpp>

#include "app/check.h"
#include "app/serve.h"
#include "cli/commands.h"

int main(int argc, char** argv) {
  CLI::App app{"gpuvisor: keeps GPU services running when needed and out of VRAM when not"};
  app.require_subcommand(1);
  app.set_version_flag("--version", "gpuvisor 0.1.0");

  gpuvisor::ServeOptions serve_options;
  CLI::App* serve = app.add_subcommand("serve", "Run the daemon");
  serve->add_option("-c,--config", serve_options.config_path,
                    "YAML config file (default: the embedded demo)");
  serve->add_option("--listen", serve_options.listen, "HOST:PORT (default 127.0.0.1:7733)");
  serve->add_option("--state-dir", serve_options.state_dir,
                    "Where records and logs live (default ~/.local/state/gpuvisor)");
  serve->add_option("--log-level", serve_options.log_level, "trace|debug|info|warn|error")
      ->check(CLI::IsMember({"trace", "debug", "info", "warn", "error"}));
  serve->add_flag("--no-cgroups", serve_options.no_cgroups,
                  "Track process trees without cgroups (descendants and session members)");

  std::string check_path;
  CLI::App* check = app.add_subcommand(
      "check", "Validate a config and its plugins, starting nothing; print every error");
  check->add_option("-c,--config", check_path, "YAML config file (default: the embedded demo)");

  gpuvisor::ClientCommands client(app);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    const int code = app.exit(e);
    return code == 0 ? 0 : 2;
  }
  if (serve->parsed()) return gpuvisor::run_serve(serve_options);
  if (check->parsed()) return gpuvisor::run_check(check_path);
  return client.run();
}
