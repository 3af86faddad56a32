//! The index benchmark behind `rac index bench`: every backend on the same vectors, with
//! build time, size on disk, open time, recall@1/10/30 against exact search, single-query
//! latency (mean, p50, p99) and batched throughput. The same table is printed by the FAISS
//! comparison script under `benches/`, so the two can be set side by side.

use std::path::Path;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::index::{Backend, HNSW_M, IndexConfig, ItemId, Metric, Queries, RetrievalIndex, SearchRequest, Source, Storage};

/// The k of the recall columns; the largest is the paper's k = 30.
pub const RECALL_KS: [usize; 3] = [1, 10, 30];

/// What to measure.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BenchSpec {
    /// Backends to run (exact always runs first: it is the ground truth).
    pub backends: Vec<Backend>,
    /// The metric.
    pub metric: Metric,
    /// HNSW `ef_construction` (hannoy and usearch).
    pub hnsw_ef_construction: usize,
    /// HNSW `ef_search` values, one row each (one build per HNSW backend and storage).
    pub hnsw_ef_search: Vec<usize>,
    /// usearch vector storages, one build each.
    pub usearch_storage: Vec<Storage>,
    /// Build every index with `deterministic = true` (one thread, id order).
    pub deterministic: bool,
    /// Also time adding the queries to each built index as a source of their own, and
    /// removing it again (the cost of a change against a full build).
    pub incremental: bool,
    /// arroy tree counts, one build each.
    pub arroy_trees: Vec<usize>,
    /// arroy `search_k` values, one row each per build.
    pub arroy_search_k: Vec<usize>,
    /// Queries timed one at a time for the latency columns (the first ones of the set).
    pub single_queries: usize,
}

impl Default for BenchSpec {
    fn default() -> Self {
        let d = IndexConfig::default();
        BenchSpec {
            backends: Backend::ALL.to_vec(),
            metric: Metric::Cosine,
            hnsw_ef_construction: d.hnsw.ef_construction,
            hnsw_ef_search: vec![d.hnsw.ef_search],
            usearch_storage: vec![d.usearch.storage],
            deterministic: false,
            incremental: false,
            arroy_trees: vec![d.arroy.n_trees],
            arroy_search_k: vec![d.arroy.search_k],
            single_queries: 200,
        }
    }
}

/// One row of the table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BenchRow {
    /// `exact`, `usearch`, `hnsw` or `arroy`.
    pub backend: String,
    /// The backend's settings.
    pub params: String,
    /// Items indexed.
    pub n_items: usize,
    /// Dimension.
    pub dim: usize,
    /// Queries.
    pub n_queries: usize,
    /// Seconds to build the index (from vectors in memory to a committed LMDB environment).
    pub build_s: f64,
    /// Size of the index folder's files in bytes (LMDB, and usearch's graph file).
    pub size_bytes: u64,
    /// Seconds to open the built folder again and answer one query (LMDB maps its file;
    /// usearch reads, checks and loads its graph; exact loads its matrix).
    #[serde(default)]
    pub open_s: f64,
    /// Recall@1 against exact search.
    pub recall_at_1: f64,
    /// Recall@10 against exact search.
    pub recall_at_10: f64,
    /// Recall@30 against exact search.
    pub recall_at_30: f64,
    /// Mean single-query latency in ms.
    pub query_ms_mean: f64,
    /// Median single-query latency in ms.
    pub query_ms_p50: f64,
    /// 99th-percentile single-query latency in ms.
    pub query_ms_p99: f64,
    /// Queries per second when all queries are sent as one batch (k = 30).
    pub batched_qps: f64,
    /// Seconds to add the queries as a source of their own (when measured).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub add_source_s: Option<f64>,
    /// Seconds to remove that source again (when measured).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remove_source_s: Option<f64>,
    /// The process's peak resident memory in bytes while this build was made, opened and
    /// queried (Linux; it includes the bench's own copies of the vectors, `rss_before_bytes`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peak_rss_bytes: Option<u64>,
    /// The resident memory in bytes just before the build.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rss_before_bytes: Option<u64>,
}

/// The kernel's resident-memory counters of this process (Linux's `/proc/self`; `None`
/// elsewhere). Read by hand: one line of a text file does not earn a dependency.
mod rss {
    /// Start a new peak: writing 5 to `clear_refs` resets `VmHWM` to the current size.
    pub(super) fn reset_peak() {
        let _ = std::fs::write("/proc/self/clear_refs", "5");
    }

    fn status_kib(field: &str) -> Option<u64> {
        let status = std::fs::read_to_string("/proc/self/status").ok()?;
        let line = status.lines().find(|l| l.starts_with(field))?;
        line[field.len()..].trim().trim_end_matches("kB").trim().parse().ok()
    }

    /// The peak resident memory since the last reset, in bytes.
    pub(super) fn peak() -> Option<u64> {
        status_kib("VmHWM:").map(|k| k * 1024)
    }

