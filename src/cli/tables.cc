#include "cli/tables.h"

#include <algorithm>

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

}  // namespace gpuvisor
