#!/usr/bin/env bash
# The one test command: installs dependencies, runs the static checks, builds everything under
# AddressSanitizer + UndefinedBehaviorSanitizer and runs every test there under CTest (unit,
# integration with real processes, Docker, the dashboard in Chromium), then runs each libFuzzer
# target for a bounded time (FUZZ_SECONDS per target, default 20).
#
# The suite runs on the sanitized build only: on a 2-core machine a second, plain build of the
# same code would double the time, and every test that passes there passes here, with memory
# errors, leaks and undefined behaviour caught besides. scripts/build.sh (the demo's and the
# benchmarks' build) builds the plain tree; `cd build && ctest` runs the suite on it.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
scripts/lint.sh
scripts/sanitize.sh
scripts/fuzz.sh "${FUZZ_SECONDS:-20}"
