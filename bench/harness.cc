#include "harness.h"

#include <charconv>
#include <iostream>

#include "testkit/daemon.h"

namespace gpuvisor::bench {

bool read_flags(int argc, char** argv, const std::map<std::string, Flag>& flags,
                const std::string& usage) {
  for (int i = 1; i < argc; i += 2) {
    const auto flag = flags.find(argv[i]);
    bool ok = flag != flags.end() && i + 1 < argc;
    if (ok) {
      const std::string value = argv[i + 1];
      if (auto* text = std::get_if<std::string*>(&flag->second)) {
        **text = value;
      } else {
        int* number = std::get<int*>(flag->second);
        const auto [end, ec] = std::from_chars(value.data(), value.data() + value.size(), *number);
        ok = ec == std::errc() && end == value.data() + value.size();
      }
    }
    if (!ok) {
      std::cerr << "usage: " << usage << "\n";
      return false;
    }
  }
  return true;
}

std::string hang_plugin_config() {
  const std::string p = std::to_string(itest::free_port());
  return "services:\n  svc:\n    command: [$TESTSVC, --port, \"" + p +
         "\"]\n    health: {tcp: \"127.0.0.1:" + p +
         "\"}\nplugins:\n  manifests:\n    - {name: hang, category: bench, mode: http, "
         "service: svc,\n       http: {url: \"http://127.0.0.1:" +
         p + "/hang\"}}\n";
}

}  // namespace gpuvisor::bench
