#!/usr/bin/env python3
"""The tables a notebook shows, and how two runs' tables agree (standard library only, so
that the cargo tests can run it before any Jupyter is installed).

  tables.py EXPECTED.ipynb GOT.ipynb [--points 0.1] [--relative 1e-6]

Each table is reported as identical, within tolerance (with its largest difference), or
different (each cell beyond tolerance: cell, table, row, column, both values); the exit
status is 1 only when a difference is beyond tolerance. Accuracies (percent columns:
top1, top5, many, medium, few, acc...) may differ by `--points` percentage points; other
numbers by `--relative` of their size; text must be equal. Kernels that dispatch on CPU
features (gemm, pulp) round differently on another CPU, so two machines may disagree in
the last digit where one machine always agrees with itself, bit for bit.
"""
import argparse
import html.parser
import json
import sys

# Columns of percentages: a difference in them is measured in points.
PERCENT_COLUMNS = {"top1", "top5", "many", "medium", "few", "accuracy", "acc", "retrieval", "base", "fused", "rac"}
DEFAULT_POINTS = 0.1
DEFAULT_RELATIVE = 1e-6


class Tables(html.parser.HTMLParser):
    """The tables of an HTML output as rows of cell texts, leaving out the provenance table."""

    def __init__(self):
        super().__init__()
        self.tables, self.row, self.cell, self.skip = [], None, None, 0

    def handle_starttag(self, tag, attrs):
        if self.skip or (tag == "div" and "rac-provenance" in (dict(attrs).get("class") or "")):
            self.skip += tag == "div"
            return
        if tag == "table":
            self.tables.append([])
        elif tag == "tr" and self.tables:
            self.row = []
        elif tag in ("td", "th") and self.row is not None:
            self.cell = []
        elif tag == "br" and self.cell is not None:
            self.cell.append(" ")

    def handle_endtag(self, tag):
        if self.skip:
            self.skip -= tag == "div"
            return
        if tag in ("td", "th") and self.cell is not None:
            self.row.append("".join(self.cell).strip())
            self.cell = None
        elif tag == "tr" and self.row is not None:
            self.tables[-1].append(self.row)
            self.row = None

    def handle_data(self, data):
        if not self.skip and self.cell is not None:
            self.cell.append(data)


def cell_tables(cell):
    """Every table a code cell shows, each a list of rows (the header row first)."""
    out = []
    for o in cell.get("outputs", []):
        page = o.get("data", {}).get("text/html")
        if page:
            parser = Tables()
            parser.feed(page if isinstance(page, str) else "".join(page))
            out.extend(parser.tables)
    return out


def source_of(cell):
    src = cell.get("source", "")
    return "".join(src) if isinstance(src, list) else src


def notebook_tables(nb):
    """{code-cell ordinal: tables}, counting the notebook's own code cells (not injected ones)."""
    out, ordinal = {}, 0
    for cell in nb["cells"]:
        tags = cell.get("metadata", {}).get("tags", [])
        if cell["cell_type"] != "code" or "injected-parameters" in tags:
            continue
        if "verify-skip" not in tags:
            tables = cell_tables(cell)
            if tables:
                src = source_of(cell)
                out[str(ordinal)] = {"source": src.splitlines()[0][:60] if src else "",
                                     "ignore": cell.get("metadata", {}).get("verify-ignore-columns", []), "tables": tables}
        ordinal += 1
    return out


def number(text):
    try:
        return float(text.replace(",", "").rstrip("%"))
    except ValueError:
        return None


def agree(column, want, have, points, relative):
    """None when equal as shown; otherwise (within tolerance, size of the difference)."""
    if want == have:
        return None
    a, b = number(want), number(have)
    if a is None or b is None:
        return (False, None)
    diff = abs(a - b)
    if column.split(" ")[0].lower() in PERCENT_COLUMNS:
        return (diff <= points + 1e-9, diff)
    return (diff <= relative * max(abs(a), abs(b)), diff)


def compare(expected, got, points=DEFAULT_POINTS, relative=DEFAULT_RELATIVE):
    """(differences beyond tolerance, one verdict line per table), as lines."""
    diffs, verdicts = [], []
    for key, want in expected.items():
        have = got.get(key)
        where = f"cell {key} ({want['source']})"
        if have is None:
            diffs.append(f"{where}: expected {len(want['tables'])} table(s), got none")
            continue
        if len(have["tables"]) != len(want["tables"]):
            diffs.append(f"{where}: expected {len(want['tables'])} table(s), got {len(have['tables'])}")
        # The columns left out: the notebook's own list (its cell metadata) and the one stored
        # with the expected tables.
        ignore = set(want["ignore"]) | set(have["ignore"])
        for t, (a, b) in enumerate(zip(want["tables"], have["tables"])):
            header = a[0] if a else []
            beyond, within = [], 0.0
            if len(a) != len(b):
                beyond.append(f"{where} table {t}: expected {len(a) - 1} rows, got {len(b) - 1}")
            for r, (ra, rb) in enumerate(zip(a, b)):
                for c, (va, vb) in enumerate(zip(ra, rb)):
                    name = header[c] if c < len(header) else str(c)
                    if name.split(" ")[0] in ignore:
                        continue
                    verdict = agree(name, va, vb, points, relative)
                    if verdict is None:
                        continue
                    ok, size = verdict
                    if ok:
                        within = max(within, size)
                    else:
                        beyond.append(f"{where} table {t} row {r} `{name}`: expected {va}, got {vb}")
                if len(ra) != len(rb):
                    beyond.append(f"{where} table {t} row {r}: expected {len(ra)} columns, got {len(rb)}")
            if beyond:
                verdicts.append(f"{where} table {t}: different")
            elif within:
                verdicts.append(f"{where} table {t}: within tolerance (largest difference {within:.6g})")
            else:
                verdicts.append(f"{where} table {t}: identical")
            diffs.extend(beyond)
    for key in got:
        if key not in expected:
            diffs.append(f"cell {key} ({got[key]['source']}): a table that the expected outputs do not have")
    return diffs, verdicts


def main():
    ap = argparse.ArgumentParser(description="Compare the tables of two executed notebooks.")
    ap.add_argument("expected")
    ap.add_argument("got")
    ap.add_argument("--points", type=float, default=DEFAULT_POINTS, help="tolerance of accuracy columns, in percentage points")
    ap.add_argument("--relative", type=float, default=DEFAULT_RELATIVE, help="relative tolerance of other numbers")
    args = ap.parse_args()
    load = lambda p: notebook_tables(json.load(open(p, encoding="utf-8")))
    diffs, verdicts = compare(load(args.expected), load(args.got), args.points, args.relative)
    for v in verdicts:
        print(v)
    for d in diffs:
        print(f"differs: {d}")
    sys.exit(1 if diffs else 0)


if __name__ == "__main__":
    main()
