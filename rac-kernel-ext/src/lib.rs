//! # rac-kernel-ext
//!
//! RAC in Jupyter notebooks on the evcxr Rust kernel. A notebook loads it with one line
//! (the path is relative to the notebook's folder; `notebooks/` sits beside this crate):
//!
//! ```text
//! :dep rac-kernel-ext = { path = "../rac-kernel-ext" }
//! use rac_kernel_ext::prelude::*;
//! ```
//!
//! The prelude re-exports what a notebook needs from `rac-core` and polars, and brings
//! [`NotebookDisplay`] into scope, so that a cell whose last expression is one of these
//! renders inline:
//!
//! | value | shown as |
//! |---|---|
//! | a polars `DataFrame` | an HTML table (numbers formatted, row and column limits) + text |
//! | a [`RunRecord`](rac_core::experiment::RunRecord), a sweep's `(records, table)` | its metrics table with the run's identity |
//! | a [`Chart`] (every `plot_*` helper) | a plotly figure (JupyterLab renders it offline) + a static SVG (GitHub, nbconvert) |
//! | an [`ImageGrid`], a [`RetrievalPanel`] | HTML with inline PNG images |
//!
//! A notebook's set-up cell is one call, [`setup`]: the demo's recipe edited by the
//! notebook's parameters, and a provenance table. Long calls (encoding, index builds,
//! training) draw one progress line each on stdout ([`rac_core::progress`]). Errors from
//! `?` print the project's error message in their own cell. An index or a `Prepared` opened
//! in one cell can be queried and dropped in later ones.

#![warn(missing_docs)]

/// The library underneath, for what the prelude does not bring.
pub use rac_core;

pub mod display;
pub mod figure;
pub mod images;
pub mod notebook;
pub mod plots;
pub mod workflows;

pub use display::{Bundle, NotebookDisplay, TableLimits, html_table};
pub use figure::{Chart, Series, SeriesKind};
pub use images::{ImageGrid, RetrievalPanel, class_samples, image_grid, retrieval_panel};
pub use notebook::{Setup, notebook_env, setup};
pub use plots::{
    plot_effect_of_k, plot_index_content, plot_index_tradeoff, plot_memory_steps, plot_per_class_accuracy, plot_tau_sweep, plot_text_encoders,
};
pub use workflows::{
    bench_frame, config_value, eval_neighbours, fetch_assets, knn_table, knn_table_of, random_eval_items, runs_table, stats_frame, train_source,
};

/// Everything a notebook uses, in one import.
pub mod prelude {
    pub use crate::display::{Bundle, NotebookDisplay, TableLimits, html_table};
    pub use crate::figure::{Chart, SeriesKind};
    pub use crate::images::{ImageGrid, RetrievalPanel, class_samples, image_grid, retrieval_panel};
    pub use crate::notebook::{Setup, notebook_env, setup};
    pub use crate::plots::*;
    pub use crate::workflows::*;
    pub use polars::df;
    pub use polars::prelude::{Column, DataFrame};
    /// Polars' lazy queries, with the `lazy` feature (`:dep rac-kernel-ext = { path = …,
    /// features = ["lazy"] }`): its engine is about a third of polars' build.
    #[cfg(feature = "lazy")]
    pub use polars::prelude::{IntoLazy, col, lit};
    pub use rac_core::assets::AssetCache;
    pub use rac_core::bench::{self, BenchRow, BenchSpec};
    pub use rac_core::data::{Dataset, SplitKind};
    pub use rac_core::eval::{rows_with, select_as, vstack_all};
    pub use rac_core::experiment::demo::{demo_recipe, method_experiments, rac_branches, stacked_metrics, table3};
    pub use rac_core::experiment::{
        self, Added, ContentGrid, Experiment, MemoryPlan, Prepared, Provenance, RunEnv, RunRecord, Sweep, TextEncoderKind, by_method, index_content,
        list_runs, load_runs, run, runtime_memory, sweep, sweep_list,
    };
    pub use rac_core::index::{Backend, IndexConfig, Metric, Queries, RetrievalIndex, SearchRequest, Source};
    pub use rac_core::model::{LossKind, Mode, Reweighting};
    pub use rac_core::{Error, Result};
    pub use std::path::{Path, PathBuf};
}
