//! The library's error type.
//!
//! Every error that user input can cause names what it is about: the file, the line, the
//! field or the asset. Variants are grouped by category, in the spirit of candle's errors,
//! and carry enough context to act on without reading the source.

use std::path::{Path, PathBuf};

/// The result type used throughout `rac-core`.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in `rac-core`.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    // ---- files -------------------------------------------------------------------------
    /// A file or folder that should exist does not.
    #[error("{what} not found: {path}{hint}", hint = hint_suffix(.hint))]
    MissingFile {
        /// What the file is, in words ("split file", "manifest", …).
        what: String,
        /// Where it was looked for.
        path: PathBuf,
        /// What to do about it, if there is something to say.
        hint: Option<String>,
    },

    /// An I/O error on a known path. The OS error is told in words where it has a common
    /// cause (a full disk, a read-only folder, a folder where a file was expected), and is
    /// printed once: it is part of this message, not a separate source in the chain.
    #[error("{op} {path}: {}", io_meaning(.cause))]
    Io {
        /// The operation that failed ("reading", "writing", …).
        op: &'static str,
        /// The path it failed on.
        path: PathBuf,
        /// The underlying error.
        cause: std::io::Error,
    },

    /// A file whose content does not parse, at a known line.
    #[error("{path}:{line}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The 1-based line number.
        line: usize,
        /// What is wrong with that line.
        message: String,
    },

    /// A file whose format is wrong as a whole (bad magic, truncated, …).
    #[error("{path}: {message}")]
    Format {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },

    /// A file whose sha256 differs from the recorded one.
    #[error("checksum mismatch for {path}: expected sha256 {expected}, found {actual}{hint}", hint = hint_suffix(.hint))]
    Checksum {
        /// The file.
        path: PathBuf,
        /// The recorded sha256.
        expected: String,
        /// The sha256 of the file on disk.
        actual: String,
        /// What to do about it.
        hint: Option<String>,
    },

    // ---- configuration -----------------------------------------------------------------
    /// A configuration or manifest file that does not deserialise (typo'd key, wrong type).
    #[error("{path}: {message}")]
    Config {
        /// The file.
        path: PathBuf,
        /// The parser's message, which names the key and its line.
        message: String,
    },

    /// A configuration value that parsed but is not valid.
    #[error("{path}: field `{field}`: {message}")]
    InvalidField {
        /// The file the value came from.
        path: PathBuf,
        /// The dotted name of the field.
        field: String,
        /// What is wrong with the value.
        message: String,
    },

    /// A setting whose value is invalid, found by its section's own check; the loader of the
    /// file puts the section's name and the file in front ([`Error::in_section`]).
    #[error("field `{field}`: {message}")]
    Setting {
        /// The field's dotted name within its section.
        field: String,
        /// What is wrong with the value.
        message: String,
    },

    /// A spec string (an encoder's name) that is none of the known ones.
    #[error("unknown {what} `{spec}`; known: {known}")]
    UnknownSpec {
        /// What the spec names ("image encoder", "text encoder").
        what: &'static str,
        /// The string given.
        spec: String,
        /// The known spec strings.
        known: &'static str,
    },

    /// A spec string that needs a folder after its name and has none.
    #[error("{what} `{name}` needs a folder: `{name}:DIR`")]
    SpecNeedsFolder {
        /// What the spec names.
        what: &'static str,
        /// The name given.
        name: String,
    },

    // ---- data --------------------------------------------------------------------------
    /// An image that cannot be read or decoded.
    #[error("cannot decode image {path}{origin}: {message}; replace the file, or remove its line from the split list", origin = origin_suffix(.origin))]
    Image {
        /// The image file.
        path: PathBuf,
        /// Where the image was referenced from (a split file and line), if known.
        origin: Option<String>,
        /// The decoder's message.
        message: String,
    },

    /// A data set whose labels are inconsistent as a whole (a class with no training image).
    #[error("{path}: {message}")]
    Labels {
        /// The split file or manifest.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },

    // ---- assets ------------------------------------------------------------------------
    /// An asset that could not be fetched.
    #[error(
        "asset `{asset}`: `{command}` failed: {message}\n  to provide it by hand, place {file} at {expected_at} and run `rac assets fetch` again"
    )]
    Fetch {
        /// The asset's name.
        asset: String,
        /// The command that failed.
        command: String,
        /// Its error output, or why it could not run.
        message: String,
        /// The package file the asset comes from.
        file: String,
        /// Where a hand-provided copy of that file is picked up.
        expected_at: PathBuf,
    },

    /// An asset that is needed but not in the cache.
    #[error("asset `{asset}` is not in the cache at {path}; run `rac assets fetch`")]
    AssetMissing {
        /// The asset's name.
        asset: String,
        /// Where it was expected.
        path: PathBuf,
    },

    /// An asset whose files no longer have the registry's sha256 (a truncated copy, an edit).
    #[error("asset `{asset}` at {path} is damaged: {} differ from the registry's sha256; run `rac assets fetch {asset}` to repair it", files.join(", "))]
    AssetDamaged {
        /// The asset's name.
        asset: String,
        /// Its folder.
        path: PathBuf,
        /// The files that differ, relative to the folder.
        files: Vec<String>,
    },

    // ---- tensors -----------------------------------------------------------------------
    /// An error from candle.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),

    /// An error from polars while building or reading a table.
    #[error("table: {0}")]
    Polars(#[from] polars::error::PolarsError),

    /// A tensor that is missing or has the wrong shape or type.
    #[error("{path}: tensor `{name}`: {message}")]
    Tensor {
        /// The weights file.
        path: PathBuf,
        /// The tensor's name.
        name: String,
        /// What is wrong with it.
        message: String,
    },

    /// Two things that must agree in shape or count do not: a batch and its labels, logits
    /// and a loss, queries and an index. Said with what was expected and what was found.
    #[error("{what}: expected {expected}, found {found}")]
    Shape {
        /// What disagrees ("retrieval-only evaluation: neighbour lists").
        what: String,
        /// What was expected ("500, one per test label").
        expected: String,
        /// What was found.
        found: String,
    },

    /// Something that needs items has none (an empty split, a study with no cases).
    #[error("{what} is empty: {hint}")]
    Empty {
        /// What is empty.
        what: String,
        /// What to do about it.
        hint: String,
    },

    /// A label (class id) outside the classes a data set or model has.
    #[error("{what}: label {label} is out of range for {classes} classes (0 to {last}); check that the labels and the class count come from the same data set", last = .classes.saturating_sub(1))]
    LabelOutOfRange {
        /// Where the label was found.
        what: String,
        /// The label.
        label: i64,
        /// The number of classes.
        classes: usize,
    },

    /// A position past the end of what it indexes (an item of a split, a query of a table).
    #[error("{what} {index} is out of range: there are {len}, numbered from 0")]
    OutOfRange {
        /// What the position is of ("item of the training split").
        what: String,
        /// The position given.
        index: usize,
        /// How many there are.
        len: usize,
    },

    /// A table without a column an operation reads (a plot of another table).
    #[error("{what}: the table has no column {wanted} (it has: {have}); pass the table this was made for")]
    MissingColumn {
        /// What reads the table.
        what: String,
        /// The column (or columns, one of which will do).
        wanted: String,
        /// The columns it has, comma-separated.
        have: String,
    },

    /// A data set that lacks a split an operation needs.
    #[error("data set `{dataset}` has no {split} split{}", hint_suffix(.hint))]
    MissingSplit {
        /// The data set's name.
        dataset: String,
        /// The split ("training", "external", …).
        split: String,
        /// How to give it one.
        hint: Option<String>,
    },

    /// A name that is none of the known ones (an asset, a source to add, a run's method).
    #[error("unknown {what} `{name}`; known: {known}")]
    UnknownName {
        /// What the name names.
        what: &'static str,
        /// The name given.
        name: String,
        /// The known names, comma-separated.
        known: String,
    },

    /// Two or more runs of a sweep match where one was asked for.
    #[error("more than one run of method `{method}` ({first}, {second}, …); pick one by name from `rac runs`")]
    AmbiguousRun {
        /// The method asked for.
        method: String,
        /// The first two matching runs' names.
        first: String,
        /// The second.
        second: String,
    },

    /// A value that cannot be written in a file's format (a record's TOML).
    #[error("cannot write {path}: {message}")]
    Serialize {
        /// The file.
        path: PathBuf,
        /// The serialiser's message.
        message: String,
    },

    /// Training stopped where `TrainHooks::stop_after_epoch` asked, after its checkpoint was
    /// saved: the crash-safety tests' stand-in for a killed run. Not a failure of the run.
    #[error("training stopped after epoch {epoch} (TrainHooks::stop_after_epoch); run it again to resume from the checkpoint")]
    TrainingStopped {
        /// The last epoch trained.
        epoch: usize,
    },

    /// A state the code should never reach: a bug in rac, not a problem of the input.
    #[error("internal error: {0}; this is a bug in rac: please report it with the command or cell that led here")]
    Internal(String),

    /// Input that is wrong for the operation, with the reason, where no variant above fits.
    #[error("{0}")]
    InvalidInput(String),

    // ---- index -------------------------------------------------------------------------
    /// A source that cannot go into an index as given.
    #[error("source `{name}`: {message}")]
    InvalidSource {
        /// The source's name.
        name: String,
        /// What is wrong with it, and what to do.
        message: String,
    },

    /// A row that cannot be stored or searched (not finite; all zeros under cosine).
    #[error("{what}: {problem}")]
    BadVector {
        /// Whose row ("source `x`", "the query batch").
        what: String,
        /// Which row and why, with what to do.
        problem: String,
    },

    /// `drop_self` asked of queries that are no items of the index.
    #[error("{what}: drop_self needs to know which item each query is; query by item id or by source and key, or keep the query (drop_self = false)")]
    DropSelfUnknown {
        /// The queries ("the query batch of {path}", "neighbour lists of `test`").
        what: String,
    },

    /// An item id the index does not hold.
    #[error("{path}: no item with id {id} (removed, or never added); take ids from this index's search results")]
    UnknownItem {
        /// The index folder.
        path: PathBuf,
        /// The id.
        id: u32,
    },

    /// A folder that is not a retrieval index (no LMDB environment, or none written by us).
    #[error("{path} is not a retrieval index: {reason}")]
    NotAnIndex {
        /// The folder.
        path: PathBuf,
        /// Why it is not one.
        reason: String,
    },

    /// An index written by an incompatible version of the format.
    #[error("{path}: index format version {found}, but this build reads version {expected}; rebuild it with `rac index build`")]
    IndexVersion {
        /// The index folder.
        path: PathBuf,
        /// The version stored in the index.
        found: u32,
        /// The version this build reads and writes.
        expected: u32,
    },

    /// A vector whose dimension differs from the index's.
    #[error("{path}: {what} has vectors of dimension {received}, but the index holds dimension {expected}")]
    IndexDimension {
        /// The index folder.
        path: PathBuf,
        /// What the vectors are ("query batch", "source `x`").
        what: String,
        /// The index's dimension.
        expected: usize,
        /// The dimension given.
        received: usize,
    },

    /// A query on an index that holds no items.
    #[error("{path}: the index is empty; add a source first (`rac index add-source`)")]
    IndexEmpty {
        /// The index folder.
        path: PathBuf,
    },

    /// A number of neighbours that the index cannot return.
    #[error("{path}: k = {k} is invalid: {reason}")]
    IndexK {
        /// The index folder.
        path: PathBuf,
        /// The k asked for.
        k: usize,
        /// Why it is invalid (0, or more than the items in the index).
        reason: String,
    },

    /// A source name that the index does not hold.
    #[error("{path}: no source named `{name}` (sources: {known})")]
    UnknownSource {
        /// The index folder.
        path: PathBuf,
        /// The name asked for.
        name: String,
        /// The sources the index holds, comma-separated.
        known: String,
    },

    /// A source added under a name the index already holds.
    #[error("{path}: a source named `{name}` is already in the index; remove it first or choose another name")]
    SourceExists {
        /// The index folder.
        path: PathBuf,
        /// The name.
        name: String,
    },

    /// The LMDB map is full and may not grow further.
    #[error(
        "{path}: the LMDB map is full at {map_size} bytes and may not grow past the limit of {limit} bytes; raise `max_map_size` in the index config"
    )]
    IndexMapFull {
        /// The index folder.
        path: PathBuf,
        /// The map size reached.
        map_size: usize,
        /// The configured limit.
        limit: usize,
    },

    /// A run record's file differs from the checksum its run wrote: edited, cut short,
    /// deleted or added since. Records are shared; a changed one is never served.
    #[error(
        "{dir}: {file} {how} after the run was recorded (the record's COMPLETE holds the checksums its run wrote); run it again with --force, or restore the file"
    )]
    RecordChanged {
        /// The record folder.
        dir: PathBuf,
        /// The file.
        file: String,
        /// What happened to it: "was changed", "was deleted", "was added".
        how: String,
    },

    /// Another process holds the lock of a file or folder (an index being changed, a cache
    /// entry being built) for longer than this process was allowed to wait.
    #[error(
        "{path}: {op}: {holder} has held its lock for more than {waited_s} s ({var} sets how long to wait; unset, a process waits as long as it takes)"
    )]
    Busy {
        /// The locked file or folder.
        path: PathBuf,
        /// What this process wanted to do.
        op: String,
        /// Who holds the lock, as it wrote itself down ("process 1234, adding a source").
        holder: String,
        /// How long this process waited, in seconds.
        waited_s: u64,
        /// The environment variable that sets the wait.
        var: &'static str,
    },

    /// A handle's snapshot of an index is older than the index: another process changed it
    /// since this handle was opened. Opening the index again sees the change.
    #[error("{path}: {op}: another process changed the index since this handle was opened; open it again")]
    IndexChanged {
        /// The index folder.
        path: PathBuf,
        /// What was refused.
        op: String,
    },

    /// A change asked of an index opened read-only.
    #[error(
        "{path}: {op}: the index was opened read-only (its folder cannot be written: a read-only filesystem or another user's folder); \
         it can be queried, not changed: copy the folder somewhere writable to change it"
    )]
    IndexReadOnly {
        /// The index folder.
        path: PathBuf,
        /// The change that was refused.
        op: String,
    },

    /// An error of the storage layer (LMDB, arroy, hannoy) while doing something to an index.
    #[error("{path}: {op}: {message}")]
    IndexStore {
        /// The index folder.
        path: PathBuf,
        /// What was being done.
        op: String,
        /// The storage layer's message.
        message: String,
    },
}

