#!/usr/bin/env bash
# The look in a real browser: serve the executed quickstart notebook with JupyterLab on
# localhost, open it in headless Chromium with every non-localhost request refused, and
# check that a plot rendered; the screenshot lands next to the executed notebook.
#
# Installs what it needs: Debian's chromium (apt-get) and playwright-core (npm), into the
# system and $RAC_HOME/browser. Usage: tests/notebooks/browser-check.sh [NOTEBOOK.ipynb]
set -euo pipefail
cd "$(dirname "$0")/../.."
source scripts/notebook-env.sh
nb="${1:-$RAC_HOME/notebook-runs/01-quickstart.ipynb}"
[[ -f "$nb" ]] || { echo "browser-check: no executed notebook at $nb (run tests/notebooks/run_notebooks.py first)" >&2; exit 1; }

as_root() { if [[ $(id -u) -eq 0 ]]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else return 1; fi; }
if ! command -v chromium >/dev/null; then
  echo "browser-check: installing Debian's chromium" >&2
  as_root apt-get install -y -qq chromium >/dev/null || { as_root apt-get update -qq && as_root apt-get install -y -qq chromium >/dev/null; }
fi
command -v node >/dev/null || as_root apt-get install -y -qq nodejs npm >/dev/null
bdir="$RAC_HOME/browser"
if [[ ! -d "$bdir/node_modules/playwright-core" ]]; then
  mkdir -p "$bdir"
  (cd "$bdir" && npm install --silent --no-audit --no-fund playwright-core@1.64.1 >/dev/null)
fi
cp tests/notebooks/browser_check.mjs "$bdir/"

dir=$(cd "$(dirname "$nb")" && pwd); name=$(basename "$nb")
jupyter trust "$nb" >/dev/null 2>&1 || true
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
token=$(python3 -c 'import secrets; print(secrets.token_hex(8))')
log="$dir/jupyterlab.log"
root_flag=(); [[ $(id -u) -eq 0 ]] && root_flag=(--allow-root)
jupyter lab "${root_flag[@]}" --no-browser --ip=127.0.0.1 --port="$port" --IdentityProvider.token="$token" \
  --ServerApp.root_dir="$dir" --LabApp.news_url=None --LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate \
  >"$log" 2>&1 &
server=$!
trap 'kill $server 2>/dev/null || true' EXIT
up=0
for _ in $(seq 90); do curl -sf "http://127.0.0.1:$port/api/status?token=$token" >/dev/null && { up=1; break; }; sleep 1; done
[[ $up == 1 ]] || { echo "browser-check: JupyterLab did not start; its log:" >&2; tail -20 "$log" >&2; exit 1; }
shot="$dir/${name%.ipynb}-browser.png"
CHROMIUM="$(command -v chromium)" node "$bdir/browser_check.mjs" "http://127.0.0.1:$port/lab/tree/$name?token=$token" "$shot"
echo "browser-check: screenshot $shot"
