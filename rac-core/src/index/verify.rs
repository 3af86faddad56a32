//! `rac index verify`: read back everything an index stores and check it against what its
//! commits recorded: each source's items (vectors and records) against the checksum taken
//! when it was added, the counts, and the usearch graph file against its length and
//! checksum. It only reads (a read-only folder verifies too) and repairs nothing: opening
//! an index already rebuilds a damaged graph file from LMDB, but LMDB holds the only copy
//! of the vectors, so damage there is named, source by source, for a rebuild.

use std::path::{Path, PathBuf};

use serde::Serialize;

use super::backend::Searcher;
use super::config::Backend;
use super::graph;
use super::lmdb_file::Depth;
use super::schema::{self, SourceRecord, StoredHasher};
use super::store::Store;
use crate::error::Result;

/// What `verify` found in one source.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SourceStatus {
    /// Every item read back matches the recorded checksum.
    Ok,
    /// The source was added before checksums were recorded: nothing to compare with.
    NoChecksum,
    /// Read back, it is not what was added; why.
    Damaged(String),
}

/// One source's verdict.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SourceCheck {
    /// The source's name.
    pub name: String,
    /// Its number of items.
    pub items: usize,
    /// The verdict.
    pub status: SourceStatus,
}

/// Everything `verify` found.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct VerifyReport {
    /// The index folder.
    pub path: PathBuf,
    /// Per source, in id order.
    pub sources: Vec<SourceCheck>,
    /// Damage outside the sources: counts that disagree, a graph file that does not match.
    pub other: Vec<String>,
}

impl VerifyReport {
    /// Whether nothing is damaged (sources without a checksum are not damage).
    pub fn is_ok(&self) -> bool {
        self.other.is_empty() && self.sources.iter().all(|s| !matches!(s.status, SourceStatus::Damaged(_)))
    }

    /// One line per damaged part, naming it.
    pub fn damage(&self) -> Vec<String> {
        let sources = self.sources.iter().filter_map(|s| match &s.status {
            SourceStatus::Damaged(why) => Some(format!("source `{}`: {why}", s.name)),
            _ => None,
        });
        sources.chain(self.other.iter().cloned()).collect()
    }

    /// The report as text: one line per source, then whatever else was found.
    pub fn report(&self) -> String {
        let mut out = format!("{}\n", self.path.display());
        for s in &self.sources {
            let verdict = match &s.status {
                SourceStatus::Ok => "ok".to_string(),
                SourceStatus::NoChecksum => "no checksum recorded (added by an earlier version; rebuild to record one)".to_string(),
                SourceStatus::Damaged(why) => format!("DAMAGED: {why}"),
            };
            out.push_str(&format!("  source {:<20} {:>9} items  {verdict}\n", s.name, s.items));
        }
        for o in &self.other {
            out.push_str(&format!("  DAMAGED: {o}\n"));
        }
        out.push_str(if self.is_ok() { "  verdict: ok\n" } else { "  verdict: damaged\n" });
        out
    }
}

/// Read back the index at `path` and check it. An index whose data file cannot be opened
/// at all (truncated, foreign) is an error, as for every other command.
pub fn verify(path: &Path) -> Result<VerifyReport> {
    // A change committed by another process while this one read may remove the graph file of
    // the snapshot it read: that is no damage, and the newer commit is verified instead.
    const TRIES: usize = 20;
    for _ in 1..TRIES {
        let (report, store) = verify_once(path)?;
        if report.is_ok() || !store.is_behind()? {
            return Ok(report);
        }
    }
    verify_once(path).map(|(report, _)| report)
}

fn verify_once(path: &Path) -> Result<(VerifyReport, Store)> {
    let store = Store::open_unchecked(path, Depth::Overflow)?;
    let rtxn = store.read("verifying")?;
    let sources = schema::read_sources(&rtxn, store.dbs.sources, path)?;
    let config = &store.meta.config;
    let searcher =
        if config.backend.keeps_vectors_in_lmdb() || store.meta.n_items == 0 { None } else { Searcher::open(&rtxn, store.dbs.ann, path, config)? };
    let checks = sources
        .iter()
        .map(|s| {
            let status = match read_back(&store, &rtxn, searcher.as_ref(), s) {
                Err(why) => SourceStatus::Damaged(why),
                Ok(sum) => match &s.stored_xxh3 {
                    None => SourceStatus::NoChecksum,
                    Some(recorded) if *recorded == sum => SourceStatus::Ok,
                    Some(_) => SourceStatus::Damaged(
                        "its stored vectors or item records do not match the checksum recorded when it was added (edited or overwritten on disk)"
                            .into(),
                    ),
                },
            };
            SourceCheck { name: s.name.clone(), items: s.count as usize, status }
        })
        .collect();
    // The snapshot is lent to one read at a time: this one ends before the count check's.
    drop(searcher);
    drop(rtxn);
    let mut other: Vec<String> = store.count_problem()?.into_iter().collect();
    if config.backend == Backend::Usearch && store.meta.n_items > 0 {
        match &store.meta.graph {
            None => other.push("the index records no usearch graph file (it is rebuilt from LMDB when the index is opened)".into()),
            Some(rec) => {
                if let Err(why) = graph::read_checked(path, rec) {
                    other.push(format!("the usearch graph: {why} (it is rebuilt from LMDB when the index is next opened)"));
                }
            }
        }
    }
    Ok((VerifyReport { path: path.to_path_buf(), sources: checks, other }, store))
}

/// The checksum of a source's items as read back, or what is missing or unreadable.
fn read_back(store: &Store, rtxn: &heed::RoTxn<'_>, searcher: Option<&Searcher<'_>>, s: &SourceRecord) -> std::result::Result<String, String> {
    let path = &store.path;
    let dim = store.meta.dim;
    let mut sum = StoredHasher::new();
    for id in s.ids() {
        let record = store.dbs.items.get(rtxn, &id).map_err(|e| format!("item {id}'s record cannot be read ({e})"))?;
        let record = record.ok_or_else(|| format!("item {id}'s record is missing"))?;
        let vector: Option<Vec<u8>> = match searcher {
            Some(r) => {
                r.vector(rtxn, path, id).map_err(|e| format!("item {id}'s vector cannot be read ({e})"))?.map(|v| crate::vectors::f32_to_bytes(&v))
            }
            None => store.dbs.vectors.get(rtxn, &id).map_err(|e| format!("item {id}'s vector cannot be read ({e})"))?.map(<[u8]>::to_vec),
        };
        let vector = vector.ok_or_else(|| format!("item {id}'s vector is missing"))?;
        if vector.len() != dim * 4 {
            return Err(format!("item {id}'s vector is {} bytes, not the {} of dimension {dim}", vector.len(), dim * 4));
        }
        sum.item(&vector, record);
    }
    Ok(sum.finish())
}
