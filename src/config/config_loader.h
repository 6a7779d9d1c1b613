// Reads gpuvisor.yaml into a validated Config. The one place that knows the file's schema.
#pragma once

#include <string>

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

}  // namespace gpuvisor
