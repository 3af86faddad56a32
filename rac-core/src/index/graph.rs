//! The usearch backend's graph: an HNSW over flat in-memory arrays (USearch's C++ core),
//! kept in a file beside the LMDB environment.
//!
//! LMDB stays the system of record: the vectors live in its `vectors` database, and the
//! graph file is derived from them. Every change writes a new generation
//! (`graph.<generation>.usearch`, through a synced temporary file) *before* the LMDB write
//! transaction that records its generation, length and checksum commits. A killed change
//! therefore leaves the recorded generation, still on disk, in use; and a graph file that is
//! missing, truncated or does not match its checksum is never searched: it is rebuilt from
//! the vectors in LMDB.
//!
//! Distances between f32 vectors are ours ([`F32Distance`]): usearch's own kernels
//! either come from its `numkong` feature, which sums f32 products in f64 and costs 200
//! CPU-seconds of C to build (twice per test run), or are a serial loop; pulp's runtime
//! dispatch (AVX2 + FMA where the CPU has it, already in the tree through gemm) sums in f32.
//! Measured in `benches/faiss/RESULTS.md`.
//!
//! The checksum is xxh3-128 rather than sha256: the file is derived data that guards
//! against accidental damage (a partial copy, a zeroed block, an edit), not an adversary,
//! and xxh3 reads at memory speed, where sha256 would add seconds to every open at 1M items.

use std::path::{Path, PathBuf};

use rayon::prelude::*;

use super::config::{HNSW_M, IndexConfig, Metric, Storage};
use super::schema::GraphRecord;
use crate::error::{Error, Result};

/// An in-memory usearch index over the items of one index folder, keyed by item id.
pub(crate) struct Graph {
    index: usearch::Index,
    metric: Metric,
    storage: Storage,
    dim: usize,
}

/// The file of one generation of the graph.
pub(crate) fn file_of(dir: &Path, generation: u64) -> PathBuf {
    dir.join(format!("graph.{generation}.usearch"))
}

/// The bytes of the recorded generation's file (and its name), or why they are not those
/// its commit recorded: missing, another length, another checksum.
pub(crate) fn read_checked(dir: &Path, record: &GraphRecord) -> std::result::Result<(String, Vec<u8>), String> {
    let file = file_of(dir, record.generation);
    let name = file.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    // A FIFO or a device there would block the read (or never end): only a regular file is read.
    match std::fs::symlink_metadata(&file) {
        Ok(m) if !m.is_file() => return Err(format!("{name} is not a regular file")),
        _ => {}
    }
    let bytes = std::fs::read(&file).map_err(|e| format!("{name} cannot be read ({e})"))?;
    if bytes.len() as u64 != record.bytes {
        return Err(format!("{name} is {} bytes, but the index recorded {}", bytes.len(), record.bytes));
    }
    if checksum(&bytes) != record.xxh3 {
        return Err(format!("{name} does not match the checksum the index recorded"));
    }
    Ok((name, bytes))
}

/// The xxh3-128 checksum of a graph file's bytes, as hex.
fn checksum(bytes: &[u8]) -> String {
    format!("{:032x}", xxhash_rust::xxh3::xxh3_128(bytes))
}

fn usearch_error(path: &Path, op: &str, e: impl std::fmt::Display) -> Error {
    Error::IndexStore { path: path.to_path_buf(), op: op.to_string(), message: format!("usearch: {e}") }
}

fn options(config: &IndexConfig, dim: usize) -> usearch::IndexOptions {
    usearch::IndexOptions {
        dimensions: dim,
        // Inner product on the unit vectors gives `1 - cos`, the index's cosine distance.
        metric: match config.metric {
            Metric::Cosine => usearch::MetricKind::IP,
            Metric::L2 => usearch::MetricKind::L2sq,
        },
        quantization: match config.usearch.storage {
            Storage::F32 => usearch::ScalarKind::F32,
            Storage::F16 => usearch::ScalarKind::F16,
            Storage::I8 => usearch::ScalarKind::I8,
        },
        connectivity: HNSW_M,
        expansion_add: config.hnsw.ef_construction,
        expansion_search: config.hnsw.ef_search,
        multi: false,
    }
}

/// The index's distance between two f32 vectors of `dim` values, as usearch expects it:
/// `1 - a.b` (unit vectors, cosine) or `||a - b||^2` (L2).
#[derive(Clone, Copy)]
struct F32Distance {
    arch: pulp::Arch,
    dim: usize,
    metric: Metric,
}

