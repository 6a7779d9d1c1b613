// A service's entry: its plain settings, health check and proxy, and the checks across services.
#include <algorithm>
#include <limits>

#include "config/loader.h"

namespace gpuvisor::config_detail {

void Loader::read_services(const Field& f, Config& config) {
  if (!expect_map(f, "a map of service name to settings")) return;
  auto service = [&](const Field& entry) {
    service_names_.push_back(entry.key);
    ServiceSpec spec;
    if (read_service(entry, spec)) config.services.push_back(std::move(spec));
  };
  visit_map(f.value, "", {}, service, "service name");
  check_models(f, config);
}

// A /v1 model name routes to one service: a name listed twice is an error at the second.
void Loader::check_models(const Field& f, const Config& config) {
  std::map<std::string, std::string> owner;
  for (const auto& s : config.services) {
    for (const auto& model : s.proxy.models) {
      const auto taken = owner.emplace(model, s.name);
      if (taken.second) continue;
      const YAML::Node node = f.value[s.name];
      const YAML::Mark mark = node && node["proxy"] ? node["proxy"].Mark() : f.value.Mark();
      report(mark, "service " + quote(s.name) + ": model " + quote(model) +
                       " is already served by " + quote(taken.first->second) +
                       "; a model names one service");
    }
  }
}

bool Loader::read_service(const Field& entry, ServiceSpec& spec) {
  spec.name = entry.key;
  spec.origin = origin_ + ":" + position(entry.key_node.Mark());
  const size_t problems_before = problems_.size();
  if (!valid_service_name(spec.name)) {
    report(entry.key_node.Mark(), "invalid service name " + quote(spec.name) +
                                      " (use 1 to 63 letters, digits, '_', '.' or '-', "
                                      "starting with a letter or digit)");
  }
  const std::string service = "service " + quote(spec.name);
  if (!entry.value.IsNull() && !entry.value.IsMap()) {
    return bad_value(entry, ": a service must be a map of settings, got " + describe(entry.value));
  }
  std::optional<Field> command;
  const Handlers handlers = {
      {"runtime", [&](const Field& g) { read_runtime(g, spec.runtime); }},
      {"description", text(spec.description)},
      {"command", [&](const Field& g) { command = g; }},
      {"shell", flag(spec.shell)},
      {"env", [&](const Field& g) { read_env(g, spec.env); }},
      {"cwd", checked(spec.cwd, is_absolute, kAbsolutePath)},
      {"vram_mb", number(spec.vram_mb, 0)},
      {"gpu", [&](const Field& g) { read_gpus(g, spec.pinned_gpus); }},
      {"gpus", number(spec.gpu_count, 1, 64)},
      {"priority", number(spec.priority, std::numeric_limits<int>::min())},
      {"phases", [&](const Field& g) { read_phases(g, spec.phases); }},
      {"autostart", flag(spec.autostart)},
      {"health", [&](const Field& g) { read_health(g, service, spec.health); }},
      {"startup_timeout", duration(spec.startup_timeout, true)},
      {"stop_grace", duration(spec.stop_grace, false)},
      {"restart", [&](const Field& g) { read_restart(g, spec.restart); }},
      {"restart_backoff", duration(spec.restart_backoff, false)},
      {"restart_backoff_max", duration(spec.restart_backoff_max, false)},
      {"restart_limit", number(spec.restart_limit, 0)},
      {"restart_reset_after", duration(spec.restart_reset_after, false)},
      {"pid_file", checked(spec.pid_file, is_absolute, kAbsolutePath)},
      {"conda_env", checked(spec.conda_env, valid_conda_env, kCondaEnv)},
      {"docker", [&](const Field& g) { read_docker(g, service, spec.docker); }},
      {"external", [&](const Field& g) { read_external(g, service, spec); }},
      {"sleep", [&](const Field& g) { read_hook(g, service, spec.sleep); }},
      {"wake", [&](const Field& g) { read_hook(g, service, spec.wake); }},
      {"remote", [&](const Field& g) { read_remote(g, service, spec.remote); }},
      {"proxy", [&](const Field& g) { read_proxy(g, service, spec.proxy); }},
      {"idle_ttl", duration(spec.idle_ttl, false)},
  };
  if (entry.value.IsMap()) visit_map(entry.value, "in " + service, handlers);
  if (command) {
    read_command(*command, spec);
  } else if (spec.runtime == RuntimeKind::kProcess) {
    report(entry.key_node.Mark(), service + ": 'command' is required");
  }
  if ((spec.runtime == RuntimeKind::kExternal || spec.runtime == RuntimeKind::kRemote) && command) {
    report(key_mark(entry, "command"),
           service +
               ": an external service has no 'command': gpuvisor does not start it "
               "(use 'wake' to load it)");
  }
  check_gpus(entry, service, spec);
  check_runtime_fields(entry, service, spec);
  return problems_.size() == problems_before;
}

// Runs once the service's map has been read: `shell` may come after `command`.
void Loader::read_command(const Field& f, ServiceSpec& spec) {
  if (f.value.IsScalar() && !spec.shell) {
    bad_value(f,
              " is a single string: write it as a list ([program, arg, ...]), or set "
              "'shell: true' to run it with /bin/sh -c");
  } else if (f.value.IsScalar() && f.value.Scalar().empty()) {
    bad_value(f, " must not be empty");
  } else if (f.value.IsScalar()) {
    spec.command = {f.value.Scalar()};
  } else if (spec.shell && f.value.IsSequence()) {
    bad_value(f, " must be a single string for /bin/sh -c when 'shell: true', got a list");
  } else {
    read_argv(f, spec.command);
  }
}

void Loader::read_runtime(const Field& f, RuntimeKind& out) {
  std::string text;
  if (!read_string(f, text)) return;
  if (text == "process") {
    out = RuntimeKind::kProcess;
  } else if (text == "docker") {
    out = RuntimeKind::kDocker;
  } else if (text == "external") {
    out = RuntimeKind::kExternal;
  } else if (text == "remote") {
    out = RuntimeKind::kRemote;
  } else if (text == "kubernetes") {
    report(value_mark(f), "runtime " + quote(text) +
                              " is declared but not supported yet (supported: process, docker, "
                              "external, remote)");
  } else {
    report(value_mark(f),
           "unknown runtime " + quote(text) + " (valid: process, docker, external, remote)");
  }
}

void Loader::read_restart(const Field& f, RestartPolicy& out) {
  // YAML 1.1 reads a plain `no` as false, but yaml-cpp hands over the scalar's text, so the
  // policy is matched as text.
  std::string text;
  if (!read_string(f, text)) return;
  if (text == "no") {
    out = RestartPolicy::kNo;
  } else if (text == "on-failure") {
    out = RestartPolicy::kOnFailure;
  } else if (text == "always") {
    out = RestartPolicy::kAlways;
  } else {
    report(value_mark(f),
           "unknown restart policy " + quote(text) + " (valid: no, on-failure, always)");
  }
}

void Loader::read_env(const Field& f, std::map<std::string, std::string>& out) {
  if (!expect_map(f, "a map of NAME: value")) return;
  auto variable = [&](const Field& g) {
    if (!valid_env_name(g.key)) {
      report(g.key_node.Mark(), "invalid env name " + quote(g.key) +
                                    " (use letters, digits and '_', not starting with a digit)");
    } else if (!g.value.IsScalar()) {
      bad_value(g, " must be a string, got " + describe(g.value) + " (\"\" for an empty value)");
    } else {
      out[g.key] = g.value.Scalar();  // numbers and booleans keep the text the user wrote
    }
  };
  visit_map(f.value, "", {}, variable);
}

// `gpu: 1` or `gpu: [0, 1]`: the GPUs it may run on, each listed once.
void Loader::read_gpus(const Field& f, std::vector<unsigned>& out) {
  if (f.value.IsScalar()) {
    unsigned index = 0;
    if (read_int(f, index, 0, 63)) out = {index};
    return;
  }
  if (!f.value.IsSequence() || f.value.size() == 0) {
    bad_value(
        f, " must be a GPU index or a list of them (e.g. 0 or [0, 1]), got " + describe(f.value));
    return;
  }
  for (const auto& item : f.value) {
    unsigned index = 0;
    if (!read_int(Field{f.key, f.key_node, item}, index, 0, 63)) continue;
    if (std::find(out.begin(), out.end(), index) != out.end()) {
      report(item.Mark(), "GPU " + std::to_string(index) + " is listed twice in 'gpu'");
      continue;
    }
    out.push_back(index);
  }
}

// A pinned list names the GPUs to choose from: by default it spans them all, and never more.
void Loader::check_gpus(const Field& entry, const std::string& service, ServiceSpec& spec) {
  const bool has_count = entry.value.IsMap() && entry.value["gpus"];
  if (!has_count && !spec.pinned_gpus.empty()) {
    spec.gpu_count = static_cast<unsigned>(spec.pinned_gpus.size());
  }
  if (!spec.pinned_gpus.empty() && spec.gpu_count > spec.pinned_gpus.size()) {
    report(key_mark(entry, "gpus"),
           service + ": 'gpus: " + std::to_string(spec.gpu_count) + "' but 'gpu' lists only " +
               std::to_string(spec.pinned_gpus.size()) + " GPU" +
               (spec.pinned_gpus.size() == 1 ? "" : "s") + " to choose from");
  }
  const bool set_given = spec.pinned_gpus.size() == spec.gpu_count;
  if (spec.gpu_count > 1 && spec.vram_mb <= 0 && !set_given) {
    report(key_mark(entry, "gpus"), service + ": 'gpus: " + std::to_string(spec.gpu_count) +
                                        "' needs vram_mb (per GPU) to place it");
  }
}

void Loader::read_phases(const Field& f, std::vector<int>& out) {
  if (!f.value.IsSequence()) {
    bad_value(f, " must be a list of integers >= 0 (e.g. [4]), got " + describe(f.value));
    return;
  }
  for (const auto& item : f.value) {
    int phase = 0;
    if (read_int(Field{f.key, f.key_node, item}, phase, 0)) out.push_back(phase);
  }
}

void Loader::read_health(const Field& f, const std::string& service, HealthSpec& health) {
  if (!expect_map(f, "a map")) return;
  const Handlers handlers = {
      {"http", checked(health.http, is_http_url, "a URL starting with http://")},
      {"tcp", checked(health.tcp, is_host_port, kHostPort)},
      {"exec", [&](const Field& g) { read_argv(g, health.exec); }},
      {"interval", duration(health.interval, true)},
      {"timeout", duration(health.timeout, true)},
      {"failure_threshold", number(health.failure_threshold, 1)},
      {"startup_poll_cap", duration(health.startup_poll_cap, true)},
  };
  visit_map(f.value, "in 'health' of " + service, handlers);
  std::string first_check;  // exactly one of http / tcp / exec
  for (auto it = f.value.begin(); it != f.value.end(); ++it) {
    const std::string key = it->first.IsScalar() ? it->first.Scalar() : "";
    if (key != "http" && key != "tcp" && key != "exec") continue;
    if (first_check.empty()) first_check = key;
    if (key == first_check) continue;  // a repeat is reported as a duplicate key
    report(it->first.Mark(), "'health' has both " + quote(first_check) + " and " + quote(key) +
                                 "; set exactly one of 'http', 'tcp', 'exec'");
  }
}

// `proxy: http://127.0.0.1:8000` for the URL alone, or a map with the rest.
void Loader::read_proxy(const Field& f, const std::string& service, ProxySpec& proxy) {
  if (f.value.IsScalar()) {
    read_checked(f, proxy.url, is_http_url, "a URL starting with http://");
    return;
  }
  if (!expect_map(f, "a URL (http://HOST:PORT) or a map")) return;
  const Handlers handlers = {
      {"url", checked(proxy.url, is_http_url, "a URL starting with http://")},
      {"models", [&](const Field& g) { read_argv(g, proxy.models); }},
      {"wait", duration(proxy.wait, true)},
      {"concurrency", number(proxy.concurrency, 0, 100'000)},
      {"listen", checked(proxy.listen, is_listen_port, kListenPort)},
  };
  visit_map(f.value, "in 'proxy' of " + service, handlers);
  if (proxy.url.empty()) report(f.value.Mark(), service + ": 'proxy' needs 'url'");
}

}  // namespace gpuvisor::config_detail
