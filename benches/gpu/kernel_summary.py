"""Sum Nsight Compute's per-kernel durations by kernel family.

Reads the CSV that `ncu --csv --metrics gpu__time_duration.sum` writes (one row per kernel
launch) and prints the families (the kernel name up to its first '<' or '('), their launch
count and total time, largest first, as one table; `--top N` rows.
"""
import argparse
import csv
import collections
import sys


def main():
    p = argparse.ArgumentParser()
    p.add_argument("csv")
    p.add_argument("--top", type=int, default=25)
    a = p.parse_args()
    rows = []
    with open(a.csv, newline="") as f:
        lines = [line for line in f if line.startswith('"')]
    for r in csv.DictReader(lines):
        if r.get("Metric Name") != "gpu__time_duration.sum":
            continue
        unit = r.get("Metric Unit", "nsecond")
        v = float(r["Metric Value"].replace(",", ""))
        ns = v * {"nsecond": 1, "usecond": 1e3, "msecond": 1e6, "second": 1e9}.get(unit, 1)
        rows.append((r["Kernel Name"], ns))
    if not rows:
        sys.exit("no gpu__time_duration rows in " + a.csv)
    fam = collections.defaultdict(lambda: [0, 0.0])
    for name, ns in rows:
        key = name.split("<")[0].split("(")[0].strip()
        fam[key][0] += 1
        fam[key][1] += ns
    total = sum(ns for _, ns in rows)
    print(f"{len(rows)} kernel launches, {total / 1e6:.1f} ms of GPU time in all")
    print(f"| {'kernel family':60} | {'launches':>8} | {'ms':>8} | {'share':>6} |")
    print(f"|{'-' * 62}|{'-' * 10}|{'-' * 10}|{'-' * 8}|")
    for key, (n, ns) in sorted(fam.items(), key=lambda kv: -kv[1][1])[: a.top]:
        print(f"| {key[:60]:60} | {n:8d} | {ns / 1e6:8.2f} | {100 * ns / total:5.1f}% |")


if __name__ == "__main__":
    main()
