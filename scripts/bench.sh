#!/usr/bin/env bash
# Builds and runs every benchmark; prints the figures docs/benchmarks.md records.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
scripts/build.sh
BUILD_DIR=${BUILD_DIR:-build}
echo "== machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -r)"
"$BUILD_DIR"/bench/bench_ensure_overhead
"$BUILD_DIR"/bench/bench_swap
"$BUILD_DIR"/bench/bench_policy_sim
"$BUILD_DIR"/bench/bench_queue_sim
"$BUILD_DIR"/bench/bench_job_submit --seconds 10
"$BUILD_DIR"/bench/bench_sse_fanout --clients 1000 --events 100
bench/proxy.sh "$BUILD_DIR"
# A full inventory on the fake NVML (8 GPUs, 64 processes), or on the real one with --real.
if [[ "${1:-}" == "--real" ]]; then
  "$BUILD_DIR"/bench/bench_snapshot
else
  fake=$(mktemp -d)
  mkdir -p "$fake/holds"
  echo '{"devices": [{}, {}, {}, {}, {}, {}, {}, {}]}' > "$fake/devices.json"
  for i in $(seq 0 63); do
    echo "{\"pid\": $$, \"gpu\": $((i % 8)), \"mb\": 1000}" > "$fake/holds/$i.json"
  done
  FAKE_NVML_DIR=$fake "$BUILD_DIR"/bench/bench_snapshot --library "$BUILD_DIR"/libgpuvisor-fake-nvml.so
  rm -rf "$fake"
fi
"$BUILD_DIR"/bench/bench_idle_footprint --seconds "${IDLE_SECONDS:-60}"
