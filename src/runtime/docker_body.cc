#include "runtime/docker_body.h"

namespace gpuvisor {

using nlohmann::json;

std::string owned_container_name(const ServiceSpec& spec) {
  return spec.docker.container.empty() ? "gpuvisor-" + spec.name : spec.docker.container;
}

namespace {

// "8188:8188", "127.0.0.1:8188:8188", "8188:8188/udp" (validated by the config loader).
void add_port(json& exposed, json& bindings, const std::string& text) {
  std::string spec = text;
  std::string proto = "tcp";
  if (const auto slash = spec.find('/'); slash != std::string::npos) {
    proto = spec.substr(slash + 1);
    spec.resize(slash);
  }
  std::vector<std::string> parts;
  for (size_t start = 0;;) {
    const auto colon = spec.find(':', start);
    parts.push_back(spec.substr(start, colon - start));
    if (colon == std::string::npos) break;
    start = colon + 1;
  }
  const std::string inside = parts.back() + "/" + proto;
  exposed[inside] = json::object();
  const std::string host_ip = parts.size() == 3 ? parts[0] : "";
  const std::string host_port = parts.size() >= 2 ? parts[parts.size() - 2] : parts.back();
  bindings[inside].push_back({{"HostIp", host_ip}, {"HostPort", host_port}});
}

}  // namespace

json container_create_body(const ServiceSpec& spec, const std::vector<unsigned>& gpus,
                           const std::vector<std::pair<std::string, std::string>>& env) {
  const auto& d = spec.docker;
  json body = {{"Image", d.image}, {"Labels", {{kServiceLabel, spec.name}}}};
  if (!spec.command.empty()) {
    if (spec.shell) {
      body["Cmd"] = {"/bin/sh", "-c", spec.command.front()};
    } else {
      body["Cmd"] = spec.command;
    }
  }
  json env_list = json::array();
  for (const auto& [k, v] : env) env_list.push_back(k + "=" + v);
  if (!env_list.empty()) body["Env"] = env_list;
  if (!spec.cwd.empty()) body["WorkingDir"] = spec.cwd;

  json host = {{"Init", d.init}, {"NetworkMode", d.network}};
  if (!d.mounts.empty()) host["Binds"] = d.mounts;
  if (!d.ports.empty()) {
    json exposed = json::object(), bindings = json::object();
    for (const auto& p : d.ports) add_port(exposed, bindings, p);
    body["ExposedPorts"] = exposed;
    host["PortBindings"] = bindings;
  }
  // The NVIDIA container runtime numbers GPUs as NVML does, so the planner's index carries over.
  json request = {{"Driver", "nvidia"}, {"Capabilities", {{"gpu"}}}};
  if (d.gpus == DockerSpec::Gpus::kAll || (d.gpus == DockerSpec::Gpus::kPlaced && gpus.empty())) {
    request["Count"] = -1;
    host["DeviceRequests"] = {request};
  } else if (d.gpus == DockerSpec::Gpus::kPlaced) {
    json ids = json::array();
    for (const unsigned g : gpus) ids.push_back(std::to_string(g));
    request["DeviceIDs"] = ids;
    host["DeviceRequests"] = {request};
  }
  body["HostConfig"] = host;
  return body;
}

Result<ContainerState> parse_container_inspect(const std::string& body) {
  const auto j = json::parse(body, nullptr, false);
  const auto bad = [](const std::string& what) {
    return make_error(ErrorCode::kFailed, "unexpected reply from the Docker engine: " + what);
  };
  if (!j.is_object()) return bad("container inspect is not a JSON object");
  if (!j.contains("Id") || !j["Id"].is_string()) return bad("container inspect has no Id");
  if (!j.contains("State") || !j["State"].is_object()) return bad("container inspect has no State");
  const auto& st = j["State"];
  ContainerState out;
  out.id = j["Id"].get<std::string>();
  if (!st.contains("Running") || !st["Running"].is_boolean())
    return bad("State.Running is missing or not a boolean");
  out.running = st["Running"].get<bool>();
  if (st.contains("Pid") && st["Pid"].is_number_integer()) out.pid = st["Pid"].get<pid_t>();
  if (out.running && out.pid <= 0) return bad("a running container with no State.Pid");
  if (st.contains("ExitCode") && st["ExitCode"].is_number_integer())
    out.exit_code = st["ExitCode"].get<int>();
  if (st.contains("OOMKilled") && st["OOMKilled"].is_boolean())
    out.oom_killed = st["OOMKilled"].get<bool>();
  if (j.contains("Config") && j["Config"].is_object()) {
    const auto& c = j["Config"];
    if (c.contains("Tty") && c["Tty"].is_boolean()) out.tty = c["Tty"].get<bool>();
    if (c.contains("Labels") && c["Labels"].is_object() && c["Labels"].contains(kServiceLabel) &&
        c["Labels"][kServiceLabel].is_string()) {
      out.service_label = c["Labels"][kServiceLabel].get<std::string>();
    }
  }
  return out;
}

std::optional<ContainerEvent> parse_container_event(const std::string& line) {
  const auto j = json::parse(line, nullptr, false);
  if (!j.is_object()) return std::nullopt;
  ContainerEvent e;
  if (j.contains("Action") && j["Action"].is_string()) e.action = j["Action"].get<std::string>();
  if (j.contains("Actor") && j["Actor"].is_object() && j["Actor"].contains("ID") &&
      j["Actor"]["ID"].is_string()) {
    e.id = j["Actor"]["ID"].get<std::string>();
  }
  if (j.contains("timeNano") && j["timeNano"].is_number_integer())
    e.time_ns = j["timeNano"].get<int64_t>();
  if (e.id.empty() || e.action.empty()) return std::nullopt;
  if (e.action == "die") {
    const auto& attrs = j["Actor"].value("Attributes", json::object());
    if (attrs.is_object() && attrs.contains("exitCode") && attrs["exitCode"].is_string()) {
      try {
        e.exit_code = std::stoi(attrs["exitCode"].get<std::string>());
      } catch (...) {
        return std::nullopt;  // a die with a garbled code: the inspect after it tells the truth
      }
    }
  }
  return e;
}

std::string LogDemux::feed(std::string_view data) {
  if (tty_) return std::string(data);
  pending_.append(data);
  std::string out;
  size_t at = 0;
  // Each frame: stream type (1 byte), 3 zero bytes, payload size (4 bytes, big-endian).
  while (pending_.size() - at >= 8) {
    const auto* h = reinterpret_cast<const unsigned char*>(pending_.data() + at);
    const size_t size = (size_t{h[4]} << 24) | (size_t{h[5]} << 16) | (size_t{h[6]} << 8) | h[7];
    if (pending_.size() - at - 8 < size) break;
    out.append(pending_, at + 8, size);
    at += 8 + size;
  }
  pending_.erase(0, at);
  return out;
}

}  // namespace gpuvisor
