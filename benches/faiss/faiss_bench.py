"""FAISS on the same vectors as `rac index bench`, printing the same table.

    python faiss_bench.py --npy DIR [--json OUT]       # DIR holds base.npy, queries.npy
    python faiss_bench.py --compare OURS.json FAISS.json

IndexFlatIP is exact inner-product search (the vectors are unit-norm, so it ranks by
cosine) and gives the ground truth; IndexHNSWFlat(M=32) runs with the same
ef_construction as ours and a sweep of efSearch. Columns: build_s, size_MiB (serialised
index), recall@1/10/30 against the flat index, single-query latency (mean, p50, p99, ms),
batched queries/s (all queries in one call, k = 30). Run by hand, not in CI.
"""
import argparse
import json
import os
import time

import numpy as np

KS = (1, 10, 30)


def recall(approx, exact, k):
    return float(np.mean([len(set(a[:k]) & set(e[:k])) / k for a, e in zip(approx, exact)]))


def measure(name, params, index, build_s, xq, truth, single):
    import faiss

    k = KS[-1]
    t0 = time.perf_counter()
    _, ids = index.search(xq, k)
    qps = len(xq) / (time.perf_counter() - t0)
    times = []
    for q in xq[:single]:
        t = time.perf_counter()
        index.search(q[None, :], k)
        times.append((time.perf_counter() - t) * 1e3)
    times = np.sort(np.array(times))
    size = len(faiss.serialize_index(index))
    truth = ids if truth is None else truth
    row = dict(
        backend=name, params=params, n_items=index.ntotal, dim=index.d, n_queries=len(xq),
        build_s=build_s, size_bytes=size,
        recall_at_1=recall(ids, truth, 1), recall_at_10=recall(ids, truth, 10), recall_at_30=recall(ids, truth, 30),
        query_ms_mean=float(times.mean()), query_ms_p50=float(np.percentile(times, 50, method="nearest")),
        query_ms_p99=float(np.percentile(times, 99, method="nearest")), batched_qps=qps,
    )
    return row, ids


def table(rows):
    out = ["%-10s %-40s %8s %9s %7s %7s %7s %8s %8s %8s %10s" % (
        "backend", "params", "build_s", "size_MiB", "R@1", "R@10", "R@30", "ms_mean", "ms_p50", "ms_p99", "batch_qps")]
    for r in rows:
        out.append("%-10s %-40s %8.2f %9.1f %7.4f %7.4f %7.4f %8.3f %8.3f %8.3f %10.0f" % (
            r["backend"], r["params"], r["build_s"], r["size_bytes"] / 2**20, r["recall_at_1"], r["recall_at_10"],
            r["recall_at_30"], r["query_ms_mean"], r["query_ms_p50"], r["query_ms_p99"], r["batched_qps"]))
    return "\n".join(out)


def run(args):
    import faiss

    xb = np.ascontiguousarray(np.load(os.path.join(args.npy, "base.npy")), dtype="float32")
    xq = np.ascontiguousarray(np.load(os.path.join(args.npy, "queries.npy")), dtype="float32")
    d = xb.shape[1]
    print(f"faiss {faiss.__version__}, {faiss.omp_get_max_threads()} threads, base {xb.shape}, queries {xq.shape}", flush=True)
    rows = []
    t0 = time.perf_counter()
    flat = faiss.IndexFlatIP(d)
    flat.add(xb)
    row, truth = measure("faiss-flat", "IndexFlatIP", flat, time.perf_counter() - t0, xq, None, args.single)
    rows.append(row)
    print(table([row]), flush=True)
    t0 = time.perf_counter()
    hnsw = faiss.IndexHNSWFlat(d, 32, faiss.METRIC_INNER_PRODUCT)
    hnsw.hnsw.efConstruction = args.ef_construction
    hnsw.add(xb)
    build_s = time.perf_counter() - t0
    for ef in args.ef_search:
        hnsw.hnsw.efSearch = ef
        row, _ = measure("faiss-hnsw", f"HNSW32 efConstruction={args.ef_construction} efSearch={ef}", hnsw, build_s, xq, truth, args.single)
        rows.append(row)
        print(table([row]).splitlines()[1], flush=True)
    print()
    print(table(rows))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)


def compare(ours_path, faiss_path):
    ours, theirs = json.load(open(ours_path)), json.load(open(faiss_path))
    print("ours (rac index bench)")
    print(table(ours))
    print("\nFAISS (faiss-cpu)")
    print(table(theirs))

    def best(rows, backend):
        ok = [r for r in rows if r["backend"] == backend and r["recall_at_30"] >= 0.99]
        return max(ok, key=lambda r: r["batched_qps"]) if ok else None

    print()
    h_ours, h_faiss = best(ours, "hnsw"), best(theirs, "faiss-hnsw")
    if h_ours and h_faiss:
        print("HNSW at recall@30 >= 0.99: ours %.0f q/s (%s, R@30 %.4f) vs faiss %.0f q/s (%s, R@30 %.4f): ratio %.2f" % (
            h_ours["batched_qps"], h_ours["params"], h_ours["recall_at_30"], h_faiss["batched_qps"], h_faiss["params"],
            h_faiss["recall_at_30"], h_ours["batched_qps"] / h_faiss["batched_qps"]))
    else:
        print("HNSW: no row reaches recall@30 >= 0.99 on %s" % ("our side" if not h_ours else "the faiss side"))
    e_ours = [r for r in ours if r["backend"] == "exact"][0]
    e_faiss = [r for r in theirs if r["backend"] == "faiss-flat"][0]
    print("exact: ours %.0f q/s vs IndexFlatIP %.0f q/s: ratio %.2f" % (
        e_ours["batched_qps"], e_faiss["batched_qps"], e_ours["batched_qps"] / e_faiss["batched_qps"]))


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--npy", help="folder with base.npy and queries.npy")
    p.add_argument("--json", help="also write the rows here")
    p.add_argument("--compare", nargs=2, metavar=("OURS", "FAISS"), help="print both tables and the ratios")
    p.add_argument("--ef-construction", type=int, default=200)
    p.add_argument("--ef-search", type=int, nargs="+", default=[16, 32, 64, 128, 256])
    p.add_argument("--single", type=int, default=200, help="queries timed one at a time")
    a = p.parse_args()
    if a.compare:
        compare(*a.compare)
    else:
        run(a)