    /// The resident memory now, in bytes.
    pub(super) fn now() -> Option<u64> {
        status_kib("VmRSS:").map(|k| k * 1024)
    }
}

/// Recall@k of `approx` against `exact`: the mean share of each query's true k nearest
/// that were returned among the first k.
pub fn recall_at(approx: &[Vec<(ItemId, f32)>], exact: &[Vec<(ItemId, f32)>], k: usize) -> f64 {
    let mut total = 0.0;
    for (a, e) in approx.iter().zip(exact) {
        let truth: Vec<ItemId> = e.iter().take(k).map(|x| x.0).collect();
        let found = a.iter().take(k).filter(|x| truth.contains(&x.0)).count();
        total += found as f64 / truth.len().max(1) as f64;
    }
    total / approx.len().max(1) as f64
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * (sorted.len() as f64 - 1.0)).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

/// Run the benchmark on row-major `base` and `queries` of dimension `dim`. Indexes are
/// built under `work_dir` (one folder each, removed after measuring). `log` hears progress.
pub fn run(base: &[f32], queries: &[f32], dim: usize, spec: &BenchSpec, work_dir: &Path, log: &mut dyn FnMut(&str)) -> Result<Vec<BenchRow>> {
    let n = base.len() / dim.max(1);
    let nq = queries.len() / dim.max(1);
    let k = *RECALL_KS.last().expect("non-empty");
    if dim == 0 || n < k || nq == 0 || !base.len().is_multiple_of(dim) || !queries.len().is_multiple_of(dim) {
        return Err(Error::Shape {
            what: "index bench: the base and query vectors".into(),
            expected: format!("at least {k} base vectors and 1 query, of one dimension"),
            found: format!("{n} and {nq} of dimension {dim}"),
        });
    }
    crate::fsio::create_dir_all(work_dir)?;
    let texts: Vec<String> = (0..n).map(|i| format!("item {i}")).collect();
    let source = Source::from_vecs("bench", base.to_vec(), dim, texts, vec![0; n])?;

    let mut rows = Vec::new();
    let mut truth: Option<Vec<Vec<(ItemId, f32)>>> = None;
    let mut backends = spec.backends.clone();
    backends.retain(|b| *b != Backend::Exact);
    backends.insert(0, Backend::Exact);
    for backend in backends {
        let builds: Vec<IndexConfig> = match backend {
            Backend::Exact => vec![IndexConfig { backend, metric: spec.metric, ..Default::default() }],
            Backend::Hnsw => {
                let mut c = IndexConfig { backend, metric: spec.metric, deterministic: spec.deterministic, ..Default::default() };
                c.hnsw.ef_construction = spec.hnsw_ef_construction;
                vec![c]
            }
            Backend::Usearch => spec
                .usearch_storage
                .iter()
                .map(|&storage| {
                    let mut c = IndexConfig { backend, metric: spec.metric, deterministic: spec.deterministic, ..Default::default() };
                    c.hnsw.ef_construction = spec.hnsw_ef_construction;
                    c.usearch.storage = storage;
                    c
                })
                .collect(),
            Backend::Arroy => spec
                .arroy_trees
                .iter()
                .map(|&t| {
                    let mut c = IndexConfig { backend, metric: spec.metric, ..Default::default() };
                    c.arroy.n_trees = t;
                    c
                })
                .collect(),
        };
        for config in builds {
            let dir = tempfile::Builder::new().prefix(&format!("bench-{backend}-")).tempdir_in(work_dir).map_err(|e| Error::Io {
                op: "creating a folder in",
                path: work_dir.to_path_buf(),
                cause: e,
            })?;
            log(&format!("building {backend} on {n} x {dim} ..."));
            rss::reset_peak();
            let rss_before_bytes = rss::now();
            let t0 = Instant::now();
            let index = RetrievalIndex::build(dir.path(), &config, std::slice::from_ref(&source))?;
            let build_s = t0.elapsed().as_secs_f64();
            let size_bytes = index.stats()?.size_on_disk;
            drop(index);
            let t0 = Instant::now();
            let mut index = RetrievalIndex::open(dir.path())?;
            index.search(&Queries::vectors(&queries[..dim], dim), &SearchRequest::top(k)?)?;
            let open_s = t0.elapsed().as_secs_f64();
            log(&format!("  built in {build_s:.1} s, {:.1} MiB, opened in {open_s:.2} s", size_bytes as f64 / (1u64 << 20) as f64));
            if let Some(kernels) = index.usearch_kernels() {
                log(&format!("  usearch distance kernels: {kernels}"));
            }
            let query_settings: Vec<(String, IndexConfig)> = match backend {
                Backend::Exact => vec![("candle matmul".to_string(), config.clone())],
                Backend::Hnsw | Backend::Usearch => spec
                    .hnsw_ef_search
                    .iter()
                    .map(|&ef| {
                        let mut c = config.clone();
                        c.hnsw.ef_search = ef;
                        let storage = if backend == Backend::Usearch { format!(" {}", c.usearch.storage.name()) } else { String::new() };
                        let det = if c.deterministic { " deterministic" } else { "" };
                        (format!("M={HNSW_M} ef_construction={} ef_search={ef}{storage}{det}", c.hnsw.ef_construction), c)
                    })
                    .collect(),
                Backend::Arroy => spec
                    .arroy_search_k
                    .iter()
                    .map(|&sk| {
                        let mut c = config.clone();
                        c.arroy.search_k = sk;
                        (format!("n_trees={} search_k={sk}", c.arroy.n_trees), c)
                    })
                    .collect(),
            };
            let mut build_rows = Vec::new();
            for (params, qconfig) in query_settings {
                index.set_query_params(&qconfig)?;
                let t0 = Instant::now();
                let hits = index.search(&Queries::vectors(queries, dim), &SearchRequest::top(k)?)?;
                let batched_qps = nq as f64 / t0.elapsed().as_secs_f64();
                let exact = truth.get_or_insert_with(|| hits.clone());
                let single = &queries[..spec.single_queries.min(nq).max(1) * dim];
                let mut times = Vec::with_capacity(single.len() / dim);
                let mut last = Instant::now();
                index.search_one_by_one(single, k, || {
                    let now = Instant::now();
                    times.push((now - last).as_secs_f64() * 1e3);
                    last = now;
                })?;
                times.sort_by(f64::total_cmp);
                let row = BenchRow {
                    backend: backend.name().to_string(),
                    params,
                    n_items: n,
                    dim,
                    n_queries: nq,
                    build_s,
                    size_bytes,
                    open_s,
                    recall_at_1: recall_at(&hits, exact, 1),
                    recall_at_10: recall_at(&hits, exact, 10),
                    recall_at_30: recall_at(&hits, exact, 30),
                    query_ms_mean: times.iter().sum::<f64>() / times.len().max(1) as f64,
                    query_ms_p50: percentile(&times, 50.0),
                    query_ms_p99: percentile(&times, 99.0),
                    batched_qps,
                    add_source_s: None,
                    remove_source_s: None,
                    peak_rss_bytes: None,
                    rss_before_bytes,
                };
                log(&format!(
                    "  {}: recall@30 {:.4}, {:.0} q/s batched, p50 {:.2} ms",
                    row.params, row.recall_at_30, row.batched_qps, row.query_ms_p50
                ));
                build_rows.push(row);
            }
            let peak_rss_bytes = rss::peak();
            if let (Some(peak), Some(before)) = (peak_rss_bytes, rss_before_bytes) {
                let gib = |b: u64| b as f64 / (1u64 << 30) as f64;
                log(&format!("  peak resident memory {:.2} GiB ({:.2} GiB before the build)", gib(peak), gib(before)));
            }
            build_rows.iter_mut().for_each(|r| r.peak_rss_bytes = peak_rss_bytes);
            if spec.incremental {
                let added = Source::from_vecs("added", queries.to_vec(), dim, vec![String::new(); nq], vec![0; nq])?;
                let t0 = Instant::now();
                index.add_source(&added)?;
                let add_s = t0.elapsed().as_secs_f64();
                let t0 = Instant::now();
                index.remove_source("added")?;
                let remove_s = t0.elapsed().as_secs_f64();
                log(&format!("  adding {nq} items: {add_s:.2} s, removing them: {remove_s:.2} s"));
                for r in &mut build_rows {
                    (r.add_source_s, r.remove_source_s) = (Some(add_s), Some(remove_s));
                }
            }
            rows.extend(build_rows);
            drop(index);
        }
    }
    Ok(rows)
}

