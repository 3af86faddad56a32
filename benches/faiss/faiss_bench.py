"""FAISS on the same vectors as `rac index bench`, printing the same table.

    python faiss_bench.py --npy DIR [--json OUT]       # DIR holds base.npy, queries.npy
    python faiss_bench.py --compare OURS.json FAISS.json

IndexFlatIP is exact inner-product search (the vectors are unit-norm, so it ranks by
cosine) and gives the ground truth; IndexHNSWFlat(M=32) runs with the same
ef_construction as ours and a sweep of efSearch. With --usearch-wheel, USearch's own
Python wheel (the same C++ core as our `usearch` backend, its own SIMD build) runs the
same sweep: it shows what the library gives without our Rust, LMDB and checksum layers. Columns: build_s, size_MiB (serialised
index), recall@1/10/30 against the flat index, single-query latency (mean, p50, p99, ms),
batched queries/s (all queries in one call, k = 30), and the process's peak resident memory
while each index was built and queried (Linux: the peak is reset before each). Run by hand,
not in CI.
"""
import argparse
import json
import os
import time

import numpy as np

KS = (1, 10, 30)


def _status_kib(field):
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def reset_peak():
    """Start a new peak of resident memory (Linux: 5 in clear_refs resets VmHWM); the RSS now."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass
    kib = _status_kib("VmRSS:")
    return None if kib is None else kib * 1024


def with_peak(rows, before):
    kib = _status_kib("VmHWM:")
    for r in rows:
        r["peak_rss_bytes"] = None if kib is None else kib * 1024
        r["rss_before_bytes"] = before
    return rows


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
    size = len(faiss.serialize_index(index))
    return row_of(name, params, index.ntotal, index.d, xq, build_s, size, ids, truth, times, qps)


def row_of(name, params, n, d, xq, build_s, size, ids, truth, times, qps):
    times = np.sort(np.array(times))
    truth = ids if truth is None else truth
    row = dict(
        backend=name, params=params, n_items=n, dim=d, n_queries=len(xq),
        build_s=build_s, size_bytes=size,
        recall_at_1=recall(ids, truth, 1), recall_at_10=recall(ids, truth, 10), recall_at_30=recall(ids, truth, 30),
        query_ms_mean=float(times.mean()), query_ms_p50=float(np.percentile(times, 50, method="nearest")),
        query_ms_p99=float(np.percentile(times, 99, method="nearest")), batched_qps=qps,
    )
    return row, ids


def gib(b):
    return "-" if b is None else "%.2f" % (b / 2**30)


def table(rows):
    out = ["%-10s %-40s %8s %9s %7s %7s %7s %8s %8s %8s %10s %8s" % (
        "backend", "params", "build_s", "size_MiB", "R@1", "R@10", "R@30", "ms_mean", "ms_p50", "ms_p99", "batch_qps", "peak_GiB")]
    for r in rows:
        out.append("%-10s %-40s %8.2f %9.1f %7.4f %7.4f %7.4f %8.3f %8.3f %8.3f %10.0f %8s" % (
            r["backend"], r["params"][:40], r["build_s"], r["size_bytes"] / 2**20, r["recall_at_1"], r["recall_at_10"],
            r["recall_at_30"], r["query_ms_mean"], r["query_ms_p50"], r["query_ms_p99"], r["batched_qps"],
            gib(r.get("peak_rss_bytes"))))
    return "\n".join(out)


def run(args):
    import faiss

    xb = np.ascontiguousarray(np.load(os.path.join(args.npy, "base.npy")), dtype="float32")
    xq = np.ascontiguousarray(np.load(os.path.join(args.npy, "queries.npy")), dtype="float32")
    d = xb.shape[1]
    print(f"faiss {faiss.__version__}, {faiss.omp_get_max_threads()} threads, base {xb.shape}, queries {xq.shape}", flush=True)
    rows = []
    before = reset_peak()
    t0 = time.perf_counter()
    flat = faiss.IndexFlatIP(d)
    flat.add(xb)
    row, truth = measure("faiss-flat", "IndexFlatIP", flat, time.perf_counter() - t0, xq, None, args.single)
    rows += with_peak([row], before)
    print(table([row]), flush=True)
    del flat
    before = reset_peak()
    hnsw_rows = []
    t0 = time.perf_counter()
    hnsw = faiss.IndexHNSWFlat(d, 32, faiss.METRIC_INNER_PRODUCT)
    hnsw.hnsw.efConstruction = args.ef_construction
    hnsw.add(xb)
    build_s = time.perf_counter() - t0
    for ef in args.ef_search:
        hnsw.hnsw.efSearch = ef
        row, _ = measure("faiss-hnsw", f"HNSW32 efConstruction={args.ef_construction} efSearch={ef}", hnsw, build_s, xq, truth, args.single)
        hnsw_rows.append(row)
        print(table([row]).splitlines()[1], flush=True)
    rows += with_peak(hnsw_rows, before)
    del hnsw
    if args.usearch_wheel:
        rows += usearch_rows(args, xb, xq, truth)
    print()
    print(table(rows))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)


def usearch_rows(args, xb, xq, truth):
    """USearch's Python wheel on the same vectors: f32, inner product, connectivity 32."""
    import usearch
    from usearch.index import Index

    k = KS[-1]
    threads = int(os.environ.get("OMP_NUM_THREADS", "2"))
    print(f"usearch wheel {usearch.__version__}, {threads} threads", flush=True)
    before = reset_peak()
    t0 = time.perf_counter()
    index = Index(ndim=xb.shape[1], metric="ip", dtype="f32", connectivity=32, expansion_add=args.ef_construction)
    index.add(np.arange(len(xb)), xb, threads=threads)
    build_s = time.perf_counter() - t0
    size = len(index.save())
    rows = []
    for ef in args.ef_search:
        index.expansion_search = ef
        t0 = time.perf_counter()
        ids = index.search(xq, k, threads=threads).keys
        qps = len(xq) / (time.perf_counter() - t0)
        times = []
        for q in xq[:args.single]:
            t = time.perf_counter()
            index.search(q, k)
            times.append((time.perf_counter() - t) * 1e3)
        row, _ = row_of("usearch-py", f"M=32 efConstruction={args.ef_construction} efSearch={ef} f32", len(xb), xb.shape[1], xq, build_s,
                     size, ids, truth, times, qps)
        rows.append(row)
        print(table([row]).splitlines()[1], flush=True)
    return with_peak(rows, before)


