#!/usr/bin/env bash
# The test command: set-up (toolchain checks, asset fetch), then every test of the workspace.
# Usage: scripts/test.sh [extra cargo test args]
set -euo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)
scripts/setup.sh
cargo build --workspace --all-targets
cargo test --workspace "$@"
echo "scripts/test.sh: done in $(( $(date +%s) - start )) s"
