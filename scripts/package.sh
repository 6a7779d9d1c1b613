#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Builds gpuvisor for /usr and packs it into a .deb with CPack; prints the .deb's path.
#
# A new tree (build-release/, or $BUILD_DIR) is configured Release, without tests or benchmarks.
# An existing tree is packed as it was configured and built (the package test packs the tree it
# tests): the package installs under /usr whatever the tree's CMAKE_INSTALL_PREFIX.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=${BUILD_DIR:-build-release}
if [[ ! -f $BUILD_DIR/CMakeCache.txt ]]; then
  # Release at -O2, the level the tested RelWithDebInfo tree is built at: g++ 12 at -O3 reports
  # a -Wrestrict false positive inside libstdc++'s std::string (an error under -Werror).
  cmake -S . -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=Release \
    -DCMAKE_CXX_FLAGS_RELEASE="-O2 -DNDEBUG" -DGPUVISOR_BUILD_TESTS=OFF \
    -DGPUVISOR_BUILD_BENCH=OFF > /dev/null
fi
cmake --build "$BUILD_DIR" -j "${JOBS:-$(nproc)}" >&2
rm -f "$BUILD_DIR"/gpuvisor_*.deb
(cd "$BUILD_DIR" && cpack -G DEB > cpack.log) || { cat "$BUILD_DIR/cpack.log" >&2; exit 1; }
deb=$(ls "$BUILD_DIR"/gpuvisor_*.deb)
echo "$(cd "$(dirname "$deb")" && pwd)/$(basename "$deb")"
