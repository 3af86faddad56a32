#!/usr/bin/env bash
# The test command: set-up (toolchain checks, asset fetch), every test of the workspace,
# the nine notebooks executed headless on the evcxr kernel, the browser check of the
# executed quickstart, and a compile of the `cuda` feature.
# Usage: scripts/test.sh [extra cargo test args]
#   RAC_SKIP_NOTEBOOKS=1 / RAC_SKIP_CUDA_CHECK=1 skip those steps (for a quick local run).
set -euo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)
stamp() { echo "scripts/test.sh: $1 in $(( $(date +%s) - $2 )) s"; }
scripts/setup.sh
cargo build --workspace --all-targets
cargo test --workspace "$@"
stamp "cargo tests" "$start"

if [[ "${RAC_SKIP_NOTEBOOKS:-0}" != 1 ]]; then
  nb_start=$(date +%s)
  scripts/notebook-setup.sh
  source scripts/notebook-env.sh
  python tests/notebooks/run_notebooks.py --ci
  tests/notebooks/browser-check.sh
  stamp "notebooks (set-up, execution, browser check)" "$nb_start"
fi

# The `cuda` feature must keep compiling: candle's CUDA kernels are built with nvcc from
# NVIDIA's PyPI wheels (no GPU needed).
if [[ "${RAC_SKIP_CUDA_CHECK:-0}" != 1 ]]; then
  cuda_start=$(date +%s)
  scripts/cuda-env.sh --compile-only -- cargo check --workspace --all-targets --features rac-core/cuda,rac-benches/cuda
  stamp "cuda check" "$cuda_start"
fi
stamp "done" "$start"
