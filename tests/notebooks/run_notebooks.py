#!/usr/bin/env python3
"""Execute the notebooks headless on the evcxr Rust kernel, in a real Jupyter kernel
(nbclient), and check what each cell produced.

  run_notebooks.py [--ci] [--write] [NAME ...]

--ci     inject the small parameter values of ci-params.json after each notebook's
         `parameters` cell (papermill's convention: an `injected-parameters` cell), so the
         run is short; the committed defaults stay the real ones.
--write  write the executed notebooks back into notebooks/ (what is committed); otherwise
         they go to $RAC_HOME/notebook-runs/.

A notebook passes when no cell errors (except cells tagged `raises-exception`), every cell
tagged `table` produced text/html, every cell tagged `plot` produced the plotly bundle
(application/vnd.plotly.v1+json) and the static fallback (image/svg+xml), and every cell
tagged `error-demo` shows the project's error message (`error-message` in its metadata).
"""
import argparse
import json
import re
import os
import sys
import tempfile
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = ROOT / "notebooks"
HERE = Path(__file__).resolve().parent


def inject(nb, params):
    """Insert an injected-parameters cell after the parameters cell."""
    idx = next((i for i, c in enumerate(nb.cells) if "parameters" in c.get("metadata", {}).get("tags", [])), None)
    if idx is None:
        raise SystemExit("notebook has no cell tagged `parameters`")
    # Keep each parameter's declared type (`let k: usize = 30;`): a bare literal would be i32.
    declared = dict(re.findall(r"^let\s+(\w+)\s*(:\s*[^=]+?)?\s*=", nb.cells[idx].source, re.M))
    for k in params:
        if k not in declared:
            raise SystemExit(f"ci-params: `{k}` is not a parameter of this notebook")
    src = "// Parameters injected for a short run.\n" + "\n".join(f"let {k}{declared[k]} = {v};" for k, v in params.items())
    cell = nbformat.v4.new_code_cell(src)
    cell.metadata["tags"] = ["injected-parameters"]
    cell.pop("id", None)
    nb.cells.insert(idx + 1, cell)


def outputs_data(cell):
    data = {}
    for o in cell.get("outputs", []):
        data.update(o.get("data", {}))
    return data


def text_of(cell):
    parts = []
    for o in cell.get("outputs", []):
        if o.get("output_type") == "stream":
            parts.append(o.get("text", ""))
        elif o.get("output_type") == "error":
            parts.append(o.get("evalue", "") + "\n" + "\n".join(o.get("traceback", [])))
        else:
            parts.append(o.get("data", {}).get("text/plain", ""))
    return "".join(p if isinstance(p, str) else "".join(p) for p in parts)


def check(nb):
    problems = []
    counts = {"table": 0, "plot": 0, "error-demo": 0}
    for i, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        tags = cell.get("metadata", {}).get("tags", [])
        errors = [o for o in cell.get("outputs", []) if o.get("output_type") == "error"]
        data = outputs_data(cell)
        where = f"cell {i} ({cell.source.splitlines()[0][:60] if cell.source else ''})"
        if errors and "raises-exception" not in tags:
            problems.append(f"{where}: error {errors[0].get('ename')}: {errors[0].get('evalue')}")
        if "table" in tags:
            counts["table"] += 1
            if "text/html" not in data:
                problems.append(f"{where}: tagged table but produced no text/html (got {sorted(data)})")
        if "plot" in tags:
            counts["plot"] += 1
            for mime in ("application/vnd.plotly.v1+json", "image/svg+xml"):
                if mime not in data:
                    problems.append(f"{where}: tagged plot but produced no {mime} (got {sorted(data)})")
        if "error-demo" in tags:
            counts["error-demo"] += 1
            want = cell.metadata.get("error-message", "")
            got = text_of(cell)
            if not want or want not in got:
                problems.append(f"{where}: expected the error message {want!r}, got {got[-300:]!r}")
            if "panicked" in got:
                problems.append(f"{where}: the error cell panicked instead of returning the error")
    return problems, counts


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ci", action="store_true")
    ap.add_argument("--write", action="store_true")
    ap.add_argument("--timeout", type=int, default=3600)
    ap.add_argument("names", nargs="*")
    args = ap.parse_args()
    params = json.loads((HERE / "ci-params.json").read_text()) if args.ci else {}
    # The notebooks run one after another, so their kernels can share one evcxr build
    # folder: the extension and rac-core (path crates, which `:cache` does not keep) are
    # then compiled once, not once per notebook. Two kernels at once must not share it.
    # It lives in the system's temporary folder: evcxr loads each compiled cell with dlopen,
    # which fails from a folder on a filesystem mounted without exec rights.
    # Cargo reads evcxr-cargo.toml as the config of a parent folder of evcxr's crate: it
    # builds polars' table code at opt-level 1, as the workspace does.
    home = Path(os.environ.get("RAC_HOME", Path.home() / ".cache/rac"))
    base = Path(tempfile.gettempdir()) / f"rac-evcxr-{os.getuid()}"
    os.environ.setdefault("EVCXR_TMPDIR", str(base / "build"))
    Path(os.environ["EVCXR_TMPDIR"]).mkdir(parents=True, exist_ok=True)
    config = Path(os.environ["EVCXR_TMPDIR"]).parent / ".cargo" / "config.toml"
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text((HERE / "evcxr-cargo.toml").read_text())
    names = args.names or sorted(p.stem for p in NOTEBOOKS.glob("*.ipynb"))
    out_dir = NOTEBOOKS if args.write else home / "notebook-runs"
    out_dir.mkdir(parents=True, exist_ok=True)
    failed, summary = [], []
    total_start = time.time()
    for name in names:
        path = NOTEBOOKS / f"{name.removesuffix('.ipynb')}.ipynb"
        nb = nbformat.read(path, as_version=4)
        if args.ci and path.stem in params:
            inject(nb, params[path.stem])
        start = time.time()
        client = NotebookClient(nb, kernel_name="rust", timeout=args.timeout, resources={"metadata": {"path": str(NOTEBOOKS)}})
        error = None
        try:
            client.execute()
        except CellExecutionError as e:
            error = str(e).splitlines()[-1] if str(e) else repr(e)
        except Exception as e:  # a dead kernel, a timeout
            error = f"{type(e).__name__}: {e}"
        secs = time.time() - start
        problems, counts = check(nb)
        if error:
            problems.insert(0, f"execution stopped: {error}")
        nbformat.write(nb, out_dir / path.name)
        status = "ok" if not problems else "FAILED"
        print(f"{path.name}: {status} in {secs:.0f} s ({counts['table']} tables, {counts['plot']} plots)", flush=True)
        for p in problems:
            print(f"  - {p}", flush=True)
        summary.append({"notebook": path.name, "ok": not problems, "seconds": round(secs, 1), **counts})
        if problems:
            failed.append(path.name)
    total = time.time() - total_start
    print(f"notebooks: {len(names) - len(failed)}/{len(names)} passed in {total:.0f} s; executed copies in {out_dir}")
    (out_dir / "summary.json").write_text(json.dumps({"seconds": round(total, 1), "notebooks": summary}, indent=1))
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
