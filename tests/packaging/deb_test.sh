#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# The .deb end to end, as root on Debian: build it from a tree (scripts/package.sh), install it
# with apt-get, check the shipped config with the installed binary, verify the installed unit
# with systemd-analyze where there is one, then purge it again.
#
#   tests/packaging/deb_test.sh [BUILD_DIR]     (default build/; ctest: the tree it runs in)
#
# Installs into /usr and /etc: it refuses to run where a gpuvisor that it did not install is
# there already. Exit 77 (ctest: skipped) when it cannot run here.
set -euo pipefail
cd "$(dirname "$0")/../.."
BUILD_DIR=${1:-build}
skip() { echo "deb_test: skipped: $*"; exit 77; }
[[ $(id -u) == 0 ]] || skip "needs root to install a package"
command -v apt-get > /dev/null && command -v dpkg > /dev/null || skip "not a Debian system"
if dpkg-query -W -f='${Status}' gpuvisor 2>/dev/null | grep -q "ok installed"; then
  skip "a gpuvisor package is installed already; not touching it"
fi
[[ ! -e /usr/bin/gpuvisor && ! -e /etc/gpuvisor ]] ||
  skip "/usr/bin/gpuvisor or /etc/gpuvisor exists and is not from a package; not touching it"

# Other work on this machine may hold dpkg's lock for a while: wait for it rather than fail.
apt=(apt-get -o DPkg::Lock::Timeout=300 -y -q)
cleanup() { DEBIAN_FRONTEND=noninteractive "${apt[@]}" purge gpuvisor > /dev/null 2>&1 || true; }
trap cleanup EXIT

deb=$(BUILD_DIR=$BUILD_DIR scripts/package.sh)
echo "deb_test: built $deb"
depends=$(dpkg-deb --field "$deb" Depends)
echo "deb_test: Depends: $depends"
[[ $depends == *libyaml-cpp* && $depends == *libsqlite3* ]] ||
  { echo "deb_test: FAILED: no Depends on the libraries" >&2; exit 1; }
DEBIAN_FRONTEND=noninteractive "${apt[@]}" install "$deb" > /dev/null

fail() { echo "deb_test: FAILED: $*" >&2; exit 1; }
for f in /usr/bin/gpuvisor /etc/gpuvisor/gpuvisor.yaml /usr/share/doc/gpuvisor/copyright \
         /usr/lib/systemd/system/gpuvisor.service; do
  [[ -e $f ]] || fail "$f is not installed"
done
[[ $(dpkg-query --control-show gpuvisor conffiles) == *"/etc/gpuvisor/gpuvisor.yaml"* ]] ||
  fail "/etc/gpuvisor/gpuvisor.yaml is not a conffile"
/usr/bin/gpuvisor check --config /etc/gpuvisor/gpuvisor.yaml || fail "gpuvisor check on the shipped config"
grep -q "^ExecStart=/usr/bin/gpuvisor serve --config /etc/gpuvisor/gpuvisor.yaml$" \
  /usr/lib/systemd/system/gpuvisor.service || fail "the unit's ExecStart"

if command -v systemd-analyze > /dev/null; then
  # --man=no: the check of Documentation= would look for man pages; the unit names a file.
  out=$(systemd-analyze verify --man=no /usr/lib/systemd/system/gpuvisor.service 2>&1) ||
    fail "systemd-analyze verify: $out"
  # verify prints, and still succeeds, for some problems (an unknown key, a bad value).
  [[ -z $out ]] || fail "systemd-analyze verify: $out"
  echo "deb_test: systemd-analyze verify: clean"
else
  echo "deb_test: systemd-analyze not found: unit not verified"
fi

DEBIAN_FRONTEND=noninteractive "${apt[@]}" purge gpuvisor > /dev/null
[[ ! -e /usr/bin/gpuvisor && ! -e /etc/gpuvisor/gpuvisor.yaml ]] || fail "purge left files behind"
trap - EXIT
echo "deb_test: ok"
