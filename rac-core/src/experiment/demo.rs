//! The demo: the embedded default data set and recipe, its five runs, and the paper's
//! Table-3 view of their records. `rac demo` and the quickstart notebook share it.

use std::path::Path;

use polars::prelude::*;

use super::config::Experiment;
use super::record::RunRecord;
use crate::assets::AssetCache;
use crate::data::default_manifest_path;
use crate::error::Result;
use crate::eval::{local_frame, rows_with, select_as};
use crate::model::{LossKind, Mode};

/// The demo's shared recipe (`experiments/demo.toml`), embedded.
pub const DEMO_RECIPE: &str = include_str!("../../../experiments/demo.toml");

/// The five runs of the demo: (method, mode, loss).
pub const DEMO_RUNS: [(&str, Mode, LossKind); 5] = [
    ("CE", Mode::Base, LossKind::Ce),
    ("BalCE", Mode::Base, LossKind::Balce),
    ("LACE", Mode::Base, LossKind::Lace),
    ("retrieval", Mode::Retrieval, LossKind::Lace),
    ("RAC", Mode::Rac, LossKind::Lace),
];

/// The demo's base recipe; its manifest is the repository's, or the embedded copy.
pub fn demo_recipe(cache: &AssetCache) -> Result<Experiment> {
    let mut base = Experiment::parse(Path::new("<embedded>/experiments/demo.toml"), DEMO_RECIPE)?;
    if !base.data.manifest.is_file() {
        base.data.manifest = default_manifest_path(cache)?;
    }
    Ok(base)
}

/// The five experiments of the demo from a base recipe: CE, BalCE and LACE base only,
/// retrieval only and RAC (both under LACE), named `<prefix>-<method>`.
pub fn method_experiments(base: &Experiment, prefix: &str) -> Result<Vec<Experiment>> {
    let mut out = Vec::new();
    for (method, mode, loss) in DEMO_RUNS {
        out.push(base.with_mode(mode)?.with_loss(loss)?.with_name(&format!("{prefix}-{}", method.to_lowercase()))?);
    }
    Ok(out)
}

/// The demo's five experiments.
pub fn demo_experiments(cache: &AssetCache) -> Result<Vec<Experiment>> {
    method_experiments(&demo_recipe(cache)?, "demo")
}

/// Every record's metrics in one table (`method`, `branch`, `top1`, …).
pub fn stacked_metrics(records: &[RunRecord]) -> Result<DataFrame> {
    if records.is_empty() {
        return Ok(DataFrame::default());
    }
    crate::eval::vstack_all(records.iter().map(|r| r.metrics.clone()), "no records")
}

/// The paper's Table 3: one row per method (RAC by its fused output) with `all`, `many`,
/// `medium`, `few`.
pub fn table3(metrics: &DataFrame) -> Result<DataFrame> {
    let metrics = local_frame(metrics)?;
    let (branch, method) = (metrics.column("branch")?.str()?, metrics.column("method")?.str()?);
    let rows = metrics.filter(&(branch.equal("fused") | method.not_equal("RAC")))?;
    select_as(&rows, &[("method", "method"), ("top1", "all"), ("many", "many"), ("medium", "medium"), ("few", "few")])
}

/// The RAC model's three outputs (base, retrieval, fused) per bucket.
pub fn rac_branches(metrics: &DataFrame) -> Result<DataFrame> {
    let rows = rows_with(metrics, "method", |m| m == "RAC")?;
    select_as(&rows, &[("branch", "branch"), ("top1", "all"), ("many", "many"), ("medium", "medium"), ("few", "few")])
}
