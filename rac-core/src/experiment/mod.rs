//! Experiments as values: an [`Experiment`] (TOML) runs into a [`RunRecord`] on disk, and
//! records load back as polars DataFrames for comparison.
//!
//! The modules in data-flow order: `config` (the experiment), `edit` (its typed edits), `prepared` (data, features,
//! index), `texts` (neighbour texts → T's features), `record` (evaluation of the outputs,
//! the record on disk), `provenance` (code, data and weights behind the numbers), the two peer runners `cached` and `finetune`, `run` (which picks
//! one), then `sweep`, `memory` (Fig 5 and memory added at run time) and `demo` on top.

pub mod cached;
pub mod config;
pub mod demo;
pub mod edit;
pub mod finetune;
pub mod memory;
pub mod prepared;
pub mod provenance;
pub mod record;
pub mod run;
pub mod sweep;
pub mod texts;

pub use cached::{Assembled, assemble};
pub use config::MemorySection;
pub use config::{Experiment, RetrievalRequest, method_name};
pub use edit::TextEncoderKind;
pub use memory::{Added, ContentGrid, MemoryPlan, index_content, runtime_memory};
pub use prepared::{EvalSplit, IndexPlace, Prepared, RunEnv};
pub use provenance::Provenance;
pub use record::{RunMeta, RunRecord, by_method, list_runs, load_runs};
pub use run::{run, run_prepared};
pub use sweep::{Sweep, grid, sweep, sweep_list};
