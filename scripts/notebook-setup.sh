#!/usr/bin/env bash
# Notebook set-up: JupyterLab (with plotly's renderer, so plots draw offline), the evcxr Rust
# kernel, and evcxr's compile cache. Everything lands under $RAC_HOME (default
# ~/.cache/rac); nothing is installed system-wide. Idempotent: a second run only checks.
#
#   $RAC_HOME/jupyter/venv      JupyterLab, nbclient, nbconvert, papermill, plotly
#   $RAC_HOME/tools/bin         evcxr_jupyter (cargo install, pinned, --locked)
#   $RAC_HOME/jupyter/evcxr     EVCXR_CONFIG_DIR: init.evcxr with `:cache 4096`
#
# Usage: scripts/notebook-setup.sh            then: source scripts/notebook-env.sh
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/notebook-env.sh

EVCXR_VERSION=0.22.0
PY_PACKAGES=(jupyterlab==4.6.6 jupyter_server==2.21.1 nbclient==0.11.0 nbconvert==7.17.2
  papermill==2.7.0 ipykernel plotly==7.1.0)

if [[ ! -x "$RAC_JUPYTER_VENV/bin/jupyter-lab" ]]; then
  echo "notebook-setup: creating the Jupyter venv" >&2
  python3 -m venv "$RAC_JUPYTER_VENV"
  "$RAC_JUPYTER_VENV/bin/pip" install -q --disable-pip-version-check "${PY_PACKAGES[@]}"
fi

# evcxr_jupyter has no --version; cargo install records what it installed in .crates.toml.
if [[ ! -x "$RAC_TOOLS/bin/evcxr_jupyter" ]] || ! grep -qs "\"evcxr_jupyter $EVCXR_VERSION " "$RAC_TOOLS/.crates.toml"; then
  echo "notebook-setup: building evcxr_jupyter $EVCXR_VERSION (about 4 min on 2 cores)" >&2
  # Its own target folder: evcxr's build must not share ours (different profile, locked deps).
  # opt-level 1: the kernel only parses cells and drives cargo; level 3 takes twice as long to build.
  CARGO_TARGET_DIR="$RAC_HOME/tools/target" CARGO_PROFILE_RELEASE_OPT_LEVEL=1 \
    cargo install -q --locked --root "$RAC_TOOLS" evcxr_jupyter --version "$EVCXR_VERSION"
  rm -rf "$RAC_HOME/tools/target"
fi

# The kernel spec goes into the venv's data folder (JUPYTER_DATA_DIR), so that only this
# Jupyter sees it; evcxr_jupyter --install rewrites it, which keeps it idempotent. Its
# command is then the launcher that gives each kernel a build folder that outlives it.
"$RAC_TOOLS/bin/evcxr_jupyter" --install >/dev/null
# The launcher and the notebooks' cargo settings are copied under $RAC_HOME, so the kernel
# does not depend on the checkout that last ran this (a deleted clone would break it).
install -m 755 scripts/evcxr-kernel.sh "$RAC_TOOLS/bin/rac-evcxr-kernel"
install -m 644 tests/notebooks/evcxr-cargo.toml "$RAC_TOOLS/bin/evcxr-cargo.toml"
spec="$JUPYTER_DATA_DIR/kernels/rust/kernel.json"
"$RAC_JUPYTER_VENV/bin/python" - "$spec" "$RAC_TOOLS/bin/rac-evcxr-kernel" <<'PY'
import json, sys
path, launcher = sys.argv[1], sys.argv[2]
spec = json.load(open(path))
spec["argv"] = ["bash", launcher] + spec["argv"][1:]
json.dump(spec, open(path, "w"), indent=2)
PY
mkdir -p "$EVCXR_CONFIG_DIR"
printf '%s\n' ':cache 4096' > "$EVCXR_CONFIG_DIR/init.evcxr"
# Compile the extension and everything under it now, once (a cold machine: about 20 min on
# 2 cores), so that the first notebook starts in seconds; later runs find it compiled.
"$RAC_JUPYTER_VENV/bin/python" tests/notebooks/run_notebooks.py --warm
# ... and keep that build as the template of every other slot, so that a second notebook
# open at the same time starts as fast as the first.
bash "$RAC_TOOLS/bin/rac-evcxr-kernel" --save-template
echo "notebook-setup: ready (kernel 'rust' in $JUPYTER_DATA_DIR/kernels/rust)" >&2