fn hint_suffix(hint: &Option<String>) -> String {
    hint.as_ref().map(|h| format!(" ({h})")).unwrap_or_default()
}

fn origin_suffix(origin: &Option<String>) -> String {
    origin.as_ref().map(|o| format!(" (referenced at {o})")).unwrap_or_default()
}

impl Error {
    /// An I/O error while `op`-ing `path`; a not-found error becomes [`Error::MissingFile`].
    pub fn io(op: &'static str, what: &str, path: &Path, source: std::io::Error) -> Self {
        if source.kind() == std::io::ErrorKind::NotFound {
            Error::MissingFile { what: what.to_string(), path: path.to_path_buf(), hint: None }
        } else {
            Error::Io { op, path: path.to_path_buf(), cause: source }
        }
    }

    /// A section's [`Error::Setting`] as the field of the file `path` it was loaded from,
    /// named once in full (`index.arroy.n_trees`); any other error names the section.
    pub fn in_section(self, path: &Path, section: &str) -> Self {
        match self {
            Error::Setting { field, message } => Error::InvalidField { path: path.into(), field: format!("{section}.{field}"), message },
            other => Error::InvalidField { path: path.into(), field: section.into(), message: other.to_string() },
        }
    }

    /// A section's [`Error::Setting`] found after loading (where the data decides, as for
    /// `retrieval.k_max` against the index's size): the field named in full; other errors
    /// are returned unchanged.
    pub fn within(self, section: &str) -> Self {
        match self {
            Error::Setting { field, message } => Error::Setting { field: format!("{section}.{field}"), message },
            other => other,
        }
    }

    /// Attach a hint to a [`Error::MissingFile`]; other errors are returned unchanged.
    pub fn with_hint(self, new_hint: impl Into<String>) -> Self {
        match self {
            Error::MissingFile { what, path, .. } => Error::MissingFile { what, path, hint: Some(new_hint.into()) },
            other => other,
        }
    }
}

/// An OS error in words, for the causes a user can act on.
pub(crate) fn io_meaning(e: &std::io::Error) -> String {
    use std::io::ErrorKind::*;
    match e.kind() {
        StorageFull => format!("the disk is full ({e}); free space on that filesystem, or point RAC_HOME at another one"),
        ReadOnlyFilesystem => format!("the filesystem is read-only ({e})"),
        PermissionDenied => format!("permission denied ({e}); is the folder read-only?"),
        IsADirectory => format!("it is a folder, not a file ({e})"),
        _ => e.to_string(),
    }
}
