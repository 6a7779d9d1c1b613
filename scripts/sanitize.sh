#!/usr/bin/env bash
# Builds everything under AddressSanitizer + UndefinedBehaviorSanitizer into build-asan/ (or
# $ASAN_BUILD_DIR) and runs the whole test suite there: the daemons the integration tests start
# are sanitized too. A report in any process fails the run, even one a test did not notice
# (a daemon's stderr is kept in its test directory).
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=${ASAN_BUILD_DIR:-build-asan}
# -O1 -g1: what the sanitizers need (line numbers in reports) at a fraction of the compile time
# of -O2 -g, which matters on a 2-core CI machine with Asio's coroutines.
cmake -S . -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=None -DCMAKE_CXX_FLAGS="-O1 -g1" \
  -DGPUVISOR_SANITIZE=ON -DGPUVISOR_BUILD_BENCH=OFF > /dev/null
cmake --build "$BUILD_DIR" -j "$(nproc)"
# Reports go to stderr and into log_path files, so that none is lost with a daemon's pipe.
reports=$BUILD_DIR/sanitizer-reports
rm -rf "$reports" && mkdir -p "$reports"
export ASAN_OPTIONS="abort_on_error=0:detect_leaks=1:log_path=$PWD/$reports/asan"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1:log_path=$PWD/$reports/ubsan"
rc=0
(cd "$BUILD_DIR" && ctest --output-on-failure -j "$(nproc)" --timeout 600) || rc=$?
if compgen -G "$reports/*" > /dev/null; then
  echo "sanitize: sanitizer reports:" >&2
  for f in "$reports"/*; do echo "== $f" >&2; head -n 40 "$f" >&2; done
  rc=1
fi
exit "$rc"
