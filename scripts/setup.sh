#!/usr/bin/env bash
# Installs what gpuvisor needs to build and test on Debian 12, as root. Safe to run again.
set -euo pipefail

packages=(
  build-essential cmake ninja-build pkg-config
  libboost-dev nlohmann-json3-dev libyaml-cpp-dev libspdlog-dev libfmt-dev libcli11-dev
  libsqlite3-dev libgtest-dev libgmock-dev libbenchmark-dev libvalijson-dev
  curl procps
  docker.io busybox-static
  clang-format cppcheck
  wrk nginx-light  # bench/proxy.sh: the load generator and the reference proxy
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