impl F32Distance {
    fn between(self, a: &[f32], b: &[f32]) -> f32 {
        match self.metric {
            Metric::Cosine => 1.0 - self.arch.dispatch(Dot(a, b)),
            Metric::L2 => self.arch.dispatch(SquaredL2(a, b)),
        }
    }
}

/// The dot product, in four accumulators to hide the FMA latency.
struct Dot<'a>(&'a [f32], &'a [f32]);

impl pulp::WithSimd for Dot<'_> {
    type Output = f32;
    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, simd: S) -> f32 {
        let (a, a_tail) = S::as_simd_f32s(self.0);
        let (b, b_tail) = S::as_simd_f32s(self.1);
        let mut acc = [simd.splat_f32s(0.0); 4];
        let (a4, b4) = (a.chunks_exact(4), b.chunks_exact(4));
        let (a_rest, b_rest) = (a4.remainder(), b4.remainder());
        for (x, y) in a4.zip(b4) {
            for i in 0..4 {
                acc[i] = simd.mul_add_f32s(x[i], y[i], acc[i]);
            }
        }
        for (x, y) in a_rest.iter().zip(b_rest) {
            acc[0] = simd.mul_add_f32s(*x, *y, acc[0]);
        }
        let sum = simd.add_f32s(simd.add_f32s(acc[0], acc[1]), simd.add_f32s(acc[2], acc[3]));
        simd.reduce_sum_f32s(sum) + a_tail.iter().zip(b_tail).map(|(x, y)| x * y).sum::<f32>()
    }
}

/// The squared Euclidean distance.
struct SquaredL2<'a>(&'a [f32], &'a [f32]);

impl pulp::WithSimd for SquaredL2<'_> {
    type Output = f32;
    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, simd: S) -> f32 {
        let (a, a_tail) = S::as_simd_f32s(self.0);
        let (b, b_tail) = S::as_simd_f32s(self.1);
        let mut acc = [simd.splat_f32s(0.0); 2];
        for (i, (x, y)) in a.iter().zip(b).enumerate() {
            let d = simd.sub_f32s(*x, *y);
            acc[i % 2] = simd.mul_add_f32s(d, d, acc[i % 2]);
        }
        simd.reduce_sum_f32s(simd.add_f32s(acc[0], acc[1])) + a_tail.iter().zip(b_tail).map(|(x, y)| (x - y) * (x - y)).sum::<f32>()
    }
}

impl Graph {
    /// An empty graph for `dim`-dimensional vectors, with room for `capacity` items.
    pub fn new(path: &Path, config: &IndexConfig, dim: usize, capacity: usize) -> Result<Self> {
        let index = usearch::Index::new(&options(config, dim)).map_err(|e| usearch_error(path, "creating the graph", e))?;
        let mut graph = Graph { index, metric: config.metric, storage: config.usearch.storage, dim };
        graph.use_our_distance();
        graph.reserve(path, capacity)?;
        Ok(graph)
    }

    /// Compute f32 distances with [`F32Distance`] (usearch forgets a custom metric when it
    /// loads a file, so this runs again after every load).
    fn use_our_distance(&mut self) {
        if self.storage != Storage::F32 {
            return;
        }
        let distance = F32Distance { arch: pulp::Arch::new(), dim: self.dim, metric: self.metric };
        self.index.change_metric::<f32>(Box::new(move |a: *const f32, b: *const f32| {
            // SAFETY: usearch calls the metric with pointers to two stored or query vectors
            // of the index's dimension, which `dim` is.
            let (a, b) = unsafe { (std::slice::from_raw_parts(a, distance.dim), std::slice::from_raw_parts(b, distance.dim)) };
            distance.between(a, b)
        }));
    }

    /// Room for `capacity` items, and one search context per worker thread.
    fn reserve(&self, path: &Path, capacity: usize) -> Result<()> {
        let threads = rayon::current_num_threads().max(1);
        self.index.reserve_capacity_and_threads(capacity.max(1), threads).map_err(|e| usearch_error(path, "reserving memory for the graph", e))
    }

    /// Insert items (ids and their prepared rows). In parallel, or one at a time in the
    /// order given when `deterministic`: usearch draws each node's level from a per-thread
    /// generator with a fixed seed, so one thread and one order give one graph.
    pub fn insert(&self, path: &Path, items: &[(u32, &[f32])], deterministic: bool) -> Result<()> {
        self.reserve(path, self.index.size() + items.len())?;
        let add = |(id, row): &(u32, &[f32])| self.index.add(u64::from(*id), row).map_err(|e| usearch_error(path, "adding items to the graph", e));
        if deterministic { items.iter().try_for_each(add) } else { items.par_iter().try_for_each(add) }
    }

