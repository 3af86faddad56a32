//! `rac memory content` (the paper's Fig 5, trained) and `rac memory steps` (memory added to
//! a trained model at run time).

use std::path::{Path, PathBuf};

use anyhow::Result;
use clap::Subcommand;
use rac_core::experiment::{self, Added, ContentGrid, Experiment, MemoryPlan};

use crate::run_cmd::{RunArgs, print_table};

#[derive(Subcommand)]
pub enum MemoryCmd {
    /// Fig 5: train the experiment once per index content (a source thinned by index size,
    /// samples per class and number of classes) and print one table.
    Content {
        /// The experiment file (a retrieval branch under LACE, say).
        experiment: PathBuf,
        /// The split the index is built from.
        #[arg(long, default_value = "external")]
        source: String,
        /// (a) Fractions of the source's items, comma-separated.
        #[arg(long, value_delimiter = ',')]
        fractions: Option<Vec<f64>>,
        /// (b) Items per class, every class kept.
        #[arg(long, value_delimiter = ',')]
        per_class: Option<Vec<usize>>,
        /// (c) Numbers of classes, each with `--classes-per-class` items.
        #[arg(long, value_delimiter = ',')]
        classes: Option<Vec<usize>>,
        /// Items of each kept class on axis (c).
        #[arg(long)]
        classes_per_class: Option<usize>,
        /// The seed of every choice.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// `key=value` settings of the experiment (`model.mode=retrieval`); repeatable.
        #[arg(long = "set")]
        sets: Vec<String>,
        #[command(flatten)]
        args: RunArgs,
    },
    /// Train the experiment with the training split as its index, then, the weights fixed,
    /// add a source (all of it; then only its few-shot classes), remove it, and evaluate
    /// each step.
    Steps {
        /// The experiment file (the demo's RAC recipe, say).
        experiment: PathBuf,
        /// The split added.
        #[arg(long, default_value = "external")]
        source: String,
        /// `key=value` settings of the experiment; repeatable.
        #[arg(long = "set")]
        sets: Vec<String>,
        #[command(flatten)]
        args: RunArgs,
    },
}

/// The experiment file with `key=value` settings applied, each checked as it is set.
fn load(path: &Path, sets: &[String]) -> Result<Experiment> {
    let mut exp = Experiment::load(path)?;
    for s in sets {
        let (key, value) = s.split_once('=').ok_or_else(|| anyhow::anyhow!("--set {s}: expects key=value"))?;
        exp = exp.with(key.trim(), value.trim())?;
    }
    Ok(exp)
}

pub fn run(cmd: MemoryCmd) -> Result<()> {
    match cmd {
        MemoryCmd::Content { experiment, source, fractions, per_class, classes, classes_per_class, seed, sets, args } => {
            let exp = load(&experiment, &sets)?;
            let d = ContentGrid::fashion_mnist();
            let grid = ContentGrid {
                source,
                fractions: fractions.unwrap_or(d.fractions),
                per_class: per_class.unwrap_or(d.per_class),
                classes: classes.unwrap_or(d.classes),
                classes_per_class: classes_per_class.unwrap_or(d.classes_per_class),
                seed,
            };
            let (_, table) = experiment::index_content(&exp, &grid, &args.env())?;
            print_table(&table, args.json)
        }
        MemoryCmd::Steps { experiment, source, sets, args } => steps(&load(&experiment, &sets)?, source, &args),
    }
}

fn steps(exp: &Experiment, source: String, args: &RunArgs) -> Result<()> {
    let plan = MemoryPlan { source, cases: vec![Added::All, Added::FewShot] };
    let (rec, table) = experiment::runtime_memory(exp, &plan, &args.env())?;
    print_table(&table, args.json)?;
    if !args.json {
        println!("record: {}", rec.dir.display());
    }
    Ok(())
}
