//! The LMDB environment of one index folder and the one way to change it: a single write
//! transaction that commits everything or nothing (with the metadata), grows the map when
//! it fills up, and retries. Many processes share an index: a change holds the folder's
//! writer lock for its whole length (the graph file included), and a handle reads from the
//! snapshot it pinned, which moves only when the handle itself changes or refreshes. The
//! databases and records are in `schema`, opening in `environment`, error translation in
//! `lmdb_errors`.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use heed::types::{Bytes, Str};
use heed::{CommitOrAbort, Env, RoTxn, RwTxn, WithoutTls};

use super::config::IndexConfig;
use super::environment::{Access, Closer, NO_DATA, NO_FOLDER, check_snapshot, closer, open_env, open_existing_env};
use super::internals::Failpoint;
use super::lmdb_errors::StoreResult;
use super::lmdb_file::{self, Depth, data_file};
use super::schema::{Dbs, FORMAT_VERSION, INTERRUPTED, Meta, databases, fingerprint, read_meta, read_sources};
use crate::error::{Error, Result};
use crate::fsio::FileLock;

/// The file in an index folder whose lock a change holds (see [`FileLock`]).
pub(crate) const WRITER_LOCK: &str = "writer.lock";

/// A read transaction that lives as long as its handle (it holds its own reference to the
/// environment).
type Pinned = RoTxn<'static, WithoutTls>;

/// The handle's snapshot, borrowed for one read.
pub(crate) struct Snapshot<'a>(MutexGuard<'a, Option<Pinned>>);

impl std::ops::Deref for Snapshot<'_> {
    type Target = Pinned;
    fn deref(&self) -> &Pinned {
        self.0.as_ref().expect("a snapshot is pinned before it is lent")
    }
}

/// An open index environment.
pub(crate) struct Store {
    /// The snapshot every read of this handle sees (first field: it drops before the
    /// environment). `None` until the next read pins the newest commit.
    snapshot: Mutex<Option<Pinned>>,
    pub path: PathBuf,
    pub env: Env<WithoutTls>,
    /// The environment's last reference, dropped after `env` (fields drop in order) through
    /// the vtable made where it was opened. evcxr links a copy of every dependency into each
    /// notebook cell, heed's registry of open environments included; a handle opened in one
    /// cell and dropped in a later one then closes in the registry of the copy that opened
    /// it, not in one that never heard of it.
    _closer: Closer,
    pub dbs: Dbs,
    /// The configuration `dbs` were opened for.
    dbs_config: IndexConfig,
    pub meta: Meta,
    map_size: usize,
    pub failpoint: Option<Failpoint>,
    /// Opened read-only (its folder cannot be written): reads work, changes are refused.
    pub read_only: bool,
    /// The writer lock, while this handle changes the index.
    writer: Option<FileLock>,
}

/// Refuse to build into a folder that holds something else than an index (or its lock).
pub(crate) fn check_buildable(path: &Path) -> Result<()> {
    if !path.exists() || data_file(path).is_file() {
        return Ok(());
    }
    let entries = std::fs::read_dir(path).map_err(|e| Error::io("reading folder", "index folder", path, e))?;
    if entries.flatten().any(|e| e.file_name() != WRITER_LOCK) {
        return Err(Error::NotAnIndex {
            path: path.to_path_buf(),
            reason: "the folder exists, is not empty and holds no index; choose an empty or new folder".into(),
        });
    }
    Ok(())
}

impl Store {
    /// Open an existing index folder; its counts must agree (see [`Self::count_problem`]).
    pub fn open(path: &Path) -> Result<Self> {
        let store = Self::open_unchecked(path, Depth::Tree)?;
        if let Some(problem) = store.count_problem()? {
            let reason = format!("it is damaged: {problem}; run `rac index verify` to see which source, then rebuild it with `rac index build`");
            return Err(Error::NotAnIndex { path: path.to_path_buf(), reason });
        }
        Ok(store)
    }

