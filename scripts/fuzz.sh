#!/usr/bin/env bash
# Builds the libFuzzer targets (fuzz/, docs/fuzzing.md) into build-fuzz/ with clang and runs
# each for SECONDS_PER_TARGET (default 20) on a copy of its corpus, so that a run never writes
# into the repo. Every target runs; if any crashed, leaked, hit UB, hung or blew its memory, it
# says which and where the reproducer is, and exits 1.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-20}
BUILD_DIR=${FUZZ_BUILD_DIR:-build-fuzz}
targets=(config_fuzz request_body_fuzz manifest_fuzz docker_reply_fuzz sse_fuzz)

cmake -S . -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CXX_COMPILER=clang++ \
  -DGPUVISOR_FUZZ=ON -DGPUVISOR_BUILD_TESTS=OFF -DGPUVISOR_BUILD_BENCH=OFF > /dev/null
cmake --build "$BUILD_DIR" --target fuzzers -j "$(nproc)"

work=$(mktemp -d "${TMPDIR:-/tmp}/gpuvisor-fuzz.XXXXXX")
failed=()
for t in "${targets[@]}"; do
  dir=$work/$t
  mkdir -p "$dir/corpus" "$dir/artifacts"
  cp fuzz/corpus/"$t"/* "$dir/corpus/"
  seeds=$(find "$dir/corpus" -type f | wc -l)
  dict=()
  [[ -f fuzz/$t.dict ]] && dict=(-dict="fuzz/$t.dict")
  if "$BUILD_DIR/fuzz/$t" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
    -print_final_stats=1 -artifact_prefix="$dir/artifacts/" "${dict[@]}" "$dir/corpus" \
    > "$dir/log" 2>&1; then
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$dir/log")
    printf 'fuzz: %-18s ok  %9s execs in %ss, corpus %s -> %s inputs\n' "$t" "${execs:-?}" \
      "$seconds" "$seeds" "$(find "$dir/corpus" -type f | wc -l)"
  else
    reproducer=$(find "$dir/artifacts" -type f | head -n 1)
    echo "fuzz: $t FAILED; reproducer: ${reproducer:-none written}; log: $dir/log" >&2
    grep -m 1 -A 30 -E '^==[0-9]+==|ERROR: libFuzzer|SUMMARY|what\(\)' "$dir/log" >&2 || tail -n 30 "$dir/log" >&2
    failed+=("$t")
  fi
done

if ((${#failed[@]})); then
  echo "fuzz: FAILED: ${failed[*]} (reproduce with $BUILD_DIR/fuzz/TARGET REPRODUCER;" \
    "inputs and logs kept in $work)" >&2
  exit 1
fi
rm -rf "$work"
