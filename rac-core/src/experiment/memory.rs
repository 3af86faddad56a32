//! The index as explicit memory (paper §3.4): the paper's Fig 5 as the paper ran it (a
//! retrieval branch trained under LACE with an index that holds only external data, thinned
//! along three axes), and memory added to a trained model at run time (a source added, then
//! removed, with every weight fixed).

use std::collections::BTreeMap;

use polars::prelude::*;
use serde::{Deserialize, Serialize};

use super::cached::{Trained, train_cached};
use super::config::{Experiment, MemorySection};
use super::prepared::{IndexPlace, Prepared, RunEnv, source_of};
use super::record::{RunRecord, Study, branch_metrics, metrics_table, save_run};
use super::sweep::sweep_list;
use crate::data::{ShotBucket, SplitKind, Thinning};
use crate::error::{Error, Result};
use crate::eval::{BranchMetrics, vstack_all};
use crate::features::{BarProgress, EncodeOptions, FeatureStore};
use crate::fsio;
use crate::model::RetrievalBatch;
use crate::train::{Inputs, predict};

/// The points of a Fig-5 sweep: an index built from `source` only, thinned along one axis at
/// a time. Axis (c) keeps `classes_per_class` items of each kept class, so that (b) and (c)
/// meet at similar index sizes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContentGrid {
    /// The split the index is built from (`external`).
    pub source: String,
    /// (a) Index size: fractions of the source's items.
    pub fractions: Vec<f64>,
    /// (b) Samples per class, every class kept.
    pub per_class: Vec<usize>,
    /// (c) Number of classes, `classes_per_class` items each.
    pub classes: Vec<usize>,
    /// Items per class on axis (c).
    pub classes_per_class: usize,
    /// The seed of every choice.
    pub seed: u64,
}

/// The three axes' names in tables.
pub const AXES: [&str; 3] = ["index size", "samples per class", "number of classes"];

impl ContentGrid {
    /// The grid of this project's Fig 5 on Fashion-MNIST-LT's external split (49,989
    /// images, at least 1,000 per class): (b) and (c) both reach 1,000 and 10,000 items.
    pub fn fashion_mnist() -> Self {
        ContentGrid {
            source: "external".into(),
            fractions: vec![0.01, 0.03, 0.1, 0.3, 1.0],
            per_class: vec![10, 30, 100, 300, 1000],
            classes: vec![1, 2, 4, 7, 10],
            classes_per_class: 1000,
            seed: 0,
        }
    }

    /// Each axis's values, checked once where the grid is given (a 0 would mean "no
    /// thinning" further down, and train on everything instead of nothing).
    fn check(&self) -> Result<()> {
        let bad = |field: &str, flag: &str, value: String, want: &str| {
            Err(Error::Setting { field: field.into(), message: format!("{value} is not a value of this axis (`--{flag}`): give {want}") })
        };
        if let Some(f) = self.fractions.iter().find(|f| !(**f > 0.0 && **f <= 1.0)) {
            return bad("fractions", "fractions", f.to_string(), "fractions in (0, 1]");
        }
        if let Some(n) = self.per_class.iter().find(|n| **n == 0) {
            return bad("per_class", "per-class", n.to_string(), "1 or more samples per class");
        }
        if let Some(n) = self.classes.iter().find(|n| **n == 0) {
            return bad("classes", "classes", n.to_string(), "1 or more classes");
        }
        if !self.classes.is_empty() && self.classes_per_class == 0 {
            return bad("classes_per_class", "classes-per-class", "0".into(), "1 or more items per class");
        }
        Ok(())
    }

    /// Every point: (axis, value, experiment), each named `<base>-<axis>=<value>`.
    pub fn experiments(&self, base: &Experiment) -> Result<Vec<(&'static str, f64, Experiment)>> {
        self.check()?;
        let mut out = Vec::new();
        let mut point = |axis: &'static str, value: f64, tag: String, thinning: Thinning| -> Result<()> {
            let mut e = base.clone();
            e.memory = MemorySection { sources: vec![self.source.clone()], thinning: Thinning { seed: self.seed, ..thinning } };
            e.name = format!("{}-{tag}", base.name);
            e.validate(&std::path::PathBuf::from(format!("experiment `{}`", e.name)))?;
            out.push((axis, value, e));
            Ok(())
        };
        for &f in &self.fractions {
            point(AXES[0], f, format!("fraction={f}"), Thinning { fraction: f, ..Thinning::default() })?;
        }
        for &n in &self.per_class {
            point(AXES[1], n as f64, format!("per_class={n}"), Thinning { per_class: n, ..Thinning::default() })?;
        }
        for &c in &self.classes {
            point(AXES[2], c as f64, format!("classes={c}"), Thinning { classes: c, per_class: self.classes_per_class, ..Thinning::default() })?;
        }
        if out.is_empty() {
            return Err(Error::Empty { what: "the Fig-5 grid".into(), hint: "give fractions, per_class or classes".into() });
        }
        Ok(out)
    }
}