    /// Open an existing index folder without comparing its counts (`verify` reports them),
    /// its LMDB file checked to `depth` first.
    pub fn open_unchecked(path: &Path, depth: Depth) -> Result<Self> {
        if !path.is_dir() {
            return Err(Error::NotAnIndex { path: path.to_path_buf(), reason: NO_FOLDER.into() });
        }
        let data = data_file(path);
        let stat = std::fs::metadata(&data).map_err(|_| Error::NotAnIndex { path: path.to_path_buf(), reason: NO_DATA.into() })?;
        if !stat.is_file() {
            // Opening a FIFO would wait for a writer that never comes.
            return Err(Error::NotAnIndex { path: path.to_path_buf(), reason: "its data.mdb is not a regular file".into() });
        }
        let len = stat.len() as usize;
        let file = lmdb_file::check_meta(path, &data)?;
        // Open with the generous default first; the stored config may ask for more.
        let map_size = IndexConfig::default().map_size.max(len.next_power_of_two());
        let (env, read_only) = open_existing_env(path, map_size)?;
        check_snapshot(&env, path, &file, depth)?;
        let rtxn = env.read_txn().at(path, "opening")?;
        let meta_db = env
            .open_databases_and_commit(rtxn, |dbo, r| -> heed::Result<_> {
                Ok(CommitOrAbort::<_, ()>::Commit(dbo.open_database::<Str, Bytes>(r, Some("meta"))?))
            })
            .map_err(|e: heed::Error| Error::NotAnIndex { path: path.to_path_buf(), reason: format!("cannot read its databases ({e})") })?
            .unwrap_commit();
        let Some(meta_db) = meta_db else {
            return Err(Error::NotAnIndex { path: path.to_path_buf(), reason: "it has no `meta` database".into() });
        };
        let meta = read_meta(&*env.read_txn().at(path, "opening")?, path, meta_db)?;
        let dbs = open_databases(&env, path, &meta.config, read_only)?;
        // LMDB keeps the larger of the asked size and the one stored by an earlier growth.
        let map_size = env.info().map_size.max(map_size);
        let mut store = Store {
            snapshot: Mutex::new(None),
            path: path.to_path_buf(),
            _closer: closer(&env),
            env,
            dbs,
            dbs_config: meta.config.clone(),
            map_size,
            meta,
            failpoint: None,
            read_only,
            writer: None,
        };
        if !read_only && store.meta.config.map_size > store.map_size {
            store.resize(store.meta.config.map_size)?;
        }
        store.settle()?;
        Ok(store)
    }

    /// Create the environment of a new index (or re-open an interrupted first build's), with
    /// its databases but no metadata: it opens as an index only once a write commits [`Meta`].
    /// Its one caller, a build, has validated `config`, checked the folder
    /// ([`check_buildable`]) and created it, taking its writer lock.
    pub fn create(path: &Path, config: &IndexConfig) -> Result<Self> {
        // An interrupted first build is re-opened and finished; a damaged environment is
        // never handed to LMDB (and never silently replaced: it may hold the only copy).
        let file = if data_file(path).is_file() { Some(lmdb_file::check_meta(path, &data_file(path))?) } else { None };
        let env = open_env(path, config.map_size, Access::Write)?;
        if let Some(file) = &file {
            check_snapshot(&env, path, file, Depth::Tree)?;
        }
        let dbs = databases(&env, path, config, true)?;
        let meta = Meta { config: config.clone(), dim: 0, next_id: 0, n_items: 0, fingerprint: fingerprint(config, &[]), graph: None };
        Ok(Store {
            snapshot: Mutex::new(None),
            path: path.to_path_buf(),
            _closer: closer(&env),
            env,
            dbs,
            dbs_config: config.clone(),
            map_size: config.map_size,
            meta,
            failpoint: None,
            read_only: false,
            writer: None,
        })
    }

