//! Provenance: which code, data, weights and machine produce an experiment's numbers, as a
//! two-column table a notebook shows in its set-up cell (each run record also keeps the
//! git revision and the crate versions).

use std::path::Path;
use std::time::SystemTime;

use polars::prelude::*;

use super::config::Experiment;
use super::record::git_revision;
use crate::assets::AssetCache;
use crate::data::DataManifest;
use crate::error::Result;
use crate::fsio;

/// The provenance of an experiment: `(item, value)` rows.
#[derive(Debug, Clone, PartialEq)]
pub struct Provenance {
    /// In display order.
    pub rows: Vec<(String, String)>,
}

/// The first line a command prints, or `None` when it cannot run.
fn command_line(program: &str, args: &[&str]) -> Option<String> {
    let out = std::process::Command::new(program).args(args).output().ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).lines().next().unwrap_or_default().trim().to_string())
}

/// `abc123def456` and whether tracked files differ from it.
fn revision(dir: &Path) -> String {
    match git_revision(dir) {
        None => "not in a git checkout".into(),
        Some(rev) => match command_line("git", &["-C", &dir.to_string_lossy(), "status", "--porcelain", "--untracked-files=no"]) {
            Some(line) if !line.is_empty() => format!("{rev} (tree dirty)"),
            Some(_) => format!("{rev} (clean)"),
            None => rev,
        },
    }
}

/// A file's sha256, or why there is none.
fn sha(path: &Path) -> String {
    fsio::sha256_file(path).unwrap_or_else(|e| format!("unreadable: {e}"))
}

impl Provenance {
    /// Collect it for `exp`: the git revision of the working folder, the versions, the
    /// manifest and its data files, the encoders' weight files (each sha256 computed
    /// now), the device, the threads and the date.
    pub fn of(exp: &Experiment, cache: &AssetCache) -> Result<Self> {
        let mut rows: Vec<(String, String)> = Vec::new();
        let mut row = |k: &str, v: String| rows.push((k.to_string(), v));
        row("git revision", revision(Path::new(".")));
        row("rac-core", env!("CARGO_PKG_VERSION").to_string());
        row("rustc", command_line("rustc", &["-V"]).unwrap_or_else(|| "not on PATH".into()));
        let manifest_path = &exp.data.manifest;
        let manifest = DataManifest::load(manifest_path)?;
        row("data manifest", format!("{} ({})", manifest.name, manifest_path.display()));
        row("manifest sha256", sha(manifest_path));
        if let Some(idx) = &manifest.idx {
            let dir = cache.asset_dir(&idx.asset);
            for file in [&idx.train_images, &idx.train_labels, &idx.test_images, &idx.test_labels] {
                row(&format!("data: {file}"), sha(&dir.join(file)));
            }
        }
        if let Some(lists) = &manifest.split_list {
            for (split, file) in [("train", Some(&lists.train)), ("val", lists.val.as_ref()), ("test", Some(&lists.test))] {
                if let Some(f) = file {
                    row(&format!("data: {split} list {}", f.file), f.sha256.clone().unwrap_or_else(|| "not recorded in the manifest".into()));
                }
            }
        }
        let image = exp.image_encoder()?;
        row("image encoder E", exp.encoder.image.clone());
        let weights = image.weights(cache)?;
        row(&format!("E weights: {}", weights.file_name().unwrap_or_default().to_string_lossy()), sha(&weights));
        row("text encoder T", exp.retrieval.text_encoder.clone());
        match exp.text_encoder()?.weights(cache)? {
            Some(w) => row(&format!("T weights: {}", w.file_name().unwrap_or_default().to_string_lossy()), sha(&w)),
            None => row("T weights", format!("none: random word vectors, seed {}", exp.train.seed)),
        }
        let device = match exp.train.device.resolve("train.device") {
            Ok(d) if d.is_cpu() => "cpu".to_string(),
            Ok(d) => format!("{:?}", d.location()),
            Err(e) => format!("unavailable: {e}"),
        };
        row("device", format!("{device} (train.device = {})", exp.train.device));
        row("threads", std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1).to_string());
        row("cpu kernels", crate::device::cpu_kernels());
        row("date (UTC)", humantime::format_rfc3339_seconds(SystemTime::now()).to_string());
        Ok(Provenance { rows })
    }

    /// As a table: `item`, `value`.
    pub fn table(&self) -> Result<DataFrame> {
        Ok(df!(
            "item" => self.rows.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>(),
            "value" => self.rows.iter().map(|(_, v)| v.as_str()).collect::<Vec<_>>(),
        )?)
    }
}