    /// Mark items as deleted; usearch skips them in results and reuses their slots.
    pub fn remove(&self, path: &Path, ids: impl Iterator<Item = u32>) -> Result<()> {
        for id in ids {
            self.index.remove(u64::from(id)).map_err(|e| usearch_error(path, "removing items from the graph", e))?;
        }
        Ok(())
    }

    /// Set the candidate list size of searches (the index's `hnsw.ef_search`).
    pub fn set_ef_search(&self, ef: usize) {
        self.index.change_expansion_search(ef);
    }

    /// The `k` nearest items to a prepared query, nearest first, in the index's distance.
    pub fn search(&self, path: &Path, query: &[f32], k: usize) -> Result<Vec<(u32, f32)>> {
        let found = self.index.search(query, k).map_err(|e| usearch_error(path, "searching", e))?;
        let to_index_scale = |d: f32| match self.metric {
            Metric::Cosine => d,
            Metric::L2 => d.max(0.0).sqrt(),
        };
        found
            .keys
            .iter()
            .zip(&found.distances)
            .map(|(&key, &d)| {
                let id = u32::try_from(key).map_err(|_| usearch_error(path, "searching", format!("key {key} is not an item id")))?;
                Ok((id, to_index_scale(d)))
            })
            .collect()
    }

    /// Write this graph as generation `generation` of the folder's graph file (a synced
    /// temporary file renamed into place) and return the record that names it.
    pub fn save(&self, dir: &Path, generation: u64, deleted: u64) -> Result<GraphRecord> {
        let file = file_of(dir, generation);
        let mut bytes = vec![0u8; self.index.serialized_length()];
        self.index.save_to_buffer(&mut bytes).map_err(|e| usearch_error(dir, "serialising the graph", e))?;
        crate::fsio::write_atomic(&file, &bytes)?;
        Ok(GraphRecord { generation, bytes: bytes.len() as u64, xxh3: checksum(&bytes), items: self.index.size() as u64, deleted })
    }

    /// Load the graph file that `record` names, or say why it cannot be used: missing,
    /// of another length, another checksum, or not the graph of `dim`-d vectors it records.
    pub fn load(dir: &Path, record: &GraphRecord, config: &IndexConfig, dim: usize) -> std::result::Result<Self, String> {
        let (name, bytes) = read_checked(dir, record)?;
        let mut graph = Graph::new(dir, config, dim, 0).map_err(|e| e.to_string())?;
        graph.index.load_from_buffer(&bytes).map_err(|e| format!("{name} does not load ({e})"))?;
        graph.use_our_distance();
        if graph.index.dimensions() != dim || graph.index.size() as u64 != record.items {
            return Err(format!(
                "{name} holds {} vectors of dimension {}, but the index recorded {} of dimension {dim}",
                graph.index.size(),
                graph.index.dimensions(),
                record.items
            ));
        }
        // Loading replaces the settings with the file's; the query-time one is the handle's.
        graph.set_ef_search(config.hnsw.ef_search);
        graph.reserve(dir, record.items as usize).map_err(|e| e.to_string())?;
        Ok(graph)
    }

    /// The SIMD kernels distances run with on this CPU: ours (pulp's choice) for f32,
    /// usearch's for the other storages.
    pub fn kernels(&self) -> String {
        match self.storage {
            Storage::F32 => format!("rac f32, pulp {}", crate::device::simd_level()),
            _ => format!("usearch {}", self.index.hardware_acceleration()),
        }
    }

    /// The number of live items.
    pub fn len(&self) -> usize {
        self.index.size()
    }
}

/// Delete every graph file of `dir` but generation `keep` (older generations after a
/// commit, a newer one left by a change that did not commit), and their temporary files.
pub(crate) fn remove_other_generations(dir: &Path, keep: Option<u64>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    let keep_name = keep.map(|g| format!("graph.{g}.usearch"));
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let is_graph = name.starts_with("graph.") && name.ends_with(".usearch");
        let is_temp = name.starts_with(".graph.") && name.ends_with(".tmp");
        if (is_graph && Some(&name) != keep_name.as_ref()) || is_temp {
            // Best effort: a file left behind is ignored by every reader and removed next time.
            let _ = std::fs::remove_file(entry.path());
        }
    }
}
