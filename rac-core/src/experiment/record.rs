//! `RunRecord`: what a run leaves on disk under `runs/<name>-<config hash>/`, and how a
//! notebook loads records back as polars DataFrames.
//!
//! | file | content |
//! |---|---|
//! | `record.toml` | the resolved experiment, seed, crate versions, git revision, wall time |
//! | `metrics.csv` | one row per (method, branch): top1, top5, many, medium, few |
//! | `per_class.csv` | one row per class: train count, bucket, accuracy per branch |
//! | `epochs.csv` | the training log |
//! | `<table>.csv` | a study's own tables (`memory.csv`: the run-time memory steps) |
//! | `dtypes.toml` | each table's column types, so a loaded table has the types it was computed with |
//! | `COMPLETE` | written last: the sha256 of every other file; a folder without it is an unfinished run |
//!
//! A record is written into a temporary sibling folder and renamed into place, so a run
//! that fails leaves no partial record behind. Records are what colleagues share, so a
//! loaded one is checked against the checksums its run wrote: a table edited, cut short or
//! deleted since is named ([`Error::RecordChanged`]), never served, and a run whose record
//! is damaged trains again, with a warning ([`reuse`]).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use polars::prelude::*;
use serde::{Deserialize, Serialize};

use super::config::Experiment;
use super::prepared::{Prepared, RunEnv};
use crate::error::{Error, Result};
use crate::eval::{Branch, BranchMetrics, evaluate, per_class_frame};
use crate::fsio;
use crate::model::{Mode, Outputs};
use crate::train::EpochLog;

const COMPLETE: &str = "COMPLETE";
const DTYPES: &str = "dtypes.toml";

/// Column types by table and column name, as `dtypes.toml` stores them.
type TableTypes = BTreeMap<String, BTreeMap<String, String>>;

/// The metadata of a run, stored as `record.toml`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunMeta {
    /// The experiment's name.
    pub name: String,
    /// The hash of its resolved configuration.
    pub config_hash: String,
    /// The seed.
    pub seed: u64,
    /// Versions of rac-core and the crates that shape results.
    pub versions: BTreeMap<String, String>,
    /// The git revision of the working tree, when known.
    pub git_revision: Option<String>,
    /// Wall time of the run in seconds.
    pub wall_s: f64,
    /// The method's name in tables (`CE`, `BalCE`, `LACE`, `retrieval`, `RAC`).
    pub method: String,
    /// The split the metrics are on: `test`, or `val` (held out of train, for tuning).
    pub eval_split: String,
    /// Items in the index the run's retrieval branch read (absent in older records).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index_items: Option<u64>,
    /// The study the run belongs to beyond its experiment (`memory: external`), which
    /// its record's hash covers too; absent for plain runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub study: Option<String>,
    /// The resolved experiment.
    pub experiment: Experiment,
}

/// A finished run.
#[derive(Debug, Clone)]
pub struct RunRecord {
    /// Its metadata and configuration.
    pub meta: RunMeta,
    /// One row per branch: `method`, `branch`, `top1`, `top5`, `many`, `medium`, `few`.
    pub metrics: DataFrame,
    /// One row per class.
    pub per_class: DataFrame,
    /// The training log.
    pub epochs: DataFrame,
    /// A study's own tables, by name (`memory`), each stored as `<name>.csv`.
    pub tables: BTreeMap<String, DataFrame>,
    /// Where it is stored.
    pub dir: PathBuf,
    /// What loading it noticed (a record written before checksums were kept).
    pub notes: Vec<String>,
}

/// The tables every record has; any other `.csv` in a record folder is a study's table.
const STANDARD_TABLES: [&str; 3] = ["metrics", "per_class", "epochs"];

/// The record folder of an experiment under `runs_dir`.
pub fn record_dir(runs_dir: &Path, exp: &Experiment) -> PathBuf {
    runs_dir.join(format!("{}-{}", exp.name, exp.config_hash()))
}

/// Whether a complete record of this experiment exists.
pub fn is_complete(runs_dir: &Path, exp: &Experiment) -> bool {
    record_dir(runs_dir, exp).join(COMPLETE).is_file()
}