/// The rows as an aligned text table.
pub fn table(rows: &[BenchRow]) -> String {
    let mut s = format!(
        "{:<7} {:<58} {:>8} {:>9} {:>7} {:>7} {:>7} {:>7} {:>8} {:>8} {:>8} {:>10} {:>8}\n",
        "backend", "params", "build_s", "size_MiB", "open_s", "R@1", "R@10", "R@30", "ms_mean", "ms_p50", "ms_p99", "batch_qps", "peak_GiB"
    );
    for r in rows {
        s.push_str(&format!(
            "{:<7} {:<58} {:>8.2} {:>9.1} {:>7.2} {:>7.4} {:>7.4} {:>7.4} {:>8.3} {:>8.3} {:>8.3} {:>10.0} {:>8}\n",
            r.backend,
            r.params,
            r.build_s,
            r.size_bytes as f64 / (1u64 << 20) as f64,
            r.open_s,
            r.recall_at_1,
            r.recall_at_10,
            r.recall_at_30,
            r.query_ms_mean,
            r.query_ms_p50,
            r.query_ms_p99,
            r.batched_qps,
            r.peak_rss_bytes.map_or("-".to_string(), |b| format!("{:.2}", b as f64 / (1u64 << 30) as f64))
        ));
    }
    s
}
