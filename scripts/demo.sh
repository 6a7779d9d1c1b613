#!/usr/bin/env bash
# The one demo command: installs dependencies, builds, and runs the daemon on its embedded demo
# configuration (examples/demo.yaml; no GPU needed). In another terminal: build/gpuvisor status
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
scripts/build.sh
export PATH="$PWD/build:$PATH"
echo "demo: try, in another terminal:  export PATH=$PWD/build:\$PATH; gpuvisor ensure llm; gpuvisor status"
exec gpuvisor serve --state-dir "${GPUVISOR_STATE_DIR:-$PWD/build/demo-state}" "$@"
