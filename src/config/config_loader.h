// Reads gpuvisor.yaml into a validated Config. The one place that knows the file's schema.
#pragma once

#include <string>
#include <vector>

#include "core/result.h"
#include "core/service_spec.h"

namespace gpuvisor {

// Parses and validates a config file. Never throws.
//
// On success every field of Config is set (struct defaults for what the file leaves out),
// Config::path is `path`, and each ServiceSpec::origin is "PATH:LINE:COL" of its name.
//
// On failure returns Error{ErrorCode::kBadRequest, message}. The message is one or more lines
// joined by '\n' (no trailing newline), in document order, each "PATH:LINE:COL: what is wrong"
// with 1-based line and column: every problem found, not only the first. A YAML syntax error is
// one such line. A file that cannot be read gives the single line "PATH: cannot read: <strerror>".
Result<Config> load_config_file(const std::string& path);

// The same for text already in memory; `origin` stands in for PATH in Config::path, in
// ServiceSpec::origin and in messages (e.g. "<embedded demo>").
Result<Config> load_config_string(const std::string& text, const std::string& origin);

// Everything a load finds, for `gpuvisor check`, which goes on to the plugins even when the
// config itself has problems.
struct ConfigReport {
  // As far as it could be read: a service with a problem is left out. Complete when `problems`
  // is empty, and then what load_config_* returns.
  Config config;
  // One line each, in document order, as in load_config_file's message.
  std::vector<std::string> problems;
  // Every name under 'services' in the file, including those left out of `config`.
  std::vector<std::string> service_names;
};

// The same as load_config_file and load_config_string, with every part of the result kept.
ConfigReport read_config_file(const std::string& path);
ConfigReport read_config_string(const std::string& text, const std::string& origin);

}  // namespace gpuvisor
