#!/usr/bin/env bash
# The test command: the workspace build, set-up (toolchain checks, asset fetch), rustfmt and
# clippy (warnings are errors), every test of the workspace,
# the nine notebooks executed headless on the evcxr kernel and their tables verified against
# tests/notebooks/expected-ci.json, the browser check of the
# executed quickstart, and a lint-clean compile of the `cuda` feature (beside the notebooks).
# Each phase's time is printed as it ends and again, as a table, at the end of the run.
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

# The `cuda` feature must keep compiling, lint-clean: candle's CUDA kernels are built with
# nvcc from NVIDIA's PyPI wheels (no GPU needed). Clippy checks as `cargo check` does and
# reuses the checked dependencies of the lint step above; candle's crates are checked again
# and its kernels compiled (about 8 CPU-min of nvcc). While the notebooks run, one core is
# mostly idle (evcxr compiles and links one cell at a time), so the check runs beside them,
# into its own log, and the run waits for it and fails with it.
cuda_check() {
  scripts/cuda-env.sh --compile-only -- \
    cargo clippy --workspace --all-targets --features rac-core/cuda,rac-benches/cuda -- -D warnings
}
cuda_pid=
if [[ "${RAC_SKIP_CUDA_CHECK:-0}" != 1 && "${RAC_SKIP_NOTEBOOKS:-0}" != 1 ]]; then
  cuda_log="$(mktemp -t rac-cuda-check.XXXXXX)"
  cuda_t0=$(date +%s)
  ( set +e; cuda_check >"$cuda_log" 2>&1; echo $? >"$cuda_log.rc"; echo $(( $(date +%s) - cuda_t0 )) >"$cuda_log.secs" ) &
  cuda_pid=$!
  # A run that stops early takes the check (cargo, rustc, nvcc) down with it.
  kill_tree() { local c; for c in $(pgrep -P "$1" 2>/dev/null); do kill_tree "$c"; done; kill "$1" 2>/dev/null || true; }
  trap '[[ -n "$cuda_pid" ]] && kill_tree "$cuda_pid"; true' EXIT
  echo "scripts/test.sh: cuda check started beside the notebooks (log: $cuda_log)"
fi

if [[ "${RAC_SKIP_NOTEBOOKS:-0}" != 1 ]]; then
  phase "notebook set-up (Jupyter, evcxr_jupyter)" scripts/notebook-setup.sh
  source scripts/notebook-env.sh
  phase "notebooks (headless, evcxr, verified)" python tests/notebooks/run_notebooks.py --ci --verify
  phase "browser check" tests/notebooks/browser-check.sh
fi

if [[ -n "$cuda_pid" ]]; then
  phase "waiting for the cuda check" wait "$cuda_pid" || true
  cuda_pid=
  cat "$cuda_log"
  phases+=("cuda check (clippy, beside the notebooks)|$(cat "$cuda_log.secs")")
  rc="$(cat "$cuda_log.rc")"
  rm -f "$cuda_log" "$cuda_log.rc" "$cuda_log.secs"
  if [[ "$rc" != 0 ]]; then
    echo "scripts/test.sh: the cuda check failed (exit $rc)" >&2
    exit "$rc"
  fi
elif [[ "${RAC_SKIP_CUDA_CHECK:-0}" != 1 ]]; then
  phase "cuda check (clippy)" cuda_check
fi

echo "scripts/test.sh: phase times"
for p in "${phases[@]}"; do printf '  %-44s %6s s\n' "${p%|*}" "${p##*|}"; done
echo "scripts/test.sh: done in $(( $(date +%s) - start )) s"