/// Versions of the crates that shape results, read from the workspace's lock file.
pub fn crate_versions() -> BTreeMap<String, String> {
    const LOCK: &str = include_str!("../../../Cargo.lock");
    const WANTED: [&str; 7] = ["candle-core", "candle-nn", "polars", "arroy", "hannoy", "heed", "tokenizers"];
    let mut out = BTreeMap::new();
    out.insert("rac-core".to_string(), env!("CARGO_PKG_VERSION").to_string());
    let mut name: Option<&str> = None;
    for line in LOCK.lines() {
        if let Some(n) = line.strip_prefix("name = ") {
            name = Some(n.trim_matches('"'));
        } else if let (Some(n), Some(v)) = (name, line.strip_prefix("version = ")) {
            if WANTED.contains(&n) {
                out.entry(n.to_string()).or_insert_with(|| v.trim_matches('"').to_string());
            }
            name = None;
        }
    }
    out
}

/// The git revision of the folder `dir` is in, when git knows it.
pub fn git_revision(dir: &Path) -> Option<String> {
    let out = std::process::Command::new("git").arg("-C").arg(dir).args(["rev-parse", "--short=12", "HEAD"]).output().ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_string()).filter(|s| !s.is_empty())
}

/// The metrics table of one run: one row per branch, with the method in front.
pub fn metrics_table(method: &str, rows: &[BranchMetrics]) -> Result<DataFrame> {
    let labelled: Vec<(String, BranchMetrics)> = rows.iter().map(|m| (method.to_string(), m.clone())).collect();
    let mut df = crate::eval::metrics_frame(&labelled)?;
    df.rename("run", "method".into())?;
    Ok(df)
}

/// The training log as a table.
pub fn epochs_table(log: &[EpochLog]) -> Result<DataFrame> {
    Ok(df!(
        "epoch" => log.iter().map(|l| l.epoch as u32).collect::<Vec<_>>(),
        "loss" => log.iter().map(|l| l.loss).collect::<Vec<_>>(),
        "lr" => log.iter().map(|l| l.lr).collect::<Vec<_>>(),
        "samples_per_s" => log.iter().map(|l| l.samples_per_s).collect::<Vec<_>>(),
        "test_top1" => log.iter().map(|l| l.test_top1).collect::<Vec<_>>(),
    )?)
}

fn write_csv(df: &DataFrame, path: &Path) -> Result<()> {
    let mut df = df.clone();
    let mut buf = Vec::new();
    CsvWriter::new(&mut buf).include_header(true).finish(&mut df)?;
    std::fs::write(path, buf).map_err(|e| Error::Io { op: "writing", path: path.into(), cause: e })
}

/// The column types of a table, by name. CSV keeps no types, and a reader infers `i64` for
/// an `u32` or `u64` column: without these, a loaded record's table would not be the one
/// that was computed (its header differs in a notebook, and `--verify` says so).
fn column_types(df: &DataFrame) -> BTreeMap<String, String> {
    df.columns()
        .iter()
        .filter_map(|c| {
            let dtype = c.dtype().to_string();
            dtype_of_name(&dtype).map(|_| (c.name().to_string(), dtype))
        })
        .collect()
}

/// The polars type that `name` (a `DataType`'s display form) stands for, among those a CSV
/// column can hold.
fn dtype_of_name(name: &str) -> Option<DataType> {
    Some(match name {
        "bool" => DataType::Boolean,
        "str" => DataType::String,
        "i8" => DataType::Int8,
        "i16" => DataType::Int16,
        "i32" => DataType::Int32,
        "i64" => DataType::Int64,
        "u8" => DataType::UInt8,
        "u16" => DataType::UInt16,
        "u32" => DataType::UInt32,
        "u64" => DataType::UInt64,
        "f32" => DataType::Float32,
        "f64" => DataType::Float64,
        _ => return None,
    })
}

/// `dtypes.toml` of a record folder; empty for a record written before it existed (its
/// tables are then read with inferred types).
fn read_types(dir: &Path) -> Result<TableTypes> {
    let path = dir.join(DTYPES);
    if !path.is_file() {
        return Ok(TableTypes::new());
    }
    let text = fsio::read_to_string(&path, "run record's column types")?;
    toml::from_str(&text).map_err(|e| Error::Config { path, message: e.to_string() })
}

