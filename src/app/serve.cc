#include "app/serve.h"

#include <fcntl.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>
#include <sys/file.h>
#include <unistd.h>

#include <algorithm>
#include <boost/asio/io_context.hpp>
#include <boost/asio/signal_set.hpp>
#include <chrono>
#include <csignal>
#include <cstdlib>
#include <iostream>
#include <memory>
#include <optional>
#include <vector>

#include "api/http_server.h"
#include "api/routes.h"
#include "app/backends.h"
#include "app/check.h"
#include "app/embedded_config.h"
#include "app/gpu_watch.h"
#include "app/sd_notify.h"
#include "config/config_loader.h"
#include "core/asio_clock.h"
#include "core/url.h"
#include "events/event_bus.h"
#include "gpu/inventory.h"
#include "jobs/job_queue.h"
#include "jobs/job_store.h"
#include "plugins/registry.h"
#include "resources/outside_workers.h"
#include "resources/ownership.h"
#include "runtime/cgroup_parent.h"
#include "runtime/child_process.h"
#include "runtime/docker_client.h"
#include "supervisor/probe.h"
#include "supervisor/state_store.h"
#include "supervisor/supervisor.h"

namespace gpuvisor {

namespace {

std::string default_state_dir() {
  if (const char* env = std::getenv("GPUVISOR_STATE_DIR"); env != nullptr && *env != '\0') {
    return env;
  }
  if (const char* xdg = std::getenv("XDG_STATE_HOME"); xdg != nullptr && *xdg != '\0') {
    return std::string(xdg) + "/gpuvisor";
  }
  if (const char* home = std::getenv("HOME"); home != nullptr && *home != '\0') {
    return std::string(home) + "/.local/state/gpuvisor";
  }
  return "/var/lib/gpuvisor";
}

bool is_loopback(const std::string& host) {
  return host == "localhost" || host == "::1" || host.rfind("127.", 0) == 0;
}

// Two daemons on one state directory would both adopt the same services.
int lock_state_dir(const std::string& dir) {
  const std::string path = dir + "/daemon.lock";
  const int fd = open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (fd < 0 || flock(fd, LOCK_EX | LOCK_NB) != 0) {
    if (fd >= 0) close(fd);
    return -1;
  }
  const std::string pid = std::to_string(getpid()) + "\n";
  if (ftruncate(fd, 0) == 0) {
    const ssize_t ignored = write(fd, pid.data(), pid.size());
    (void)ignored;  // the PID in the lock file is a courtesy for people; the lock is the flock
  }
  return fd;
}

// Daemons killed with SIGKILL (on this state directory or any other) leave empty cgroups behind.
void remove_cgroup_leftovers() {
  // Old enough that a daemon of an earlier version, which holds no lock on its directory, has
  // long since started what it runs there.
  constexpr std::chrono::minutes kMinAge{10};
  const auto root = CgroupParent::root();
  if (!root) return;
  const auto removed = CgroupParent::remove_leftovers(*root, kMinAge);
  if (!removed.empty()) {
    spdlog::info("removed {} empty cgroups left by daemons that were killed", removed.size());
  }
}

// The engine's socket: the config, else DOCKER_HOST, else the usual path. A bad value matters
// only where a service runs in Docker.
Result<std::string> docker_socket_for(const Config& config) {
  std::string host = config.daemon.docker_host;
  const char* where = "daemon.docker_host";
  if (host.empty()) {
    const char* env = std::getenv("DOCKER_HOST");
    host = env != nullptr && *env != '\0' ? env : "unix:///var/run/docker.sock";
    where = "DOCKER_HOST";
  }
  auto socket = DockerClient::socket_from(host);
  if (socket) return socket;
  const bool needed = std::any_of(config.services.begin(), config.services.end(),
                                  [](const auto& s) { return s.runtime == RuntimeKind::kDocker; });
  if (!needed) return std::string("/var/run/docker.sock");
  return make_error(ErrorCode::kBadRequest, std::string(where) + ": " + socket.error().message);
}

void set_up_logging(const std::string& level) {
  auto logger = spdlog::stderr_color_mt("gpuvisor");
  spdlog::set_default_logger(logger);
  spdlog::set_pattern("%Y-%m-%d %H:%M:%S.%e %^%l%$ %v");
  spdlog::set_level(spdlog::level::from_str(level));
}

// The config file (or the embedded demo), with the command line's overrides applied.
Result<Config> load_config(const ServeOptions& options) {
  auto loaded = options.config_path.empty() ? load_config_string(kEmbeddedConfig, "<embedded demo>")
                                            : load_config_file(options.config_path);
  if (!loaded) return loaded;
  Config& config = *loaded;
  if (!options.listen.empty()) config.daemon.listen = options.listen;
  if (!options.state_dir.empty()) config.daemon.state_dir = options.state_dir;
  if (config.daemon.state_dir.empty()) config.daemon.state_dir = default_state_dir();
  if (options.no_cgroups) config.daemon.use_cgroups = false;
  return loaded;
}

// The daemon's cgroup, when it has one; without, it says once what it does instead.
std::optional<CgroupParent> claim_cgroups(const Config& config, const std::string& state_dir) {
  std::optional<CgroupParent> cgroups;
  if (config.daemon.use_cgroups) {
    auto parent = CgroupParent::claim(state_dir);
    if (parent) {
      cgroups = std::move(*parent);
      remove_cgroup_leftovers();
    } else {
      spdlog::warn(
          "cgroups unavailable ({}); tracking descendants and session members through "
          "/proc instead, so a descendant that calls setsid after its parent exited may "
          "escape a stop",
          parent.error().message);
    }
  }
  return cgroups;
}

Result<PluginRegistry> load_plugins(const Config& config, const std::string& state_dir) {
  std::vector<std::string> service_names;
  for (const auto& s : config.services) service_names.push_back(s.name);
  auto plugins =
      PluginRegistry::load(plugin_sources(config, service_names, state_dir + "/plugins"));
  if (!plugins) return plugins;
  // A saved config that cannot be read is said once, by file name, now rather than at the first
  // job; the API answers the same error until the config is set again or deleted.
  for (const auto* p : plugins->list({})) {
    if (!plugins->configured(p->id)) continue;
    if (auto saved = plugins->config(p->id); !saved) {
      spdlog::warn("plugin config: {}", saved.error().message);
    }
  }
  return plugins;
}

// What serve_api needs from the daemon built before it. serve_api runs inside the scope that
// owns these, so everything is destroyed in the reverse of the order it was built in.
struct DaemonParts {
  const Config& config;
  const std::string& state_dir;
  const std::string& cgroup_parent;  // empty: no cgroups
  int lock_fd;
  IoThreads& threads;
  boost::asio::io_context& io;
  Clock& clock;
  EventBus& events;
  Supervisor& supervisor;
  GpuInventory& gpus;
  WorkerRegistry& workers;
  OwnershipTracker& owners;
  OutsideWorkers& outside;
  Leases& leases;
  PluginRegistry& plugins;
  JobStore& job_store;
};

// Each service's own port, bound before anything starts: one that is taken ends the daemon
// here, naming the service that wanted it.
bool bind_service_ports(const DaemonParts& d, Proxy& proxy,
                        std::vector<std::unique_ptr<HttpServer>>& ports) {
  for (const auto& s : d.config.services) {
    if (s.proxy.listen.empty()) continue;
    const auto at = parse_host_port(s.proxy.listen);
    auto port = std::make_unique<HttpServer>(
        d.io.get_executor(), [&proxy, &s](Incoming& in) { return proxy.handle(in, &s); },
        &d.threads);
    if (const auto bound = port->listen(at->host, at->port); !bound) {
      std::cerr << "service '" << s.name << "' (proxy.listen): " << bound.error().message << "\n";
      return false;
    }
    spdlog::info("service {}: its own port {} (proxy.listen) forwards to {}", s.name,
                 s.proxy.listen, s.proxy.url);
    ports.push_back(std::move(port));
  }
  return true;
}

// The first SIGINT or SIGTERM stops the daemon in order; a second one stops it now.
void stop_on_signal(boost::asio::signal_set& signals, const DaemonParts& d, HttpServer& server,
                    std::vector<std::unique_ptr<HttpServer>>& ports, JobQueue& jobs,
                    SdNotifier& notifier) {
  signals.async_wait([&](const boost::system::error_code& ec, int sig) {
    if (ec) return;
    spdlog::info("received signal {}: shutting down{}", sig,
                 d.config.daemon.stop_services_on_exit ? " and stopping services" : "");
    notifier.stopping();
    server.close();
    for (auto& port : ports) port->close();
    // Workers first (their jobs may use the services), then the services.
    jobs.shutdown(Millis(5000), [&d] {
      d.supervisor.shutdown(d.config.daemon.stop_services_on_exit, [&d] { d.io.stop(); });
    });
    // A second signal while services stop means "now": leave them to the next daemon.
    signals.async_wait([&d](const boost::system::error_code& again, int) {
      if (!again) d.io.stop();
    });
  });
}

// SIGHUP (the unit's ExecReload) must not end the daemon, as its default action would, with a
// status systemd counts as clean, so not restarted. Until a live reload exists it says so.
void ignore_hangup(boost::asio::signal_set& hangup) {
  hangup.async_wait([&hangup](const boost::system::error_code& ec, int) {
    if (ec) return;
    spdlog::warn("SIGHUP: this daemon cannot reload its config yet; restart it to apply changes");
    ignore_hangup(hangup);
  });
}

void announce(const DaemonParts& d, const boost::asio::ip::tcp::endpoint& bound) {
  spdlog::info("config {}: {} services; state in {}; cgroups {}", d.config.path,
               d.config.services.size(), d.state_dir,
               d.cgroup_parent.empty() ? "off" : d.cgroup_parent);
  // Said once: without NVML the daemon still runs services, with VRAM unknown.
  spdlog::info("GPU inventory: {}", d.gpus.describe());
  // Tests and scripts read this line to learn the port when listening on port 0.
  std::cout << "gpuvisor listening on http://" << bound.address().to_string() << ":" << bound.port()
            << std::endl;
}

// The autostart services, ensured once what still runs is adopted; higher priority first, so
// that placement (one service at a time, in call order) gives them the GPUs in that order. The
// wait only bounds the log line: the start goes on without it.
void autostart(Supervisor& supervisor, const Config& config) {
  constexpr Millis kLogAfter{600'000};
  std::vector<const ServiceSpec*> wanted;
  for (const auto& s : config.services) {
    if (s.autostart) wanted.push_back(&s);
  }
  std::stable_sort(wanted.begin(), wanted.end(), [](const ServiceSpec* a, const ServiceSpec* b) {
    return a->priority > b->priority;
  });
  for (const ServiceSpec* s : wanted) {
    spdlog::info("{}: autostart", s->name);
    supervisor.ensure(s->name, kLogAfter, [name = s->name](const Result<ServiceView>& ready) {
      if (!ready) spdlog::warn("{}: autostart: {}", name, ready.error().message);
    });
  }
}

// Runs until a signal has stopped everything, then leaves what the next daemon will look for.
int run_until_stopped(const DaemonParts& d) {
  d.io.run();
  d.threads.stop();  // before anything they use goes
  // Gone only when empty: a service left running keeps its cgroup, and the next daemon finds it.
  if (!d.cgroup_parent.empty()) rmdir(d.cgroup_parent.c_str());
  close(d.lock_fd);
  spdlog::info("stopped");
  return 0;
}

// The jobs, the API, the proxy and the ports on top of the daemon's parts; starts it all and
// serves until stopped.
int serve_api(const DaemonParts& d, const HostPort& listen, const std::string& token,
              const NotifyTarget& notify) {
  const Config& config = d.config;
  auto executor = d.io.get_executor();
  JobQueue jobs(executor, d.clock, d.job_store, d.plugins, d.supervisor, d.events, d.workers,
                {d.state_dir + "/logs", config.daemon.conda, config.daemon.job_retention,
                 d.cgroup_parent, config.daemon.job_retention_count});
  d.plugins.on_config_change([&jobs](const std::string& id) { jobs.reload(id); });
  d.owners.set_evict_worker([&jobs](const std::string& id, const std::string& why) {
    return jobs.evict_worker(id, why);
  });
  Proxy proxy(executor, d.supervisor, d.events, config, !token.empty(), &d.threads);
  Metrics metrics(d.events);
  Api api(executor, d.supervisor, d.events, d.gpus, d.workers, d.outside, d.leases, d.owners,
          d.plugins, jobs, d.job_store, proxy, metrics, token, config.daemon.external_busy_percent);
  HttpServer server(
      executor, [&api](Incoming& in) { return api.handle(in); }, &d.threads);
  std::vector<std::unique_ptr<HttpServer>> ports;
  if (!bind_service_ports(d, proxy, ports)) return 1;

  d.supervisor.start();
  GpuWatch watch(d.clock, d.gpus, d.supervisor, d.owners, d.events,
                 config.daemon.external_busy_percent, config.daemon.gpu_watch_interval);
  watch.start();
  // After the supervisor has adopted what still runs: a job may need one of those services.
  if (auto recovered = jobs.recover(); !recovered) {
    std::cerr << recovered.error().message << "\n";
    return 1;
  }
  jobs.start_retention();
  autostart(d.supervisor, config);
  const auto bound = server.listen(listen.host, listen.port);
  if (!bound) {
    std::cerr << bound.error().message << "\n";
    return 1;
  }
  // Before the listening line: whoever starts the daemon may send SIGTERM as soon as it reads
  // that line, and must find it handled (services stopped), not the default action.
  boost::asio::signal_set signals(d.io, SIGINT, SIGTERM);
  const auto notifier = SdNotifier::to(d.clock, notify);
  stop_on_signal(signals, d, server, ports, jobs, *notifier);
  boost::asio::signal_set hangup(d.io, SIGHUP);
  ignore_hangup(hangup);
  announce(d, *bound);
  // Listening, with what still ran adopted: systemd may start what comes after the daemon.
  notifier->ready();
  return run_until_stopped(d);
}

// The runtimes, the supervisor, the GPUs, the plugins and the job store, in that order; then the
// rest (serve_api).
int build_and_serve(const Config& config, const HostPort& listen, const std::string& token,
                    StateStore& store, int lock_fd, const NotifyTarget& notify) {
  // Proxied connections run on threads of their own (io_threads.h); the rest of the daemon on
  // this one. Their io_contexts outlive this one (IoThreads keeps them to the process's exit):
  // work that the main thread holds when it stops still names them as it is destroyed.
  IoThreads threads(IoThreads::count_for(config.daemon.io_threads));
  boost::asio::io_context io;
  const std::optional<CgroupParent> cgroups = claim_cgroups(config, store.dir());
  const std::string cgroup_parent = cgroups ? cgroups->dir() : "";
  const auto docker_socket = docker_socket_for(config);
  if (!docker_socket) {
    std::cerr << docker_socket.error().message << "\n";
    return 2;
  }
  AsioProber prober(io.get_executor());
  EventBus events;
  Backends backends(io.get_executor(), config, cgroup_parent, *docker_socket, store.dir(), events);
  RuntimeRouter& runtime = backends.router;
  AsioClock clock(io.get_executor());
  Supervisor supervisor(io.get_executor(), clock, config, runtime, prober, store, events);
  const auto gpus = open_nvml_inventory(
      config.daemon.nvml_library.empty() ? default_nvml_library() : config.daemon.nvml_library);
  supervisor.set_gpu_inventory(gpus.get(), config.daemon.preempt_busy_lower);
  WorkerRegistry workers(ProcessTable::system());
  Leases leases(io.get_executor(), clock, events, store.dir() + "/leases.json");
  leases.restore();
  OwnershipTracker owners(supervisor, workers, leases);
  OutsideWorkers outside(io.get_executor(), workers, events, store.dir() + "/outside_workers.json");
  outside.restore();
  supervisor.set_ownership(&owners);
  auto plugins = load_plugins(config, store.dir());
  if (!plugins) {
    std::cerr << plugins.error().message << "\n";
    return 2;
  }
  auto job_store = JobStore::open(store.dir() + "/jobs.db", io.get_executor());
  if (!job_store) {
    std::cerr << job_store.error().message << "\n";
    return 1;
  }
  return serve_api({config, store.dir(), cgroup_parent, lock_fd, threads, io, clock, events,
                    supervisor, *gpus, workers, owners, outside, leases, *plugins, **job_store},
                   listen, token, notify);
}

}  // namespace

int run_serve(const ServeOptions& options) {
  // First, while this is the only thread: it changes the environment.
  const NotifyTarget notify = take_notify_target();
  set_up_logging(options.log_level);
  auto loaded = load_config(options);
  if (!loaded) {
    std::cerr << loaded.error().message << "\n";
    return 2;
  }
  const Config config = std::move(*loaded);
  const auto listen = parse_host_port(config.daemon.listen);
  if (!listen) {
    std::cerr << "bad listen address '" << config.daemon.listen << "' (use HOST:PORT)\n";
    return 2;
  }
  const char* token_env = std::getenv("GPUVISOR_TOKEN");
  const std::string token = token_env == nullptr ? "" : token_env;
  if (!is_loopback(listen->host) && token.empty()) {
    std::cerr << "refusing to listen on " << config.daemon.listen
              << " without a token: set GPUVISOR_TOKEN, or listen on 127.0.0.1\n";
    return 2;
  }

  auto store = StateStore::open(config.daemon.state_dir);
  if (!store) {
    std::cerr << store.error().message << "\n";
    return 1;
  }
  const int lock_fd = lock_state_dir(store->dir());
  if (lock_fd < 0) {
    std::cerr << "another gpuvisor daemon is using state directory " << store->dir() << "\n";
    return 1;
  }
  // A client that disconnects mid-write must not kill the daemon.
  std::signal(SIGPIPE, SIG_IGN);
  raise_fd_limit();
  return build_and_serve(config, *listen, token, *store, lock_fd, notify);
}

}  // namespace gpuvisor
