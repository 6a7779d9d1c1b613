// What belongs to one runtime: the docker, external and remote sections, and the checks that
// each setting is used by the runtime the service has.
#include <cmath>
#include <cstdlib>

#include "config/loader.h"
#include "core/url.h"

namespace gpuvisor::config_detail {

YAML::Mark Loader::key_mark(const Field& entry, const char* key) {
  return entry.value.IsMap() && entry.value[key] ? entry.value[key].Mark() : entry.key_node.Mark();
}

// Settings that only make sense for one runtime, and what each runtime cannot do without.
void Loader::check_runtime_fields(const Field& entry, const std::string& service,
                                  const ServiceSpec& spec) {
  const auto key_mark = [&](const char* key) { return Loader::key_mark(entry, key); };
  const bool has_external = entry.value.IsMap() && entry.value["external"];
  if (spec.runtime == RuntimeKind::kExternal) {
    if (spec.external.pid_file.empty() && spec.external.port == 0 && spec.health.empty()) {
      report(key_mark("external"),
             service +
                 ": an external service needs a way to be found: external.port, "
                 "external.pid_file or a health check");
    }
    for (const char* key : {"pid_file", "conda_env", "shell", "cwd", "env"}) {
      if (entry.value.IsMap() && entry.value[key]) {
        report(key_mark(key), service + ": '" + key +
                                  "' is not used by an external service (for the server's "
                                  "PID file, use external.pid_file)");
      }
    }
  } else if (has_external) {
    report(key_mark("external"), service + ": 'external' needs 'runtime: external'");
  }
  const bool has_remote = entry.value.IsMap() && entry.value["remote"];
  if (spec.runtime == RuntimeKind::kRemote) {
    const auto& r = spec.remote;
    if (r.provision.empty() || r.status.empty() || r.terminate.empty()) {
      report(key_mark("remote"), service +
                                     ": a remote service needs remote.provision, remote.status "
                                     "and remote.terminate (commands)");
    }
    if (spec.vram_mb > 0 || !spec.pinned_gpus.empty()) {
      report(key_mark(spec.vram_mb > 0 ? "vram_mb" : "gpu"),
             service +
                 ": a remote service uses no local GPU; describe it with remote.gpu_type "
                 "and remote.gpu_count");
    }
  } else if (has_remote) {
    report(key_mark("remote"), service + ": 'remote' needs 'runtime: remote'");
  }
  if (spec.runtime == RuntimeKind::kDocker) {
    if (spec.docker.container.empty() && spec.docker.image.empty()) {
      report(key_mark("docker"), service +
                                     ": a docker service needs docker.container (an existing "
                                     "container) or docker.image (gpuvisor creates one)");
    }
    if (spec.docker.image.empty() && !spec.command.empty()) {
      report(key_mark("command"), service +
                                      ": 'command' needs docker.image: an existing container "
                                      "keeps the command it was created with");
    }
    if (!spec.pid_file.empty()) {
      report(key_mark("pid_file"), service + ": 'pid_file' is for process services");
    }
    if (!spec.conda_env.empty()) {
      report(key_mark("conda_env"), service + ": 'conda_env' is for process services");
    }
  } else if (entry.value.IsMap() && entry.value["docker"]) {
    report(key_mark("docker"), service + ": 'docker' needs 'runtime: docker'");
  }
}

void Loader::read_docker(const Field& f, const std::string& service, DockerSpec& docker) {
  if (!expect_map(f, "a map")) return;
  const Handlers handlers = {
      {"container", checked(docker.container, valid_container_name, kContainerName)},
      {"image", checked(docker.image, valid_image, "an image reference such as repo/name:tag")},
      {"mounts", [&](const Field& g) { read_list(g, docker.mounts, valid_mount, kMount); }},
      {"ports", [&](const Field& g) { read_list(g, docker.ports, valid_port, kPort); }},
      {"network",
       checked(docker.network, valid_container_name, "a network name (host, none, bridge, ...)")},
      {"init", flag(docker.init)},
      {"gpus",
       [&](const Field& g) {
         std::string text;
         if (!read_string(g, text)) return;
         if (text == "placed") {
           docker.gpus = DockerSpec::Gpus::kPlaced;
         } else if (text == "all") {
           docker.gpus = DockerSpec::Gpus::kAll;
         } else if (text == "none") {
           docker.gpus = DockerSpec::Gpus::kNone;
         } else {
           report(value_mark(g),
                  "unknown docker.gpus " + quote(text) + " (valid: placed, all, none)");
         }
       }},
  };
  visit_map(f.value, "in 'docker' of " + service, handlers);
}

void Loader::read_external(const Field& f, const std::string& service, ServiceSpec& spec) {
  if (!expect_map(f, "a map")) return;
  ExternalSpec& external = spec.external;
  // external.sleep and external.wake came first; they still work, as the service's own hooks.
  const Handlers handlers = {
      {"pid_file", checked(external.pid_file, is_absolute, kAbsolutePath)},
      {"port", number(external.port, 1, 65535)},
      {"sleep", [&](const Field& g) { read_hook(g, service, spec.sleep); }},
      {"wake", [&](const Field& g) { read_hook(g, service, spec.wake); }},
  };
  visit_map(f.value, "in 'external' of " + service, handlers);
}

void Loader::read_remote(const Field& f, const std::string& service, RemoteSpec& remote) {
  if (!expect_map(f, "a map")) return;
  const auto money = [this](double& out) {
    return [this, &out](const Field& g) {
      const std::string text = g.value.IsScalar() ? g.value.Scalar() : "";
      char* end = nullptr;
      const double v = std::strtod(text.c_str(), &end);
      if (text.empty() || end != text.c_str() + text.size() || !std::isfinite(v) || v < 0) {
        bad_value(g, " must be an amount in USD >= 0 (e.g. 2.49), got " + describe(g.value));
        return;
      }
      out = v;
    };
  };
  const Handlers handlers = {
      {"kind", checked(remote.kind, is_remote_kind,
                       "one of remote_ssh, cloud_vm, cloud_container, cloud_serverless, "
                       "cloud_gpu, cloud_cpu")},
      {"provider", text(remote.provider)},
      {"region", text(remote.region)},
      {"gpu_type", text(remote.gpu_type)},
      {"gpu_count", number(remote.gpu_count, 0, 64)},
      {"cost_per_hour", money(remote.cost_per_hour)},
      {"budget", money(remote.budget)},
      {"provision", [&](const Field& g) { read_argv(g, remote.provision); }},
      {"status", [&](const Field& g) { read_argv(g, remote.status); }},
      {"terminate", [&](const Field& g) { read_argv(g, remote.terminate); }},
      {"command_timeout", duration(remote.command_timeout, true)},
      {"status_interval", duration(remote.status_interval, true)},
      {"idle_timeout", duration(remote.idle_timeout, false)},
  };
  visit_map(f.value, "in 'remote' of " + service, handlers);
}

void Loader::read_hook(const Field& f, const std::string& service, HookSpec& hook) {
  if (!hook.empty()) {  // read already, as the service's own or as external's
    report(f.key_node.Mark(), service + ": 'external." + f.key + "' and '" + f.key +
                                  "' are the same hook; keep one (the service's '" + f.key +
                                  "', which every runtime has)");
    return;
  }
  if (!expect_map(f, "a map with 'http' or 'exec'")) return;
  const Handlers handlers = {
      {"http", checked(hook.http, is_http_url, "a URL starting with http://")},
      {"method", checked(hook.method, is_http_method, "GET, POST, PUT, PATCH or DELETE")},
      {"body", text(hook.body)},
      {"exec", [&](const Field& g) { read_argv(g, hook.exec); }},
      {"timeout", duration(hook.timeout, true)},
  };
  visit_map(f.value, "in '" + f.key + "' of " + service, handlers);
  const bool http = static_cast<bool>(f.value["http"]), exec = static_cast<bool>(f.value["exec"]);
  if (http == exec) {
    report(f.key_node.Mark(), quote(f.key) + " of " + service +
                                  (http ? " has both 'http' and 'exec'; set one"
                                        : " needs 'http' (a URL) or 'exec' (a command)"));
  }
}

}  // namespace gpuvisor::config_detail
