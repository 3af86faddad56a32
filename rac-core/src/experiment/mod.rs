//! Experiments as values: an [`Experiment`] (TOML) runs into a [`RunRecord`] on disk, and
//! records load back as polars DataFrames for comparison.

pub mod config;
pub mod demo;
pub mod finetune;
pub mod record;
pub mod run;
pub mod sweep;

pub use config::Experiment;
pub use record::{RunMeta, RunRecord, list_runs, load_runs};
pub use run::{Assembled, Prepared, RunEnv, assemble, method_name, run, run_prepared};
pub use sweep::{Sweep, grid, sweep, sweep_list};
