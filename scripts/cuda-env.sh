#!/usr/bin/env bash
# A CUDA toolkit from PyPI, for `cargo build --features cuda` on a machine with no system
# CUDA. NVIDIA's CUDA 13.0 wheels (the newest a driver of the 580 series runs) are installed
# once into $RAC_HOME/cuda/ (default ~/.cache/rac), never into the repository.
#
# Usage:
#   scripts/cuda-env.sh [--compile-only] -- CMD ARGS...   run CMD with the variables set
#   eval "$(scripts/cuda-env.sh [--compile-only] --print)" set them in the current shell
#
# --compile-only installs the compiler, headers and runtime (enough for `cargo check
# --features cuda`, which runs candle's kernel build); the default adds cuBLAS, cuRAND and
# NVRTC, which linking needs. CUDA_COMPUTE_CAP picks the GPU generation the kernels are
# built for (default 90, Hopper; 80 for Ampere, 89 for Ada).
#
# What candle needs at build time, and how it is met here:
# - candle-kernels compiles its .cu files with nvcc (found on PATH) for CUDA_COMPUTE_CAP;
# - cudarc reads the CUDA version from `nvcc --version` and links libcuda, libcublas,
#   libcublasLt, libcurand and libnvrtc from $CUDA_ROOT/lib; candle-kernels links libcudart;
# - libcuda belongs to the driver and is in no wheel: a stub with the driver API's symbols
#   is made from cuda.h into $CUDA_ROOT/lib/stubs (link time only; the driver's own library
#   is loaded at run time).
set -euo pipefail

CUDA_SERIES=13.0
COMPILE_PINS=(
  nvidia-cuda-nvcc==13.0.88   # nvcc, ptxas, fatbinary, nvlink
  nvidia-nvvm==13.0.88        # cicc and libdevice
  nvidia-cuda-crt==13.0.88    # the crt/ headers nvcc includes
  nvidia-cuda-runtime==13.0.96 # cuda_runtime.h, libcudart
  nvidia-cuda-cccl==13.0.85   # libcu++ / CUB / Thrust headers
)
LINK_PINS=(
  nvidia-cublas==13.0.2.14
  nvidia-curand==10.4.0.35
  nvidia-cuda-nvrtc==13.0.88
)

set_name=full
print=0
while [[ $# -gt 0 ]]; do
  case "$1" in
    --compile-only) set_name=compile; shift ;;
    --print) print=1; shift ;;
    --) shift; break ;;
    -h|--help) sed -n '2,21p' "$0"; exit 0 ;;
    *) echo "cuda-env: unknown option '$1' (see --help)" >&2; exit 2 ;;
  esac
done
if [[ $print -eq 0 && $# -eq 0 ]]; then
  echo "cuda-env: give a command after '--', or --print (see --help)" >&2
  exit 2
fi

pins=("${COMPILE_PINS[@]}")
[[ $set_name == full ]] && pins+=("${LINK_PINS[@]}")
home="${RAC_HOME:-$HOME/.cache/rac}"
prefix="$home/cuda/cu$CUDA_SERIES-$set_name"
root="$prefix/nvidia/cu13"
stamp="$prefix/.pins"
log() { echo "cuda-env: $*" >&2; }

if [[ ! -f "$stamp" || "$(cat "$stamp")" != "${pins[*]}" ]]; then
  command -v python3 >/dev/null || { log "python3 with pip is needed to fetch the CUDA wheels"; exit 1; }
  command -v cc >/dev/null || { log "a C compiler (cc) is needed: nvcc uses it as host compiler"; exit 1; }
  log "installing CUDA $CUDA_SERIES wheels ($set_name) into $prefix"
  mkdir -p "$home/cuda"
  tmp="$(mktemp -d "$home/cuda/.install.XXXXXX")"
  trap 'rm -rf "$tmp"' EXIT
  python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore --no-deps --only-binary=:all: \
    --no-compile --target "$tmp" "${pins[@]}"
  troot="$tmp/nvidia/cu13"
  [[ -x "$troot/bin/nvcc" ]] || { log "the wheels did not provide $troot/bin/nvcc"; exit 1; }
  # Linkers look for the unversioned names.
  for lib in "$troot"/lib/lib*.so.*; do
    base="${lib##*/}"
    [[ -e "$troot/lib/${base%%.so.*}.so" ]] || ln -s "$base" "$troot/lib/${base%%.so.*}.so"
  done
  # The driver API stub: every cu* function that cuda.h declares (after its macros map the
  # names to the versioned symbols), as an empty function in a library named libcuda.so.1.
  mkdir -p "$troot/lib/stubs"
  cc -E -P -I "$troot/include" -x c - <<<'#include <cuda.h>' \
    | grep -oE '^[[:space:]]*CUresult[[:space:]]+cu[A-Za-z0-9_]+[[:space:]]*\(' \
    | sed -E 's/^[[:space:]]*CUresult[[:space:]]+(cu[A-Za-z0-9_]+).*/void \1(void) {}/' | sort -u \
    >"$troot/lib/stubs/libcuda_stub.c"
  [[ -s "$troot/lib/stubs/libcuda_stub.c" ]] || { log "found no driver functions in cuda.h"; exit 1; }
  cc -shared -fPIC -Wl,-soname,libcuda.so.1 -o "$troot/lib/stubs/libcuda.so" "$troot/lib/stubs/libcuda_stub.c"
  printf '%s' "${pins[*]}" >"$tmp/.pins"
  rm -rf "$prefix"
  mv "$tmp" "$prefix"
  trap - EXIT
  log "installed; nvcc: $("$root/bin/nvcc" --version | grep -o 'release [0-9.]*')"
fi

export CUDA_ROOT="$root" CUDA_PATH="$root" CUDA_HOME="$root" NVCC="$root/bin/nvcc"
export PATH="$root/bin:$PATH"
export LD_LIBRARY_PATH="$root/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export CUDA_COMPUTE_CAP="${CUDA_COMPUTE_CAP:-90}"
export CUDARC_CUDA_VERSION="${CUDA_SERIES/./0}0"

if [[ $print -eq 1 ]]; then
  for v in CUDA_ROOT CUDA_PATH CUDA_HOME NVCC PATH LD_LIBRARY_PATH CUDA_COMPUTE_CAP CUDARC_CUDA_VERSION; do
    printf 'export %s=%q\n' "$v" "${!v}"
  done
  exit 0
fi
exec "$@"
