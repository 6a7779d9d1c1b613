// The project's test worker: speaks gpuvisor's worker protocol (JSON lines on stdin/stdout).
// Its input chooses what it does: {"crash": true} exits with status 3, {"hang": true} never
// answers, {"fail": true} answers an error; anything else streams two chunks, reports progress
// and returns {"echo": input, "config": the config it was initialised with}.
#include <cstdio>
#include <iostream>
#include <nlohmann/json.hpp>
#include <string>

using nlohmann::json;

namespace {

void say(const json& message) {
  std::cout << message.dump() << "\n" << std::flush;
}

}  // namespace

int main() {
  std::cerr << "testworker: started\n";
  json config = json::object();
  std::string line;
  while (std::getline(std::cin, line)) {
    const auto m = json::parse(line, nullptr, false);
    if (!m.is_object()) {
      std::cerr << "testworker: not JSON: " << line << "\n";
      continue;
    }
    const std::string type = m.value("type", "");
    if (type == "init") {
      config = m.value("config", json::object());
      say({{"type", "ready"}});
    } else if (type == "execute") {
      const auto id = m.value("job_id", 0LL);
      const json input = m.value("input", json::object());
      if (input.value("crash", false)) return 3;
      if (input.value("hang", false)) continue;
      if (input.value("fail", false)) {
        say({{"type", "error"}, {"job_id", id}, {"message", "asked to fail"}});
        continue;
      }
      say({{"type", "stream_chunk"}, {"job_id", id}, {"data", "chunk 1"}});
      say({{"type", "progress"}, {"job_id", id}, {"progress", 0.5}});
      say({{"type", "stream_chunk"}, {"job_id", id}, {"data", "chunk 2"}});
      say({{"type", "result"}, {"job_id", id}, {"result", {{"echo", input}, {"config", config}}}});
    } else if (type == "stop") {
      return 0;
    }
  }
  return 0;
}
