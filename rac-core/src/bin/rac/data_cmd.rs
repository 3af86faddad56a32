//! `rac data stats`, and the flags every data-reading command shares.

use std::path::PathBuf;

use anyhow::Result;
use clap::{Args, Subcommand};
use rac_core::assets::AssetCache;
use rac_core::data::{DataOverrides, Dataset};

/// The `data` command group.
#[derive(Subcommand)]
pub enum DataCmd {
    /// Print the long-tail statistics of a data set's training split.
    Stats {
        /// The data manifest (TOML).
        manifest: PathBuf,
        /// Print machine-readable JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        paths: PathArgs,
    },
}

/// Where split lists and images are, overriding the manifest.
#[derive(Args, Clone, Debug)]
pub struct PathArgs {
    /// The folder of the split files (overrides the manifest).
    #[arg(long, env = "RAC_SPLIT_DIR")]
    pub split_dir: Option<PathBuf>,
    /// The folder image paths are relative to (overrides the manifest).
    #[arg(long, env = "RAC_IMAGE_ROOT")]
    pub image_root: Option<PathBuf>,
}

impl PathArgs {
    /// As library overrides.
    pub fn overrides(&self) -> DataOverrides {
        DataOverrides { split_dir: self.split_dir.clone(), image_root: self.image_root.clone() }
    }
}

pub fn run(cmd: DataCmd, cache: &AssetCache) -> Result<()> {
    match cmd {
        DataCmd::Stats { manifest, json, paths } => {
            let ds = Dataset::load(&manifest, &paths.overrides(), cache)?;
            print_stats(&ds, json)
        }
    }
}

/// Print a data set's long-tail statistics as a report or JSON.
pub fn print_stats(ds: &Dataset, json: bool) -> Result<()> {
    let stats = ds.stats();
    if json {
        println!("{}", serde_json::to_string_pretty(&stats)?);
    } else {
        print!("{}", stats.report());
    }
    Ok(())
}