def compare(ours_path, faiss_path, load):
    ours, theirs = json.load(open(ours_path)), json.load(open(faiss_path))
    print("ours (rac index bench)")
    print(table(ours))
    print("\nreference (faiss-cpu%s)" % (", usearch wheel" if any(r["backend"] == "usearch-py" for r in theirs) else ""))
    print(table(theirs))
    if load:
        print("\nload average (1, 5, 15 min) before each side: %s" % load)

    def best(rows, backend):
        ok = [r for r in rows if r["backend"] == backend and r["recall_at_30"] >= 0.99]
        return max(ok, key=lambda r: r["batched_qps"]) if ok else None

    print()
    h_faiss = best(theirs, "faiss-hnsw")
    for ours_name in ("usearch", "hnsw"):
        h_ours = best(ours, ours_name)
        if not [r for r in ours if r["backend"] == ours_name]:
            continue
        if h_ours and h_faiss:
            print("%s at recall@30 >= 0.99: ours %.0f q/s (%s, R@30 %.4f) vs faiss HNSW32 %.0f q/s (%s, R@30 %.4f): ratio %.2f" % (
                ours_name, h_ours["batched_qps"], h_ours["params"], h_ours["recall_at_30"], h_faiss["batched_qps"], h_faiss["params"],
                h_faiss["recall_at_30"], h_ours["batched_qps"] / h_faiss["batched_qps"]))
            print("  single-query p50: %.3f ms vs %.3f ms: ratio %.2f (ours / faiss)" % (
                h_ours["query_ms_p50"], h_faiss["query_ms_p50"], h_ours["query_ms_p50"] / h_faiss["query_ms_p50"]))
            print("  build (efConstruction %s): %.1f s vs %.1f s: ratio %.2f (ours / faiss)" % (
                h_ours["params"].split("ef_construction=")[1].split()[0], h_ours["build_s"], h_faiss["build_s"],
                h_ours["build_s"] / h_faiss["build_s"]))
        else:
            print("%s: no row reaches recall@30 >= 0.99 on %s" % (ours_name, "our side" if not h_ours else "the faiss side"))
    h_wheel = best(theirs, "usearch-py")
    h_ours = best(ours, "usearch")
    if h_wheel and h_ours:
        print("usearch through rac vs its own wheel: %.0f vs %.0f q/s (ratio %.2f), build %.1f vs %.1f s" % (
            h_ours["batched_qps"], h_wheel["batched_qps"], h_ours["batched_qps"] / h_wheel["batched_qps"], h_ours["build_s"],
            h_wheel["build_s"]))
    seen = set()
    for r in ours:
        if r.get("add_source_s") is not None and r["backend"] not in seen:
            seen.add(r["backend"])
            print("%s: adding %d items %.2f s, removing them %.2f s: %.1f%% / %.1f%% of the full build" % (
                r["backend"], r["n_queries"], r["add_source_s"], r["remove_source_s"], 100 * r["add_source_s"] / r["build_s"],
                100 * r["remove_source_s"] / r["build_s"]))
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
    p.add_argument("--usearch-wheel", action="store_true", help="also run USearch's Python wheel")
    p.add_argument("--load", default="", help="the load averages to print beside the tables")
    a = p.parse_args()
    if a.compare:
        compare(*a.compare, a.load)
    else:
        run(a)
