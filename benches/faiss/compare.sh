#!/usr/bin/env bash
# The FAISS reference comparison (run by hand, not in CI).
#
# Exports the synthetic 100k x 768 set once, runs `rac index bench` and FAISS
# (IndexFlatIP, IndexHNSWFlat M=32) on the same .npy files, and prints both tables
# side by side with the ratios.
#
#   benches/faiss/compare.sh [WORK_DIR]        (default: target/faiss-compare)
#
# FAISS comes from the PyPI packages faiss-cpu and numpy, installed into a venv of its own
# under WORK_DIR. Extra arguments for our bench can be passed in RAC_BENCH_ARGS.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
work="${1:-$root/target/faiss-compare}"
mkdir -p "$work"
venv="$work/venv"
if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet faiss-cpu numpy
fi
cd "$root"
cargo build --release --bin rac
rac="$root/target/release/rac"
if [ ! -f "$work/data/base.npy" ]; then
    "$rac" index synth --out "$work/data"
fi
# shellcheck disable=SC2086
"$rac" index bench --npy "$work/data" --json ${RAC_BENCH_ARGS:-} > "$work/ours.json"
"$venv/bin/python" "$root/benches/faiss/faiss_bench.py" --npy "$work/data" --json "$work/faiss.json"
"$venv/bin/python" "$root/benches/faiss/faiss_bench.py" --compare "$work/ours.json" "$work/faiss.json"
