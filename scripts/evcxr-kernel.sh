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
# A slot used for the first time (a second notebook open beside the first) starts as a copy
# of the template: slot 0's build folder as the set-up's warm-up left it, saved by
# `evcxr-kernel.sh --save-template`. Cargo's fingerprints of the copied crates do not depend
# on the folder they sit in, so the new kernel compiles only what changed since (nothing,
# or rac-core and the extension after an edit), not the path crates from scratch.
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
template="$base/template"
if [[ "${1:-}" == --save-template ]]; then
  # Slot 0 is copied while no kernel uses it, into a new folder swapped in whole, so a
  # kernel that copies the template meanwhile never sees half of it.
  mkdir -p "$base/slot-0/build"
  exec {lock}>"$base/slot-0/lock"
  flock -w 3600 "$lock"
  rm -rf "$template.new" "$template.old"
  mkdir -p "$template.new"
  cp -a "$base/slot-0/build" "$template.new/build"
  [[ -d "$template" ]] && mv "$template" "$template.old"
  mv "$template.new" "$template"
  rm -rf "$template.old"
  echo "evcxr-kernel.sh: slot 0's build saved as the template for new slots ($(du -sh "$template" | cut -f1))" >&2
  exit 0
fi
if [[ -n "${RAC_EVCXR_SLOT:-}" ]]; then slots=("$RAC_EVCXR_SLOT"); wait_for=(-w 3600); else slots=($(seq 0 15)); wait_for=(-n); fi
for n in "${slots[@]}"; do
  slot="$base/slot-$n"
  mkdir -p "$slot/build" "$slot/.cargo"
  exec {lock}>"$slot/lock"
  if flock "${wait_for[@]}" "$lock"; then
    # The lock stays held by this process (and the kernel it becomes) until it exits.
    cp "$settings" "$slot/.cargo/config.toml"
    if [[ -z "$(ls -A "$slot/build")" && -d "$template/build" ]]; then
      cp -a "$template/build/." "$slot/build/"
    fi
    export EVCXR_TMPDIR="$slot/build"
    exec "$evcxr" "$@"
  fi
  exec {lock}>&-
done
echo "evcxr-kernel.sh: no free build slot (${slots[*]}) under $base" >&2
exit 1