/// A record's table, read with the column types `dtypes.toml` gives for it.
fn read_csv(dir: &Path, name: &str, types: &TableTypes) -> Result<DataFrame> {
    let path = dir.join(format!("{name}.csv"));
    if !path.is_file() {
        return Err(Error::MissingFile { what: "run table".into(), path, hint: None });
    }
    let mut overwrite = Schema::default();
    for (column, dtype) in types.get(name).into_iter().flatten() {
        let Some(dtype) = dtype_of_name(dtype) else {
            return Err(Error::InvalidField {
                path: dir.join(DTYPES),
                field: format!("{name}.{column}"),
                message: format!("`{dtype}` is not a column type a run table can hold"),
            });
        };
        overwrite.insert(column.as_str().into(), dtype);
    }
    let options = CsvReadOptions::default().with_has_header(true).with_schema_overwrite((!overwrite.is_empty()).then(|| Arc::new(overwrite)));
    Ok(options.try_into_reader_with_file_path(Some(path))?.finish()?)
}

impl RunRecord {
    /// Write a record atomically into `runs_dir`: a temporary folder renamed into place.
    pub fn save(
        meta: RunMeta,
        metrics: DataFrame,
        per_class: DataFrame,
        epochs: DataFrame,
        tables: BTreeMap<String, DataFrame>,
        runs_dir: &Path,
    ) -> Result<RunRecord> {
        let dir = runs_dir.join(format!("{}-{}", meta.name, meta.config_hash));
        let tmp = runs_dir.join(format!(".{}-{}.tmp-{}", meta.name, meta.config_hash, std::process::id()));
        let _ = std::fs::remove_dir_all(&tmp);
        fsio::create_dir_all(&tmp)?;
        let written = (|| -> Result<()> {
            let toml = toml::to_string(&meta).map_err(|e| Error::Serialize { path: tmp.join("record.toml"), message: e.to_string() })?;
            std::fs::write(tmp.join("record.toml"), toml).map_err(|e| Error::Io { op: "writing", path: tmp.join("record.toml"), cause: e })?;
            let standard = STANDARD_TABLES.into_iter().zip([&metrics, &per_class, &epochs]);
            let mut types = TableTypes::new();
            for (name, table) in standard.chain(tables.iter().map(|(name, table)| (name.as_str(), table))) {
                write_csv(table, &tmp.join(format!("{name}.csv")))?;
                types.insert(name.to_string(), column_types(table));
            }
            let types = toml::to_string(&types).map_err(|e| Error::Serialize { path: tmp.join(DTYPES), message: e.to_string() })?;
            std::fs::write(tmp.join(DTYPES), types).map_err(|e| Error::Io { op: "writing", path: tmp.join(DTYPES), cause: e })?;
            let sums = checksums(&tmp)?;
            let sums =
                toml::to_string(&Checksums { sha256: sums }).map_err(|e| Error::Serialize { path: tmp.join(COMPLETE), message: e.to_string() })?;
            std::fs::write(tmp.join(COMPLETE), sums).map_err(|e| Error::Io { op: "writing", path: tmp.join(COMPLETE), cause: e })?;
            if dir.exists() {
                std::fs::remove_dir_all(&dir).map_err(|e| Error::Io { op: "replacing", path: dir.clone(), cause: e })?;
            }
            std::fs::rename(&tmp, &dir).map_err(|e| Error::Io { op: "renaming into", path: dir.clone(), cause: e })
        })();
        if let Err(e) = written {
            let _ = std::fs::remove_dir_all(&tmp);
            return Err(e);
        }
        Ok(RunRecord { meta, metrics, per_class, epochs, tables, dir, notes: Vec::new() })
    }

    /// Load a complete record from its folder.
    pub fn load(dir: &Path) -> Result<RunRecord> {
        if !dir.join(COMPLETE).is_file() {
            return Err(Error::MissingFile {
                what: "complete run record".into(),
                path: dir.join(COMPLETE),
                hint: Some("the run did not finish".into()),
            });
        }
        let notes = check_sums(dir)?;
        let text = fsio::read_to_string(&dir.join("record.toml"), "run record")?;
        let meta: RunMeta = toml::from_str(&text).map_err(|e| Error::Config { path: dir.join("record.toml"), message: e.to_string() })?;
        let types = read_types(dir)?;
        let mut tables = BTreeMap::new();
        let entries = std::fs::read_dir(dir).map_err(|e| Error::Io { op: "listing", path: dir.into(), cause: e })?;
        for entry in entries.flatten() {
            let path = entry.path();
            let Some(name) = path.file_name().and_then(|n| n.to_str()).and_then(|n| n.strip_suffix(".csv")) else { continue };
            if !STANDARD_TABLES.contains(&name) {
                tables.insert(name.to_string(), read_csv(dir, name, &types)?);
            }
        }
        Ok(RunRecord {
            tables,
            meta,
            metrics: read_csv(dir, "metrics", &types)?,
            per_class: read_csv(dir, "per_class", &types)?,
            epochs: read_csv(dir, "epochs", &types)?,
            dir: dir.to_path_buf(),
            notes,
        })
    }

