#!/usr/bin/env bash
# The FAISS reference comparison (run by hand, not in CI).
#
# Exports the synthetic 100k x 768 set once (another size with RAC_SYNTH_ARGS), runs `rac index bench` and FAISS
# (IndexFlatIP, IndexHNSWFlat M=32) -- and, as a second reference, USearch's own Python
# wheel -- on the same .npy files, and prints both tables side by side with the ratios and
# the machine's load average before each side (a loaded machine collapses FAISS's OpenMP
# threads: run it on a quiet machine).
#
#   benches/faiss/compare.sh [WORK_DIR]        (default: target/faiss-compare)
#
# FAISS comes from the PyPI packages faiss-cpu, usearch and numpy, installed into a venv of
# its own under WORK_DIR. Both sides use RAC_THREADS threads (default 2). Extra arguments
# for our bench: RAC_BENCH_ARGS; for `rac index synth` (another size): RAC_SYNTH_ARGS;
# RAC_USEARCH_WHEEL=0 leaves the usearch wheel out (at 1M it adds a build of its own).
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
work="${1:-$root/target/faiss-compare}"
threads="${RAC_THREADS:-2}"
mkdir -p "$work"
venv="$work/venv"
if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv"
fi
"$venv/bin/python" -c "import faiss, usearch, numpy" 2>/dev/null || "$venv/bin/pip" install --quiet faiss-cpu usearch numpy
cd "$root"
cargo build --release --bin rac
rac="${CARGO_TARGET_DIR:-$root/target}/release/rac"
if [ ! -f "$work/data/base.npy" ]; then
    # shellcheck disable=SC2086
    "$rac" index synth --out "$work/data" ${RAC_SYNTH_ARGS:-}
fi
load_ours="$(cut -d' ' -f1-3 /proc/loadavg)"
# shellcheck disable=SC2086
RAYON_NUM_THREADS="$threads" "$rac" index bench --npy "$work/data" --json ${RAC_BENCH_ARGS:-} > "$work/ours.json"
load_faiss="$(cut -d' ' -f1-3 /proc/loadavg)"
wheel="--usearch-wheel"
[ "${RAC_USEARCH_WHEEL:-1}" = 0 ] && wheel=""
# shellcheck disable=SC2086
OMP_NUM_THREADS="$threads" "$venv/bin/python" "$root/benches/faiss/faiss_bench.py" --npy "$work/data" --json "$work/faiss.json" $wheel
"$venv/bin/python" "$root/benches/faiss/faiss_bench.py" --compare "$work/ours.json" "$work/faiss.json" \
    --load "ours: $load_ours; reference: $load_faiss"