/// Fig 5: train the experiment (a retrieval branch under LACE, say) once per point of
/// `grid`, each with an index of the grid's source only, and tabulate every branch's
/// accuracy: `setting`, `value`, `index_items`, `branch`, `top1`, `top5`, `many`, `medium`,
/// `few`. Runs whose record exists are loaded, so a rerun costs seconds.
pub fn index_content(base: &Experiment, grid: &ContentGrid, env: &RunEnv) -> Result<(Vec<RunRecord>, DataFrame)> {
    let points = grid.experiments(base)?;
    let exps: Vec<Experiment> = points.iter().map(|(_, _, e)| e.clone()).collect();
    let (records, _) = sweep_list(&exps, env)?;
    let mut frames = Vec::with_capacity(records.len());
    for ((axis, value, _), rec) in points.iter().zip(&records) {
        let mut df = rec.metrics.clone();
        let n = df.height();
        let items = rec.meta.index_items.unwrap_or(0);
        df.insert_column(0, Column::new("index_items".into(), vec![items; n]))?;
        df.insert_column(0, Column::new("value".into(), vec![*value; n]))?;
        df.insert_column(0, Column::new("setting".into(), vec![*axis; n]))?;
        frames.push(df);
    }
    Ok((records, vstack_all(frames, "the Fig-5 grid has no points")?))
}

/// What a run-time memory study adds to the trained model's index.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Added {
    /// Every item of the source.
    All,
    /// Only the source's items of the training split's few-shot classes.
    FewShot,
}

impl Added {
    /// Its name in tables.
    pub fn name(self) -> &'static str {
        match self {
            Added::All => "all",
            Added::FewShot => "few-shot classes",
        }
    }
}

/// A run-time memory study: after training on the training split's index, each case adds
/// (part of) `source` to the index and removes it again, with the weights fixed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MemoryPlan {
    /// The split added (`external`).
    pub source: String,
    /// The cases, each evaluated as: trained index, source added, source removed.
    pub cases: Vec<Added>,
}

impl MemoryPlan {
    /// All of the external split, then only its few-shot classes' images.
    pub fn external() -> Self {
        MemoryPlan { source: "external".into(), cases: vec![Added::All, Added::FewShot] }
    }

    fn label(&self) -> String {
        let cases: Vec<&str> = self.cases.iter().map(|c| c.name()).collect();
        format!("memory: {} ({})", self.source, cases.join(", "))
    }
}

/// The steps of a run-time memory study, in order.
pub const STEPS: [&str; 3] = ["1 trained index", "2 source added", "3 source removed"];

/// The checks that need only the experiment and the plan, done before anything is read.
fn check_plan(exp: &Experiment, plan: &MemoryPlan) -> Result<SplitKind> {
    let setting = |field: &str, message: String| Error::Setting { field: field.into(), message };
    if !exp.memory.is_default() {
        return Err(setting(
            "memory",
            "the run-time memory study trains with the whole training split as the index; leave `[memory]` at its default".into(),
        ));
    }
    if !exp.model.mode.has_retrieval() {
        return Err(setting("model.mode", "the run-time memory study needs a retrieval branch (`rac` or `retrieval`)".into()));
    }
    if exp.base_encoder.is_some() {
        return Err(setting("base_encoder", "the run-time memory study trains a head on cached features".into()));
    }
    if exp.retrieval.finetune_text {
        return Err(setting("retrieval.finetune_text", "the run-time memory study reads new neighbours through a frozen T".into()));
    }
    if plan.cases.is_empty() {
        return Err(Error::Empty { what: "the run-time memory study's cases".into(), hint: "give `all`, `few-shot` or both".into() });
    }
    SplitKind::parse(&plan.source).filter(|k| matches!(k, SplitKind::External | SplitKind::Val)).ok_or_else(|| Error::UnknownName {
        what: "source",
        name: plan.source.clone(),
        known: "external, val".into(),
    })
}

/// Evaluate the trained model with the index as it is now: the evaluation items' neighbours
/// (through the neighbour cache, which every change of the index clears), their texts
/// through the frozen T, scaled as in training, and every branch.
fn evaluate_now(exp: &Experiment, prep: &mut Prepared, trained: &Trained, env: &RunEnv) -> Result<Vec<BranchMetrics>> {
    let a = &trained.assembled;
    let Some(text) = &a.frozen_text else {
        return Err(Error::Internal("the run-time memory study's model has no frozen T (checked before training)".into()));
    };
    let nb = prep.eval_neighbours(text.request().search).map_err(|e| e.within("retrieval"))?;
    let mut progress = BarProgress::new(env.progress).with_unit("sequences");
    let scaled = text.cached(&nb, &env.work_dir("text-features"), &mut progress)?;
    let device = exp.train.device.resolve("train.device")?;
    let inputs =
        Inputs { base: a.eval.base.clone(), retrieval: Some(RetrievalBatch::Embedded(scaled.to_device(&device)?)), labels: a.eval.labels.clone() };
    let out = predict(&a.model, &inputs, exp.train.eval_batch_size)?;
    branch_metrics(exp, &out, &prep.eval.labels, &prep.train_counts)
}

