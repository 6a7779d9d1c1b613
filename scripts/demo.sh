#!/usr/bin/env bash
# The one demo command: installs dependencies, builds, and runs the daemon on its embedded demo
# configuration (examples/demo.yaml; no GPU needed). In another terminal: build/gpuvisor status
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
scripts/build.sh
export PATH="$PWD/build:$PATH"
# A simulated 24 GB GPU (the fake NVML library, loaded like the real one), unless told otherwise.
export GPUVISOR_NVML_LIBRARY="${GPUVISOR_NVML_LIBRARY:-$PWD/build/libgpuvisor-fake-nvml.so}"
export FAKE_NVML_DIR="${FAKE_NVML_DIR:-$PWD/build/demo-gpu}"
mkdir -p "$FAKE_NVML_DIR"
# The pretend cloud behind the demo's remote service keeps its instances here.
export FAKE_PROVIDER_DIR="${FAKE_PROVIDER_DIR:-$PWD/build/demo-provider}"
echo "demo: try, in another terminal:  export PATH=$PWD/build:\$PATH; gpuvisor ensure llm; gpuvisor status"
exec gpuvisor serve --state-dir "${GPUVISOR_STATE_DIR:-$PWD/build/demo-state}" "$@"
