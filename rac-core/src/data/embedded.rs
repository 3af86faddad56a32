//! The embedded default data set, Fashion-MNIST-LT: its manifest is compiled in, so the demo
//! and the notebooks run from any folder with nothing but the fetched assets.

use std::path::PathBuf;

use super::dataset::Dataset;
use super::manifest::{DataManifest, DataOverrides};
use crate::assets::AssetCache;
use crate::error::Result;
use crate::fsio;

/// The default data set's manifest (Fashion-MNIST-LT), embedded so the demo runs anywhere.
pub const DEFAULT_MANIFEST: &str = include_str!("../../../data-manifests/fashion-mnist-lt.toml");

/// Load the embedded Fashion-MNIST-LT.
pub fn embedded_default(cache: &AssetCache) -> Result<Dataset> {
    let path = PathBuf::from("<embedded>/data-manifests/fashion-mnist-lt.toml");
    let manifest = DataManifest::parse(&path, DEFAULT_MANIFEST)?;
    Dataset::from_manifest(manifest, &path, &DataOverrides::default(), cache)
}

/// The path of the default manifest: the repository's copy when the working folder is the
/// repository, else the embedded copy written under `$RAC_HOME/manifests`.
pub fn default_manifest_path(cache: &AssetCache) -> Result<PathBuf> {
    let here = PathBuf::from("data-manifests/fashion-mnist-lt.toml");
    if here.is_file() {
        return Ok(here);
    }
    let path = cache.home().join("manifests").join("fashion-mnist-lt.toml");
    fsio::write_atomic(&path, DEFAULT_MANIFEST.as_bytes())?;
    Ok(path)
}
