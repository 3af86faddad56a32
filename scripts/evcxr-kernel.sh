#!/usr/bin/env bash
# The Rust kernel's launcher (scripts/notebook-setup.sh installs it as
# $RAC_TOOLS/bin/rac-evcxr-kernel, which the kernel spec runs): evcxr_jupyter with a build
# folder that outlives the kernel.
#
# evcxr compiles a notebook's dependencies in its build folder. Crates from the registry also
# go to its `:cache`, but path crates (rac-core, rac-kernel-ext: most of the compile time)
# do not, so a kernel with a new folder compiles them again (minutes). Each kernel here takes
# the first free slot folder, locked for its lifetime (two kernels in one folder would
# overwrite each other's cell source), so a new kernel finds the last one's build there.
#
# The slots live in the system's temporary folder: evcxr loads each compiled cell with
# dlopen, which fails from a filesystem mounted without exec rights. Cargo reads
# tests/notebooks/evcxr-cargo.toml (copied into a parent folder of evcxr's crate) for the
# notebooks' per-crate opt-levels.
#
# RAC_EVCXR_SLOT=N takes slot N, waiting for it if a kernel holds it (the headless runner
# runs its notebooks one after another in slot 0, and the set-up's warm-up fills it).
set -euo pipefail
# The cargo settings: beside this script where the set-up installed it, else the checkout's.
here="$(cd "$(dirname "$0")" && pwd)"
settings="$here/evcxr-cargo.toml"
[[ -f "$settings" ]] || settings="$here/../tests/notebooks/evcxr-cargo.toml"
base="${TMPDIR:-/tmp}/rac-evcxr-$(id -u)"
evcxr="${RAC_TOOLS:+$RAC_TOOLS/bin/}evcxr_jupyter"
if [[ -n "${RAC_EVCXR_SLOT:-}" ]]; then slots=("$RAC_EVCXR_SLOT"); wait_for=(-w 3600); else slots=($(seq 0 15)); wait_for=(-n); fi
for n in "${slots[@]}"; do
  slot="$base/slot-$n"
  mkdir -p "$slot/build" "$slot/.cargo"
  exec {lock}>"$slot/lock"
  if flock "${wait_for[@]}" "$lock"; then
    # The lock stays held by this process (and the kernel it becomes) until it exits.
    cp "$settings" "$slot/.cargo/config.toml"
    export EVCXR_TMPDIR="$slot/build"
    exec "$evcxr" "$@"
  fi
  exec {lock}>&-
done
echo "evcxr-kernel.sh: no free build slot (${slots[*]}) under $base" >&2
exit 1