    /// This record's metrics with `run` and `config_hash` columns in front.
    pub fn metrics_with_run(&self) -> Result<DataFrame> {
        let n = self.metrics.height();
        let mut cols = vec![
            Column::new("run".into(), vec![self.meta.name.as_str(); n]),
            Column::new("config_hash".into(), vec![self.meta.config_hash.as_str(); n]),
        ];
        cols.extend(self.metrics.columns().iter().cloned());
        Ok(DataFrame::new_infer_height(cols)?)
    }
}

/// What `COMPLETE` holds: the sha256 of every other file of the record, by name.
#[derive(Serialize, Deserialize)]
struct Checksums {
    sha256: BTreeMap<String, String>,
}

/// The sha256 of every file of a record folder but `COMPLETE`, by name.
fn checksums(dir: &Path) -> Result<BTreeMap<String, String>> {
    let entries = std::fs::read_dir(dir).map_err(|e| Error::Io { op: "listing", path: dir.into(), cause: e })?;
    let mut sums = BTreeMap::new();
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name != COMPLETE && entry.path().is_file() {
            sums.insert(name, fsio::sha256_file(&entry.path())?);
        }
    }
    Ok(sums)
}

/// Check a record's files against the checksums its run wrote into `COMPLETE`. A record
/// written before they were kept (an empty `COMPLETE`) loads, with a note.
fn check_sums(dir: &Path) -> Result<Vec<String>> {
    let complete = dir.join(COMPLETE);
    let text = fsio::read_to_string(&complete, "run record's checksums")?;
    if text.trim().is_empty() {
        return Ok(vec![format!("{}: a record written before checksums were kept; its tables are not checked", dir.display())]);
    }
    let recorded: Checksums = toml::from_str(&text).map_err(|e| Error::Config { path: complete.clone(), message: e.to_string() })?;
    let found = checksums(dir)?;
    let changed = |file: &str, how: &str| Error::RecordChanged { dir: dir.to_path_buf(), file: file.to_string(), how: how.to_string() };
    for (file, sum) in &recorded.sha256 {
        match found.get(file) {
            None => return Err(changed(file, "was deleted")),
            Some(now) if now != sum => return Err(changed(file, "was changed")),
            Some(_) => {}
        }
    }
    if let Some(extra) = found.keys().find(|f| f.ends_with(".csv") && !recorded.sha256.contains_key(*f)) {
        return Err(changed(extra, "was added"));
    }
    Ok(Vec::new())
}

/// The complete record of `exp` under `runs_dir`, to be used instead of training: `None`
/// when there is none, or when it was damaged after its run (edited, truncated, deleted
/// tables), which is then said in a warning and trained again.
pub fn reuse(runs_dir: &Path, exp: &Experiment) -> Result<Option<RunRecord>> {
    reuse_dir(&record_dir(runs_dir, exp))
}

