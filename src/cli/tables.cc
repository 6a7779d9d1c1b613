#include "cli/tables.h"

#include <algorithm>

#include "core/bytes.h"
#include "core/duration.h"

namespace gpuvisor {

std::string render_table(const std::vector<std::string>& header,
                         const std::vector<std::vector<std::string>>& rows) {
  std::vector<size_t> width(header.size());
  for (size_t c = 0; c < header.size(); ++c) width[c] = header[c].size();
  for (const auto& row : rows) {
    for (size_t c = 0; c < row.size() && c < width.size(); ++c) {
      width[c] = std::max(width[c], row[c].size());
    }
  }
  std::string out;
  auto line = [&](const std::vector<std::string>& cells) {
    std::string text;
    for (size_t c = 0; c < cells.size() && c < width.size(); ++c) {
      text += cells[c];
      if (c + 1 < cells.size()) text += std::string(width[c] - cells[c].size() + 2, ' ');
    }
    while (!text.empty() && text.back() == ' ') text.pop_back();
    out += text + "\n";
  };
  line(header);
  for (const auto& row : rows) line(row);
  return out;
}

std::string ago(long long then_ms, long long now_ms) {
  if (then_ms <= 0) return "-";
  const long long s = std::max(0LL, (now_ms - then_ms) / 1000);
  if (s < 60) return std::to_string(s) + "s ago";
  if (s < 3600) return std::to_string(s / 60) + "m ago";
  if (s < 86400) return std::to_string(s / 3600) + "h ago";
  return std::to_string(s / 86400) + "d ago";
}

std::string format_event(const nlohmann::json& event) {
  const auto data = event.value("data", nlohmann::json::object());
  std::string out = "#" + std::to_string(event.value("id", 0ULL)) + " ";
  if (event.value("type", "") == "service.state_changed") {
    return out + data.value("service", "?") + " " + data.value("from", "?") + " -> " +
           data.value("to", "?") + " (" + data.value("reason", "") + ")";
  }
  out += event.value("type", "?");
  if (data.contains("service")) out += " " + data.value("service", "");
  for (const auto& [key, value] : data.items()) {
    if (key == "service") continue;
    out += " " + key + "=" + (value.is_string() ? value.get<std::string>() : value.dump());
  }
  return out;
}

namespace {

std::string bytes_or_dash(const nlohmann::json& value) {
  return value.is_number_unsigned() ? format_bytes(value.get<uint64_t>()) : "-";
}

}  // namespace

std::string render_gpus(const nlohmann::json& resources) {
  std::vector<std::vector<std::string>> rows;
  for (const auto& g : resources.value("gpus", nlohmann::json::array())) {
    const auto util = g.value("util_gpu_percent", nlohmann::json());
    rows.push_back({std::to_string(g.value("index", 0U)), g.value("name", ""),
                    format_bytes(g.value("used_bytes", 0ULL)) + " / " +
                        format_bytes(g.value("total_bytes", 0ULL)),
                    format_bytes(g.value("free_bytes", 0ULL)),
                    util.is_number() ? std::to_string(util.get<unsigned>()) + "%" : "-",
                    format_bytes(g.value("app_bytes", 0ULL)),
                    format_bytes(g.value("external_bytes", 0ULL)), g.value("state", "")});
  }
  std::string out = render_table(
      {"GPU", "NAME", "USED / TOTAL", "FREE", "UTIL", "OURS", "EXTERNAL", "STATE"}, rows);
  const auto mem = resources.value("memory", nlohmann::json());
  if (mem.is_object()) {
    out += "system memory: " + format_bytes(mem.value("available_bytes", 0ULL)) + " available of " +
           format_bytes(mem.value("total_bytes", 0ULL)) + "\n";
  }
  return out;
}

std::string render_processes(const nlohmann::json& processes) {
  std::vector<std::vector<std::string>> rows;
  for (const auto& p : processes.value("processes", nlohmann::json::array())) {
    const auto owner = p.value("owner", nlohmann::json());
    rows.push_back({std::to_string(p.value("gpu", 0U)), std::to_string(p.value("pid", 0)),
                    p.value("name", ""), bytes_or_dash(p.value("used_bytes", nlohmann::json())),
                    p.value("kind", ""),
                    owner.is_string() ? owner.get<std::string>() : "(external)"});
  }
  return render_table({"GPU", "PID", "NAME", "VRAM", "KIND", "OWNER"}, rows);
}

std::string render_leases(const nlohmann::json& leases, int64_t now_unix_ms) {
  std::vector<std::vector<std::string>> rows;
  for (const auto& l : leases.value("leases", nlohmann::json::array())) {
    const auto pid = l.value("pid", nlohmann::json());
    const auto holder = l.value("holder", nlohmann::json());
    const auto expires = l.value("expires_unix_ms", nlohmann::json());
    std::string until = "released";
    if (expires.is_number()) {
      until = "in " +
              format_duration(Millis(std::max<int64_t>(expires.get<int64_t>() - now_unix_ms, 0)));
    }
    rows.push_back({std::to_string(l.value("id", 0)), std::to_string(l.value("gpu", 0U)),
                    bytes_or_dash(l.value("vram_bytes", nlohmann::json())),
                    pid.is_number() ? std::to_string(pid.get<int64_t>()) : "-",
                    holder.is_string() ? holder.get<std::string>() : "-", until});
  }
  return render_table({"ID", "GPU", "VRAM", "PID", "HOLDER", "UNTIL"}, rows);
}

std::string render_queue(const nlohmann::json& body) {
  std::vector<std::vector<std::string>> rows;
  for (const auto& q : body.value("queue", nlohmann::json::array())) {
    const auto draining = q.value("draining", nlohmann::json::array());
    std::string waiting_for;
    for (const auto& w : q.value("waiting_for", nlohmann::json::array())) {
      waiting_for +=
          (waiting_for.empty() ? "" : ", ") + (w.is_string() ? w.get<std::string>() : w.dump());
      if (std::find(draining.begin(), draining.end(), w) != draining.end()) {
        waiting_for += " (draining)";
      }
    }
    rows.push_back({std::to_string(q.value("position", 0)), q.value("service", ""), waiting_for,
                    format_duration(Millis(q.value("waited_ms", int64_t{0})))});
  }
  if (rows.empty()) return "nothing waits\n";
  return render_table({"#", "SERVICE", "WAITING FOR", "WAITED"}, rows);
}

}  // namespace gpuvisor
