// Files that must survive a crash whole: written to a temp file, fsynced, then renamed, so a
// crash leaves the old content or the new, never a mix.
#pragma once

#include <string>

#include "core/result.h"

namespace gpuvisor {

Status write_file_atomically(const std::string& path, const std::string& text);

}  // namespace gpuvisor
