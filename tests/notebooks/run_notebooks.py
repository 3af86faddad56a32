#!/usr/bin/env python3
"""Execute the notebooks headless on the evcxr Rust kernel, in a real Jupyter kernel
(nbclient), and check what each cell produced.

  run_notebooks.py [--ci] [--write] [--verify] [--write-expected] [NAME ...]
  run_notebooks.py --warm

--ci      inject the small parameter values of ci-params.json after each notebook's
          `parameters` cell (papermill's convention: an `injected-parameters` cell), so the
          run is short; the committed defaults stay the real ones.
--write   write the executed notebooks back into notebooks/ (what is committed); otherwise
          they go to $RAC_HOME/notebook-runs/.
--verify  the reproducibility check, in the spirit of nbval: run with a fresh runs folder
          (every run trains again; the feature and index caches stay, being keyed by what
          they hold) and compare every table the notebook shows, cell by cell and value by
          value as displayed, with the expected one: the committed notebook's outputs, or
          with --ci the tables in expected-ci.json. Each table is identical, within
          tolerance (accuracies within --points percentage points, default 0.1; other
          numbers within --relative, default 1e-6; another CPU's kernels round differently)
          or different; only a difference beyond tolerance fails the notebook, and each is
          printed with its cell, table, row, column and both values (tables.py). The provenance table (revision, date) is not compared, nor
          cells tagged `verify-skip`, nor the columns a cell's `verify-ignore-columns`
          metadata lists (timings, sizes on disk).
--write-expected  with --ci: store this run's tables in expected-ci.json.
--warm    compile the notebooks' first cell (the extension and all under it) and exit.

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
sys.path.insert(0, str(HERE))
from tables import DEFAULT_POINTS, DEFAULT_RELATIVE, compare, notebook_tables  # noqa: E402


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


def collapse_carriage_returns(nb):
    """Keep what a terminal shows of each stream line (the text after its last carriage
    return): a progress bar redrawn in place is saved as its last state, as Jupyter shows it."""
    for cell in nb.cells:
        for o in cell.get("outputs", []):
            if o.get("output_type") == "stream":
                text = o.get("text", "")
                text = text if isinstance(text, str) else "".join(text)
                o["text"] = "\n".join(line.rsplit("\r", 1)[-1].rstrip() for line in text.split("\n"))


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
        # Progress and errors print on stdout in the cell they belong to (see rac-kernel-ext's
        # notebook module); text on stderr would be a pink box under the cell, or a late one.
        stderr = [o for o in cell.get("outputs", []) if o.get("output_type") == "stream" and o.get("name") == "stderr"]
        if stderr:
            problems.append(f"{where}: printed on stderr: {''.join(stderr[0].get('text', ''))[:200]!r}")
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


def warm():
    """Compile what every notebook's first cell loads, into the build slot the first
    notebook will use and evcxr's cache: the set-up's last step, so that a newcomer's first
    notebook starts in seconds rather than after a half-hour compile."""
    nb = nbformat.read(NOTEBOOKS / "01-quickstart.ipynb", as_version=4)
    first = next(c for c in nb.cells if c.cell_type == "code")
    warm_nb = nbformat.v4.new_notebook()
    warm_nb.cells = [nbformat.v4.new_code_cell(first.source)]
    start = time.time()
    client = NotebookClient(warm_nb, kernel_name="rust", timeout=7200, resources={"metadata": {"path": str(NOTEBOOKS)}})
    try:
        client.execute()
    except Exception as e:  # a compile error, a dead kernel
        print(f"warm-up failed: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    print(f"notebook kernel warm: `{first.source.splitlines()[0]}` compiled in {time.time() - start:.0f} s", flush=True)
    return 0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ci", action="store_true")
    ap.add_argument("--write", action="store_true")
    ap.add_argument("--verify", action="store_true")
    ap.add_argument("--write-expected", action="store_true")
    ap.add_argument("--warm", action="store_true")
    ap.add_argument("--timeout", type=int, default=3600)
    ap.add_argument("--points", type=float, default=DEFAULT_POINTS, help="--verify: tolerance of accuracy columns, in points")
    ap.add_argument("--relative", type=float, default=DEFAULT_RELATIVE, help="--verify: relative tolerance of other numbers")
    ap.add_argument("names", nargs="*")
    args = ap.parse_args()
    params = json.loads((HERE / "ci-params.json").read_text()) if args.ci else {}
    # The notebooks run one after another in one build slot of the kernel launcher
    # (scripts/evcxr-kernel.sh), so the extension and rac-core (path crates, which evcxr's
    # `:cache` does not keep) are compiled once, not once per notebook.
    os.environ.setdefault("RAC_EVCXR_SLOT", "0")
    home = Path(os.environ.get("RAC_HOME", Path.home() / ".cache/rac"))
    if args.warm:
        sys.exit(warm())
    names = args.names or sorted(p.stem for p in NOTEBOOKS.glob("*.ipynb"))
    out_dir = NOTEBOOKS if args.write else home / "notebook-runs"
    out_dir.mkdir(parents=True, exist_ok=True)
    expected_ci_path = HERE / "expected-ci.json"
    expected_ci = json.loads(expected_ci_path.read_text()) if expected_ci_path.exists() else {}
    fresh_runs = Path(tempfile.mkdtemp(prefix="rac-verify-runs-")) if args.verify else None
    failed, summary, executed = [], [], []
    total_start = time.time()
    for name in names:
        path = NOTEBOOKS / f"{name.removesuffix('.ipynb')}.ipynb"
        nb = nbformat.read(path, as_version=4)
        expected = expected_ci.get(path.stem) if args.ci else notebook_tables(nb)
        run_params = dict(params.get(path.stem, {})) if args.ci else {}
        if fresh_runs is not None:
            run_params["runs_dir"] = json.dumps(str(fresh_runs / path.stem))
        if run_params:
            inject(nb, run_params)
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
        collapse_carriage_returns(nb)
        problems, counts = check(nb)
        notes = []
        if error:
            problems.insert(0, f"execution stopped: {error}")
        if args.verify and not error:
            if expected is None:
                problems.append("no expected tables (run once with --ci --write-expected)")
            else:
                diffs, verdicts = compare(expected, notebook_tables(nb), args.points, args.relative)
                counts["verified"] = sum(len(v["tables"]) for v in expected.values())
                counts["within tolerance"] = sum("within tolerance" in v for v in verdicts)
                problems.extend(f"differs: {d}" for d in diffs)
                notes.extend(v for v in verdicts if "within tolerance" in v)
        if args.write_expected and not error:
            expected_ci[path.stem] = notebook_tables(nb)
        # Written after the last one: a notebook written into the checkout would make the
        # next one's provenance report a dirty tree.
        executed.append((nb, out_dir / path.name))
        status = "ok" if not problems else "FAILED"
        verified = f", {counts['verified']} tables verified" if "verified" in counts else ""
        if counts.get("within tolerance"):
            verified += f" ({counts['within tolerance']} within tolerance)"
        print(f"{path.name}: {status} in {secs:.0f} s ({counts['table']} tables, {counts['plot']} plots{verified})", flush=True)
        for p in problems:
            print(f"  - {p}", flush=True)
        for n in notes:
            print(f"  . {n}", flush=True)
        summary.append({"notebook": path.name, "ok": not problems, "seconds": round(secs, 1), **counts})
        if problems:
            failed.append(path.name)
    for nb, target in executed:
        nbformat.write(nb, target)
    if args.write_expected:
        expected_ci_path.write_text(json.dumps(expected_ci, indent=1, ensure_ascii=False) + "\n")
    total = time.time() - total_start
    print(f"notebooks: {len(names) - len(failed)}/{len(names)} passed in {total:.0f} s; executed copies in {out_dir}")
    (out_dir / "summary.json").write_text(json.dumps({"seconds": round(total, 1), "notebooks": summary}, indent=1))
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
