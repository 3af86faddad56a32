#!/usr/bin/env bash
# The main job: fetch the assets and run RAC on the embedded default data (Fashion-MNIST-LT).
# Usage: scripts/demo.sh [--json]
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --release
cargo run -q --release --bin rac -- demo "$@"
