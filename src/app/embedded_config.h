#pragma once

namespace gpuvisor {

// examples/demo.yaml, compiled in: `gpuvisor serve` with no --config runs the demo.
extern const char* const kEmbeddedConfig;

}  // namespace gpuvisor
