//! `rac run`, `rac sweep`, `rac runs` and the demo's experiments.

use std::path::{Path, PathBuf};

use anyhow::Result;
use clap::Args;
use polars::prelude::*;
use rac_core::experiment::{self, Experiment, RunEnv, Sweep, demo};

use crate::data_cmd::PathArgs;

/// Flags shared by the commands that run experiments.
#[derive(Args, Clone, Debug)]
pub struct RunArgs {
    /// The runs folder.
    #[arg(long, default_value = "runs")]
    pub runs_dir: PathBuf,
    /// Run again even when a complete record exists.
    #[arg(long)]
    pub force: bool,
    /// Print machine-readable JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub paths: PathArgs,
}

impl RunArgs {
    /// The run environment these flags describe.
    pub fn env(&self) -> RunEnv {
        RunEnv {
            runs_dir: self.runs_dir.clone(),
            overrides: self.paths.overrides(),
            force: self.force,
            progress: rac_core::progress::Progress::shown_if(!self.json),
            ..RunEnv::from_env()
        }
    }
}

/// `rac run <experiment.toml>`.
pub fn run(path: &Path, args: &RunArgs) -> Result<()> {
    let exp = Experiment::load(path)?;
    let rec = experiment::run(&exp, &args.env())?;
    print_table(&rec.metrics_with_run()?, args.json)?;
    if !args.json {
        println!("record: {}", rec.dir.display());
    }
    Ok(())
}

/// `rac sweep <experiment.toml> --set key=v1,v2`.
pub fn sweep(path: &Path, sets: &[String], args: &RunArgs) -> Result<()> {
    let exp = Experiment::load(path)?;
    let axes = sets.iter().map(|s| Sweep::parse(s)).collect::<rac_core::Result<Vec<_>>>()?;
    let (_, table) = experiment::sweep(&exp, &axes, &args.env())?;
    print_table(&table, args.json)
}

/// `rac runs`: every complete record.
pub fn runs(runs_dir: &Path, json: bool) -> Result<()> {
    let records = experiment::list_runs(runs_dir)?;
    if records.is_empty() {
        println!("no complete run records under {}", runs_dir.display());
        return Ok(());
    }
    print_table(&experiment::load_runs(runs_dir)?, json)
}

/// Print a table as polars formats it, or as a JSON array of row objects.
pub fn print_table(df: &DataFrame, json: bool) -> Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(&rows_as_json(df)?)?);
    } else {
        println!("{}", rac_core::eval::text_table(df));
    }
    Ok(())
}

/// A DataFrame as a JSON array of objects, one per row.
pub fn rows_as_json(df: &DataFrame) -> Result<Vec<serde_json::Map<String, serde_json::Value>>> {
    let mut rows = vec![serde_json::Map::new(); df.height()];
    for col in df.columns() {
        let s = col.as_materialized_series();
        for (i, row) in rows.iter_mut().enumerate() {
            let v = match s.get(i)? {
                AnyValue::Null => serde_json::Value::Null,
                AnyValue::String(x) => serde_json::Value::from(x),
                AnyValue::Float64(x) if x.is_nan() => serde_json::Value::Null,
                AnyValue::Float64(x) => serde_json::Value::from(x),
                AnyValue::Float32(x) => serde_json::Value::from(x as f64),
                AnyValue::UInt32(x) => serde_json::Value::from(x),
                AnyValue::UInt64(x) => serde_json::Value::from(x),
                AnyValue::Int64(x) => serde_json::Value::from(x),
                AnyValue::Int32(x) => serde_json::Value::from(x),
                AnyValue::Boolean(x) => serde_json::Value::from(x),
                other => serde_json::Value::from(other.to_string()),
            };
            row.insert(col.name().to_string(), v);
        }
    }
    Ok(rows)
}

/// `rac demo`: the Table-3 view of the five runs, then the RAC model's branches.
pub fn demo(args: &RunArgs) -> Result<()> {
    let env = args.env();
    let exps = demo::demo_experiments(&env.cache)?;
    let started = std::time::Instant::now();
    let (records, _) = experiment::sweep_list(&exps, &env)?;
    let table = demo::stacked_metrics(&records)?;
    if args.json {
        // One object per (method, branch); `all` is the all-class top-1, as in Table 3.
        let rows = rac_core::eval::select_as(
            &table,
            &[("method", "method"), ("branch", "branch"), ("top1", "all"), ("many", "many"), ("medium", "medium"), ("few", "few"), ("top5", "top5")],
        )?;
        return print_table(&rows, true);
    }
    let headline = demo::table3(&table)?;
    println!("Fashion-MNIST-LT, balanced test accuracy (%), as the paper's Table 3:\n{}", rac_core::eval::text_table(&headline));
    let rac = demo::rac_branches(&table)?;
    println!("\nThe RAC model's branches:\n{}", rac_core::eval::text_table(&rac));
    println!("\nrecords under {}; {:.1} s", env.runs_dir.display(), started.elapsed().as_secs_f64());
    Ok(())
}
