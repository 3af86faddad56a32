#!/usr/bin/env bash
# The test command: set-up (toolchain checks, asset fetch), then every test of the workspace.
# Usage: scripts/test.sh [extra cargo test args]
set -euo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)
scripts/setup.sh
cargo build --workspace --all-targets
cargo test --workspace "$@"
# The `cuda` feature must keep compiling: candle's CUDA kernels are built with nvcc from
# NVIDIA's PyPI wheels (no GPU needed). RAC_SKIP_CUDA_CHECK=1 skips it.
if [[ "${RAC_SKIP_CUDA_CHECK:-0}" != 1 ]]; then
  cuda_start=$(date +%s)
  scripts/cuda-env.sh --compile-only -- cargo check --workspace --all-targets --features rac-core/cuda,rac-benches/cuda
  echo "scripts/test.sh: cuda check in $(( $(date +%s) - cuda_start )) s"
fi
echo "scripts/test.sh: done in $(( $(date +%s) - start )) s"