/// Memory added at run time: train `exp` (RAC under LACE, say) with the training split as
/// the index; then, the weights fixed, for each case of `plan`: evaluate, add the source
/// (all of it, or its few-shot classes' images) and evaluate, remove it and evaluate. One
/// table, `case`, `step`, `index_items`, then a metrics row per branch; the record (named
/// after `exp`, keyed by the experiment and the plan) keeps it as `memory.csv`.
///
/// The index is built anew in a folder of the study's own, so the one other runs share is
/// never changed.
pub fn runtime_memory(exp: &Experiment, plan: &MemoryPlan, env: &RunEnv) -> Result<(RunRecord, DataFrame)> {
    let kind = check_plan(exp, plan)?;
    let key = serde_json::to_string(&(exp.config_hash(), plan)).expect("plans serialise");
    let hash = fsio::sha256_bytes(key.as_bytes())[..12].to_string();
    let dir = env.runs_dir.join(format!("{}-{hash}", exp.name));
    if !env.force
        && let Some(rec) = super::record::reuse_dir(&dir)?
    {
        let table = rec.tables.get("memory").cloned().ok_or_else(|| Error::MissingFile {
            what: "memory table".into(),
            path: dir.join("memory.csv"),
            hint: Some("rerun with force".into()),
        })?;
        return Ok((rec, table));
    }
    exp.validate(&std::path::PathBuf::from(format!("experiment `{}`", exp.name)))?;
    let dataset = crate::data::Dataset::load(&exp.data.manifest, &env.overrides, &env.cache)?;
    let split = dataset.split(kind).ok_or_else(|| Error::MissingSplit {
        dataset: dataset.name().to_string(),
        split: kind.name().to_string(),
        hint: Some("give its manifest an `[external]` section".into()),
    })?;
    let few: Vec<bool> = dataset.train_counts().iter().map(|&n| ShotBucket::of(n) == ShotBucket::Few).collect();
    if plan.cases.contains(&Added::FewShot) && !split.labels.iter().any(|&l| few[l]) {
        return Err(Error::Empty {
            what: format!("the {} split's images of few-shot classes", kind.name()),
            hint: "add the whole split (`all`) instead".into(),
        });
    }
    drop(dataset);

    let work = env.work_dir("memory-indexes").join(&hash);
    let mut prep = Prepared::at(exp, env, IndexPlace::Fresh(work.clone()))?;
    let trained = train_cached(exp, &mut prep, env)?;
    let device = exp.train.device.resolve("train.device")?;
    let encoder = exp.image_encoder()?.load(&env.cache, &device)?;
    let mut progress = BarProgress::new(env.progress);
    let (added_all, _) =
        FeatureStore::in_cache(&env.cache).get_or_encode(&prep.dataset, kind, encoder.as_ref(), &EncodeOptions::default(), &mut progress)?;
    drop(encoder);

    let trained_index = evaluate_now(exp, &mut prep, &trained, env)?;
    let method = exp.method_name();
    let mut frames = Vec::new();
    let mut push = |case: Added, step: usize, items: usize, rows: &[BranchMetrics]| -> Result<()> {
        let mut df = metrics_table(&method, rows)?;
        let n = df.height();
        df.insert_column(0, Column::new("index_items".into(), vec![items as u64; n]))?;
        df.insert_column(0, Column::new("step".into(), vec![STEPS[step]; n]))?;
        df.insert_column(0, Column::new("case".into(), vec![case.name(); n]))?;
        frames.push(df);
        Ok(())
    };
    for &case in &plan.cases {
        let items = prep.index.len();
        push(case, 0, items, &trained_index)?;
        let rows: Vec<usize> = match case {
            Added::All => (0..added_all.len()).collect(),
            Added::FewShot => (0..added_all.len()).filter(|&r| few[added_all.labels[r]]).collect(),
        };
        let name = format!("{}-{}", plan.source, if case == Added::All { "all" } else { "few-shot" });
        let source = source_of(&name, &added_all.select(&rows)?, &prep.dataset.class_texts)?;
        prep.index.add_source(&source)?;
        let added = evaluate_now(exp, &mut prep, &trained, env)?;
        push(case, 1, prep.index.len(), &added)?;
        prep.index.remove_source(&name)?;
        let removed = evaluate_now(exp, &mut prep, &trained, env)?;
        push(case, 2, prep.index.len(), &removed)?;
    }
    let table = vstack_all(frames, "the run-time memory study has no cases")?;
    let study = Study { label: Some((plan.label(), hash)), tables: BTreeMap::from([("memory".to_string(), table.clone())]) };
    let rec = save_run(exp, &prep, env, trained.started, &trained.outputs, &trained.log, &trained.checkpoint_dir, study)?;
    drop(prep);
    let _ = std::fs::remove_dir_all(&work);
    Ok((rec, table))
}
