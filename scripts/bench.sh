#!/usr/bin/env bash
# Builds and runs every benchmark; prints the figures docs/benchmarks.md records.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
scripts/build.sh
BUILD_DIR=${BUILD_DIR:-build}
echo "== machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -r)"
"$BUILD_DIR"/bench/bench_ensure_overhead "$@"
"$BUILD_DIR"/bench/bench_idle_footprint --seconds "${IDLE_SECONDS:-60}"
