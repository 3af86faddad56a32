#!/usr/bin/env bash
# The test command: set-up (toolchain checks, asset fetch), every test of the workspace,
# the nine notebooks executed headless on the evcxr kernel, the browser check of the
# executed quickstart, and a compile of the `cuda` feature. Each phase's time is printed
# as it ends and again, as a table, at the end of the run.
# Usage: scripts/test.sh [extra cargo test args]
#   RAC_SKIP_NOTEBOOKS=1 / RAC_SKIP_CUDA_CHECK=1 skip those steps (for a quick local run).
set -euo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)
phases=()
# phase NAME CMD...: run one step and record how long it took.
phase() {
  local name=$1 t0
  shift
  t0=$(date +%s)
  "$@"
  phases+=("$name|$(( $(date +%s) - t0 ))")
  echo "scripts/test.sh: $name in $(( $(date +%s) - t0 )) s"
}

phase "set-up (toolchain, assets)" scripts/setup.sh
phase "cargo build" cargo build --workspace --all-targets
phase "cargo test" cargo test --workspace "$@"

if [[ "${RAC_SKIP_NOTEBOOKS:-0}" != 1 ]]; then
  phase "notebook set-up (Jupyter, evcxr_jupyter)" scripts/notebook-setup.sh
  source scripts/notebook-env.sh
  phase "notebooks (headless, evcxr)" python tests/notebooks/run_notebooks.py --ci
  phase "browser check" tests/notebooks/browser-check.sh
fi

# The `cuda` feature must keep compiling: candle's CUDA kernels are built with nvcc from
# NVIDIA's PyPI wheels (no GPU needed).
if [[ "${RAC_SKIP_CUDA_CHECK:-0}" != 1 ]]; then
  phase "cuda check" scripts/cuda-env.sh --compile-only -- cargo check --workspace --all-targets --features rac-core/cuda,rac-benches/cuda
fi

echo "scripts/test.sh: phase times"
for p in "${phases[@]}"; do printf '  %-44s %6s s\n' "${p%|*}" "${p##*|}"; done
echo "scripts/test.sh: done in $(( $(date +%s) - start )) s"
