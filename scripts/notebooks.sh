#!/usr/bin/env bash
# Open JupyterLab on notebooks/ with the evcxr Rust kernel. Runs the set-up first (assets,
# JupyterLab, evcxr_jupyter, the kernel); both steps are idempotent, so later starts are quick.
# Extra arguments go to `jupyter lab` (e.g. --no-browser --port 8890).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
scripts/notebook-setup.sh
source scripts/notebook-env.sh
exec jupyter lab --notebook-dir=notebooks "$@"