/// [`reuse`] for a record folder named by its caller (a study's).
pub(crate) fn reuse_dir(dir: &Path) -> Result<Option<RunRecord>> {
    if !dir.join(COMPLETE).is_file() {
        return Ok(None);
    }
    match RunRecord::load(dir) {
        Ok(rec) => Ok(Some(rec)),
        Err(e @ Error::RecordChanged { .. }) => {
            eprintln!("warning: {e}; training it again");
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

/// The record among `records` whose method (`CE`, `BalCE`, `LACE`, `LDAM`, `retrieval`,
/// `RAC`, as in tables) is `method`; an error lists the methods there are when none is, or
/// names the runs when several are.
pub fn by_method<'a>(records: &'a [RunRecord], method: &str) -> Result<&'a RunRecord> {
    let mut found = records.iter().filter(|r| r.meta.method == method);
    match (found.next(), found.next()) {
        (Some(r), None) => Ok(r),
        (None, _) => {
            let methods: Vec<&str> = records.iter().map(|r| r.meta.method.as_str()).collect();
            Err(Error::UnknownName {
                what: "run method",
                name: method.to_string(),
                known: format!("{} (of {} runs)", methods.join(", "), records.len()),
            })
        }
        (Some(a), Some(b)) => Err(Error::AmbiguousRun { method: method.to_string(), first: a.meta.name.clone(), second: b.meta.name.clone() }),
    }
}

/// Every complete record under `runs_dir`, sorted by folder name.
pub fn list_runs(runs_dir: &Path) -> Result<Vec<RunRecord>> {
    let Ok(entries) = std::fs::read_dir(runs_dir) else { return Ok(Vec::new()) };
    let mut dirs: Vec<PathBuf> = entries.flatten().map(|e| e.path()).filter(|p| p.join(COMPLETE).is_file()).collect();
    dirs.sort();
    dirs.iter().map(|d| RunRecord::load(d)).collect()
}

/// The metrics of every complete record under `runs_dir`, in one DataFrame.
pub fn load_runs(runs_dir: &Path) -> Result<DataFrame> {
    let frames = list_runs(runs_dir)?.iter().map(|r| r.metrics_with_run()).collect::<Result<Vec<_>>>()?;
    crate::eval::vstack_all(frames, &format!("no complete run records under {}", runs_dir.display()))
}

/// Every branch of a trained model's outputs evaluated on the evaluation items (all three
/// for a RAC model).
pub fn branch_metrics(exp: &Experiment, out: &Outputs, labels: &[usize], counts: &[usize]) -> Result<Vec<BranchMetrics>> {
    let mut branches: Vec<BranchMetrics> = Vec::new();
    if let Some(b) = &out.base {
        branches.push(evaluate(Branch::Base, b, labels, counts)?);
    }
    if let Some(rl) = &out.retrieval {
        branches.push(evaluate(Branch::Retrieval, rl, labels, counts)?);
    }
    if exp.model.mode == Mode::Rac {
        branches.push(evaluate(Branch::Fused, &out.fused, labels, counts)?);
    }
    Ok(branches)
}

/// What a study adds to a run's record: its name and key (the record's hash is the
/// experiment's and the study's together), and its tables.
#[derive(Default)]
pub(crate) struct Study {
    /// A line naming the study and its settings, with the record's hash.
    pub label: Option<(String, String)>,
    /// Its tables.
    pub tables: BTreeMap<String, DataFrame>,
}

/// Evaluate every branch of a trained model's outputs, save the run's record, then drop its
/// training checkpoint: the one ending of both runners (and of the memory study).
#[allow(clippy::too_many_arguments)]
pub(crate) fn save_run(
    exp: &Experiment,
    prep: &Prepared,
    env: &RunEnv,
    started: Instant,
    out: &Outputs,
    log: &[EpochLog],
    checkpoint_dir: &Path,
    study: Study,
) -> Result<RunRecord> {
    let counts = &prep.train_counts;
    let branches = branch_metrics(exp, out, &prep.eval.labels, counts)?;
    let method = exp.method_name();
    let (study_label, config_hash) = match study.label {
        Some((label, hash)) => (Some(label), hash),
        None => (None, exp.config_hash()),
    };
    let meta = RunMeta {
        name: exp.name.clone(),
        config_hash,
        seed: exp.train.seed,
        versions: crate_versions(),
        git_revision: git_revision(Path::new(".")),
        wall_s: started.elapsed().as_secs_f64(),
        method: method.clone(),
        eval_split: prep.eval_split.name().to_string(),
        index_items: Some(prep.index.len() as u64),
        study: study_label,
        experiment: exp.clone(),
    };
    let metrics = metrics_table(&method, &branches)?;
    let per_class = per_class_frame(&prep.dataset.class_texts, counts, &branches)?;
    let epochs = epochs_table(log)?;
    let rec = RunRecord::save(meta, metrics, per_class, epochs, study.tables, &env.runs_dir)?;
    let _ = std::fs::remove_dir_all(checkpoint_dir);
    Ok(rec)
}
