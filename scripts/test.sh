#!/usr/bin/env bash
# The test command: the workspace build, set-up (toolchain checks, asset fetch), rustfmt and
# clippy (warnings are errors), every test of the workspace,
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

for tool in fmt clippy; do
  cargo "$tool" --version >/dev/null 2>&1 || { echo "scripts/test.sh: cargo $tool is required (rustup component add ${tool/fmt/rustfmt})" >&2; exit 1; }
done
target="${CARGO_TARGET_DIR:-$PWD/target}"
# The whole workspace is built once, before the set-up, whose asset fetch then runs that
# build's `rac` (a `cargo run` would resolve other features and build much of it again).
phase "cargo build" cargo build --workspace --all-targets
phase "set-up (toolchain, assets)" env RAC_BIN="$target/debug/rac" scripts/setup.sh
phase "cargo fmt --check" cargo fmt --all --check
phase "cargo clippy" cargo clippy --workspace --all-targets -- -D warnings
phase "cargo test" cargo test --workspace "$@"

if [[ "${RAC_SKIP_NOTEBOOKS:-0}" != 1 ]]; then
  phase "notebook set-up (Jupyter, evcxr_jupyter)" scripts/notebook-setup.sh
  source scripts/notebook-env.sh
  phase "notebooks (headless, evcxr)" python tests/notebooks/run_notebooks.py --ci
  phase "browser check" tests/notebooks/browser-check.sh
fi

# The `cuda` feature must keep compiling, lint-clean: candle's CUDA kernels are built with
# nvcc from NVIDIA's PyPI wheels (no GPU needed). Clippy checks as `cargo check` does and
# reuses the checked dependencies of the lint step above; only candle's are checked again.
if [[ "${RAC_SKIP_CUDA_CHECK:-0}" != 1 ]]; then
  phase "cuda check (clippy)" scripts/cuda-env.sh --compile-only -- \
    cargo clippy --workspace --all-targets --features rac-core/cuda,rac-benches/cuda -- -D warnings
fi

echo "scripts/test.sh: phase times"
for p in "${phases[@]}"; do printf '  %-44s %6s s\n' "${p%|*}" "${p##*|}"; done
echo "scripts/test.sh: done in $(( $(date +%s) - start )) s"
