// What the daemon-driving benchmarks share: their flags, and the config with a plugin whose
// jobs never finish (so they pile up as durable, pending work and events).
#pragma once

#include <map>
#include <string>
#include <variant>

namespace gpuvisor::bench {

// "--name VALUE" pairs into the given ints and strings. Anything else, or an int that is not
// one, prints usage and returns false.
using Flag = std::variant<int*, std::string*>;
bool read_flags(int argc, char** argv, const std::map<std::string, Flag>& flags,
                const std::string& usage);

// A test service "svc" on a free port and the plugin bench_hang, an http plugin on svc's /hang.
std::string hang_plugin_config();

}  // namespace gpuvisor::bench
