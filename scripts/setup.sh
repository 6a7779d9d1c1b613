#!/usr/bin/env bash
# Installs what gpuvisor needs to build and test on Debian 12, as root. Safe to run again.
set -euo pipefail

packages=(
  build-essential cmake ninja-build pkg-config
  libboost-dev nlohmann-json3-dev libyaml-cpp-dev libspdlog-dev libfmt-dev libcli11-dev
  libsqlite3-dev libgtest-dev libgmock-dev libbenchmark-dev libvalijson-dev
  libre2-dev  # plugin schemas' 'pattern' in linear time (src/plugins/re2_pattern.h)
  curl procps
  docker.io busybox-static
  clang-format cppcheck
  clang libclang-rt-14-dev  # scripts/fuzz.sh: clang++, libFuzzer and the sanitizer runtimes
  wrk nginx-light  # bench/proxy.sh: the load generator and the reference proxy
  chromium nodejs  # the dashboard test: Playwright drives Debian's Chromium
  python3-httpx python3-pytest  # tests/clients: a real Python client through the proxy
  prometheus  # tests/clients: promtool check metrics reads /metrics
  golang-go  # bench/proxy.sh: Go's httputil.ReverseProxy, llama-swap's core, measured beside
  dpkg-dev  # scripts/package.sh: dpkg-shlibdeps finds the .deb's library dependencies
  systemd  # tests/packaging/deb_test.sh: systemd-analyze verify on the installed unit
)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
# Debian's nodejs comes without npm (NodeSource's has it).
if ! command -v npm > /dev/null; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends npm
fi
# playwright-core only (no browser download: the test uses /usr/bin/chromium), pinned by the lock.
# Each Node test folder installs from its own lock: exact versions, no registry drift.
for dir in tests/dashboard tests/clients; do
  dir="$(cd "$(dirname "$0")/.." && pwd)/$dir"
  [[ -f $dir/package-lock.json ]] || continue
  if [[ ! -d $dir/node_modules || $dir/package-lock.json -nt $dir/node_modules ]]; then
    (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error)
  fi
done