    /// This handle's snapshot, for one read (pinned to the newest commit if none is).
    pub fn read(&self, op: &str) -> Result<Snapshot<'_>> {
        let mut guard = self.snapshot.lock().unwrap_or_else(|p| p.into_inner());
        if guard.is_none() {
            *guard = Some(self.env.clone().static_read_txn().at(&self.path, op)?);
        }
        Ok(Snapshot(guard))
    }

    /// Whether `rtxn` sees the commit this handle's snapshot sees (same metadata).
    pub fn sees_same(&self, rtxn: &heed::RoTxn<'_>) -> bool {
        read_meta(rtxn, &self.path, self.dbs.meta).is_ok_and(|m| m == self.meta)
    }

    /// Whether another process committed a change since this handle's snapshot.
    pub fn is_behind(&self) -> Result<bool> {
        let rtxn = self.env.read_txn().at(&self.path, "reading metadata")?;
        Ok(!self.sees_same(&rtxn))
    }

    /// Pin the newest commit as this handle's snapshot and take its metadata (the databases
    /// reopened when another process rebuilt the index with another configuration). Returns
    /// whether the metadata changed. A folder whose first build has not committed yet keeps
    /// the metadata of an empty index.
    pub fn settle(&mut self) -> Result<bool> {
        loop {
            *self.snapshot.get_mut().unwrap_or_else(|p| p.into_inner()) = None;
            let pinned = self.env.clone().static_read_txn().at(&self.path, "reading metadata")?;
            let meta = match read_meta(&pinned, &self.path, self.dbs.meta) {
                Ok(meta) => meta,
                Err(Error::NotAnIndex { reason, .. }) if reason == INTERRUPTED => self.meta.clone(),
                Err(e) => return Err(e),
            };
            if meta.config.backend == self.dbs_config.backend && meta.config.metric == self.dbs_config.metric {
                let changed = meta != self.meta;
                self.meta = meta;
                *self.snapshot.get_mut().unwrap_or_else(|p| p.into_inner()) = Some(pinned);
                return Ok(changed);
            }
            // A database opened after a transaction began is unknown to it: open, then pin again.
            drop(pinned);
            self.dbs = open_databases(&self.env, &self.path, &meta.config, self.read_only)?;
            self.dbs_config = meta.config;
        }
    }

    /// Take the folder's writer lock for `op` (waiting for another process's change to end),
    /// unless this handle holds it already.
    pub fn lock_writer(&mut self, op: &str) -> Result<bool> {
        if self.writer.is_some() {
            return Ok(false);
        }
        self.writer = Some(FileLock::exclusive(&self.path.join(WRITER_LOCK), op)?);
        Ok(true)
    }

    /// Release the writer lock.
    pub fn unlock_writer(&mut self) {
        self.writer = None;
    }

    /// Hand over a writer lock taken before this store was opened (a build).
    pub fn hold_writer(&mut self, lock: FileLock) {
        self.writer = Some(lock);
    }

    fn resize(&mut self, new_size: usize) -> Result<()> {
        // LMDB grows the map only while this process has no transaction alive: the
        // snapshot is let go (`&mut self` guarantees no other is) and pinned again by the
        // next read.
        *self.snapshot.get_mut().unwrap_or_else(|p| p.into_inner()) = None;
        // SAFETY: no transaction of this environment is alive (see above): every other
        // transaction of this module is scoped inside a method call.
        unsafe { self.env.resize(new_size) }.at(&self.path, "growing the LMDB map")?;
        self.map_size = new_size;
        Ok(())
    }

    /// Point the databases at those of another configuration (a rebuild with new settings);
    /// the stored metadata changes only when the rebuild commits.
    pub fn reconfigure(&mut self, config: &IndexConfig) -> Result<()> {
        config.validate()?;
        *self.snapshot.get_mut().unwrap_or_else(|p| p.into_inner()) = None;
        self.dbs = databases(&self.env, &self.path, config, true)?;
        self.dbs_config = config.clone();
        Ok(())
    }

    /// The current map size in bytes.
    pub fn map_size(&self) -> usize {
        self.map_size
    }

    /// Run `f` in one write transaction and commit it with the updated `meta`; nothing is
    /// kept if `f` fails. When the map fills up, the transaction is dropped, the map doubled
    /// (up to `max_map_size`) and `f` run again from the start. The writer lock is held
    /// throughout (taken here unless the caller holds it), and a handle whose snapshot is
    /// older than the stored metadata changes nothing ([`Error::IndexChanged`]).
    pub fn write<T>(&mut self, op: &str, f: impl FnMut(&mut RwTxn<'_>, &Dbs, &mut Meta) -> Result<T>) -> Result<T> {
        if self.read_only {
            return Err(Error::IndexReadOnly { path: self.path.clone(), op: op.to_string() });
        }
        let took = self.lock_writer(op)?;
        let result = self.write_locked(op, f);
        if took {
            self.unlock_writer();
        }
        result
    }

    fn write_locked<T>(&mut self, op: &str, mut f: impl FnMut(&mut RwTxn<'_>, &Dbs, &mut Meta) -> Result<T>) -> Result<T> {
        loop {
            let mut meta = self.meta.clone();
            let outcome = (|| {
                let mut wtxn = self.env.write_txn().at(&self.path, op)?;
                // The metadata as this handle last saw it must still be the stored one (a
                // first build stores none until it commits).
                let current = match read_meta(&wtxn, &self.path, self.dbs.meta) {
                    Ok(stored) => stored == self.meta,
                    Err(Error::NotAnIndex { reason, .. }) if reason == INTERRUPTED => self.meta.n_items == 0 && self.meta.graph.is_none(),
                    Err(e) => return Err(e),
                };
                if !current {
                    return Err(Error::IndexChanged { path: self.path.clone(), op: op.to_string() });
                }
                let value = f(&mut wtxn, &self.dbs, &mut meta)?;
                let meta_json = serde_json::to_vec(&meta).expect("meta serialises");
                self.dbs.meta.put(&mut wtxn, "format_version", &FORMAT_VERSION.to_le_bytes()).at(&self.path, op)?;
                self.dbs.meta.put(&mut wtxn, "meta", &meta_json).at(&self.path, op)?;
                match &self.failpoint {
                    None => {}
                    Some(Failpoint::BeforeCommit) => {
                        return Err(Error::IndexStore {
                            path: self.path.clone(),
                            op: op.to_string(),
                            message: "injected failure before commit (failpoint)".into(),
                        });
                    }
                    Some(Failpoint::HangBeforeCommit(marker)) => {
                        let _ = std::fs::write(marker, b"ready");
                        loop {
                            std::thread::sleep(std::time::Duration::from_secs(3600));
                        }
                    }
                }
                wtxn.commit().at(&self.path, op)?;
                Ok(value)
            })();
            match outcome {
                Ok(value) => {
                    self.meta = meta;
                    // The handle reads its own change from now on.
                    self.settle()?;
                    return Ok(value);
                }
                Err(Error::IndexMapFull { .. }) => {
                    let limit = self.meta.config.max_map_size;
                    if self.map_size >= limit {
                        return Err(Error::IndexMapFull { path: self.path.clone(), map_size: self.map_size, limit });
                    }
                    let grown = self.map_size.saturating_mul(2).min(limit);
                    self.resize(grown)?;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// What is cheap to check at every open: the items the sources account for, those the
    /// `items` (and, where kept, `vectors`) databases hold and the count in the metadata agree.
    /// The full check of the stored bytes is `rac index verify` (the `verify` module).
    pub fn count_problem(&self) -> Result<Option<String>> {
        let rtxn = self.read("opening")?;
        let in_sources: u64 = read_sources(&rtxn, self.dbs.sources, &self.path)?.iter().map(|s| s.count as u64).sum();
        let items = self.dbs.items.len(&rtxn).at(&self.path, "opening")?;
        let vectors = if self.meta.config.backend.keeps_vectors_in_lmdb() { self.dbs.vectors.len(&rtxn).at(&self.path, "opening")? } else { items };
        let n = self.meta.n_items;
        Ok((in_sources != n || items != n || vectors != n)
            .then(|| format!("its metadata counts {n} items, its sources {in_sources}, its item records {items} and its vectors {vectors}")))
    }

    /// The size of the data file on disk, in bytes.
    pub fn size_on_disk(&self) -> u64 {
        std::fs::metadata(data_file(&self.path)).map(|m| m.len()).unwrap_or(0)
    }
}

/// The databases of an existing index: opened, or created where a writable index lacks one
/// (an index written before that database existed).
fn open_databases(env: &Env<WithoutTls>, path: &Path, config: &IndexConfig, read_only: bool) -> Result<Dbs> {
    match databases(env, path, config, false) {
        Err(Error::NotAnIndex { .. }) if !read_only => databases(env, path, config, true),
        other => other,
    }
}
