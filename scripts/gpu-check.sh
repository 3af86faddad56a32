#!/usr/bin/env bash
# The GPU check, on a machine with an NVIDIA GPU (driver 580 / CUDA 13.0 or newer): CPU/CUDA
# agreement of the losses, the fusion, MiniLM and EfficientNet-Lite0 (f32, 1e-4), and RAC
# training throughput with a ViT-B/16 base branch (f32, bf16), beside PyTorch eager when
# python3 has torch. Prints one table; exits non-zero when no GPU is found or an item
# disagrees. Takes a few minutes.
#
# Build the binaries where the toolkit is (no GPU needed there):
#   scripts/cuda-env.sh -- cargo build --release --features cuda -p rac-benches --bin gpu_check
# then, on the GPU machine, from the repository root:
#   scripts/gpu-check.sh [gpu_check args...]      (GPU_CHECK_BIN overrides the binary)
#   scripts/gpu-check.sh --breakdown               (also the ms of each phase of a step)
# A kernel profile of one bf16 step (Nsight Compute; GPU_CHECK_PROFILER is put before the
# binary):
#   GPU_CHECK_PROFILER="ncu --clock-control none --metrics gpu__time_duration.sum --csv --log-file ncu.csv" \
#     scripts/gpu-check.sh --profile bf16 && python3 benches/gpu/kernel_summary.py ncu.csv
#
# The binary links the CUDA 13 libraries (cudart, cuBLAS, cuRAND, NVRTC) by name; they are
# looked up in $RAC_HOME/cuda (scripts/cuda-env.sh), in python3's nvidia wheels (PyTorch's),
# then in the system's library path. The driver's libcuda comes from the system.
set -euo pipefail
cd "$(dirname "$0")/.."

bin="${GPU_CHECK_BIN:-target/release/gpu_check}"
[[ -x "$bin" ]] || { echo "gpu-check: $bin not found; build it with --features cuda (see the top of this script)" >&2; exit 1; }
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true

dirs=()
home="${RAC_HOME:-$HOME/.cache/rac}"
for d in "$home"/cuda/cu13.0-full/nvidia/cu13/lib /usr/local/cuda/lib64; do [[ -d "$d" ]] && dirs+=("$d"); done
if command -v python3 >/dev/null; then
  while IFS= read -r d; do [[ -n "$d" ]] && dirs+=("$d"); done < <(python3 - <<'EOF' 2>/dev/null || true
import glob, os, site
roots = site.getsitepackages() + [site.getusersitepackages()]
for r in roots:
    for d in sorted(glob.glob(os.path.join(r, "nvidia", "*", "lib"))):
        print(d)
EOF
)
fi
for d in "${dirs[@]}"; do LD_LIBRARY_PATH="$d${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"; done
export LD_LIBRARY_PATH="${LD_LIBRARY_PATH:-}"

missing=$(ldd "$bin" | grep 'not found' || true)
if [[ -n "$missing" ]]; then
  echo "gpu-check: libraries not found for $bin:" >&2
  echo "$missing" >&2
  echo "gpu-check: install CUDA 13 runtime libraries (scripts/cuda-env.sh, or PyTorch's nvidia wheels)" >&2
  exit 1
fi
# shellcheck disable=SC2086 # the profiler's command line is split into words on purpose
exec timeout 290 ${GPU_CHECK_PROFILER:-} "$bin" "$@"
