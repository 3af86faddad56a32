//! Evaluation, as the long-tail literature reports it: every accuracy is a *mean of
//! per-class accuracies* (the balanced accuracy), overall (top-1, top-5) and within each
//! shot bucket (many > 100, medium 20–100, few < 20 training images).
//!
//! Evaluation uses the raw logits of each branch: the loss's logit adjustment is never added.

use candle_core::{D, Tensor};
use polars::prelude::*;
use serde::{Deserialize, Serialize};

use crate::data::ShotBucket;
use crate::error::{Error, Result};

/// Which output of a RAC model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Branch {
    /// The base branch `f_base`.
    Base,
    /// The retrieval branch `f_ret`.
    Retrieval,
    /// The fused logits `f`.
    Fused,
}

impl Branch {
    /// `base`, `retrieval` or `fused`.
    pub fn name(self) -> &'static str {
        match self {
            Branch::Base => "base",
            Branch::Retrieval => "retrieval",
            Branch::Fused => "fused",
        }
    }
}

/// The metrics of one branch on one split, in percent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BranchMetrics {
    /// Which branch.
    pub branch: Branch,
    /// Mean per-class top-1 accuracy.
    pub top1: f64,
    /// Mean per-class top-5 accuracy.
    pub top5: f64,
    /// Mean per-class top-1 over many-shot classes (NaN when the bucket is empty).
    pub many: f64,
    /// Mean per-class top-1 over medium-shot classes.
    pub medium: f64,
    /// Mean per-class top-1 over few-shot classes.
    pub few: f64,
    /// Top-1 accuracy of each class.
    pub per_class_top1: Vec<f64>,
}

/// The top-k predictions of `[N, C]` logits, best first.
pub fn top_k(logits: &Tensor, k: usize) -> Result<Vec<Vec<u32>>> {
    let (_, c) = logits.dims2()?;
    let k = k.min(c);
    let idx = logits.arg_sort_last_dim(false)?.narrow(D::Minus1, 0, k)?;
    Ok(idx.to_vec2::<u32>()?)
}

/// Evaluate `[N, C]` logits against labels; `train_counts` give the shot buckets.
pub fn evaluate(branch: Branch, logits: &Tensor, labels: &[usize], train_counts: &[usize]) -> Result<BranchMetrics> {
    let (n, c) = logits.dims2()?;
    if n != labels.len() {
        return Err(Error::InvalidInput(format!("{n} rows of logits for {} labels", labels.len())));
    }
    if c != train_counts.len() {
        return Err(Error::InvalidInput(format!("{c} logit columns for {} classes", train_counts.len())));
    }
    let top = top_k(logits, 5)?;
    let (mut hit1, mut hit5, mut total) = (vec![0usize; c], vec![0usize; c], vec![0usize; c]);
    for (preds, &y) in top.iter().zip(labels) {
        total[y] += 1;
        if preds.first().is_some_and(|&p| p as usize == y) {
            hit1[y] += 1;
        }
        if preds.iter().any(|&p| p as usize == y) {
            hit5[y] += 1;
        }
    }
    let rate =
        |h: &[usize]| -> Vec<f64> { h.iter().zip(&total).map(|(&h, &t)| if t == 0 { f64::NAN } else { 100.0 * h as f64 / t as f64 }).collect() };
    let per_class_top1 = rate(&hit1);
    let per_class_top5 = rate(&hit5);
    let mean_where = |v: &[f64], keep: &dyn Fn(usize) -> bool| -> f64 {
        let xs: Vec<f64> = v.iter().enumerate().filter(|&(i, x)| keep(i) && !x.is_nan()).map(|(_, &x)| x).collect();
        if xs.is_empty() { f64::NAN } else { xs.iter().sum::<f64>() / xs.len() as f64 }
    };
    let bucket = |b: ShotBucket| mean_where(&per_class_top1, &|i| ShotBucket::of(train_counts[i]) == b);
    Ok(BranchMetrics {
        branch,
        top1: mean_where(&per_class_top1, &|_| true),
        top5: mean_where(&per_class_top5, &|_| true),
        many: bucket(ShotBucket::Many),
        medium: bucket(ShotBucket::Medium),
        few: bucket(ShotBucket::Few),
        per_class_top1,
    })
}

/// Stack tables with the same columns into one, in order (sweeps, run lists, demo tables);
/// `empty` is the error's message when there is none.
pub fn vstack_all(frames: impl IntoIterator<Item = DataFrame>, empty: &str) -> Result<DataFrame> {
    let mut frames = frames.into_iter();
    let mut table = frames.next().ok_or_else(|| Error::InvalidInput(empty.to_string()))?;
    for f in frames {
        table.vstack_mut_owned(f)?;
    }
    Ok(table)
}

/// The rows of `df` whose string column `column` satisfies `keep`. Tables here are small and
/// eager: the library builds polars without its lazy engine (see ARCHITECTURE.md).
pub fn rows_with(df: &DataFrame, column: &str, keep: impl Fn(&str) -> bool) -> Result<DataFrame> {
    let df = local_frame(df)?;
    let mask: BooleanChunked = df.column(column)?.str()?.iter().map(|v| v.is_some_and(&keep)).collect();
    Ok(df.filter(&mask)?)
}

/// A copy of `df` (its columns shared) that looks its columns up by name afresh. polars
/// caches a frame's schema as a hash map whose hasher takes a per-process seed, and evcxr
/// links a copy of polars into every cell: a table made in one cell and looked up by name
/// in a later one would find no column. The table helpers start from such a copy.
pub fn local_frame(df: &DataFrame) -> Result<DataFrame> {
    Ok(DataFrame::new(df.height(), df.columns().to_vec())?)
}

/// The columns of `df` in the order given, each `(name, new name)`.
pub fn select_as(df: &DataFrame, columns: &[(&str, &str)]) -> Result<DataFrame> {
    let mut out = local_frame(df)?.select(columns.iter().map(|(from, _)| *from))?;
    for (from, to) in columns {
        if from != to {
            out.rename(from, (*to).into())?;
        }
    }
    Ok(out)
}

/// One row per (run, branch): `run`, `branch`, `top1`, `top5`, `many`, `medium`, `few`.
pub fn metrics_frame(rows: &[(String, BranchMetrics)]) -> Result<DataFrame> {
    let col = |f: fn(&BranchMetrics) -> f64| rows.iter().map(|(_, m)| f(m)).collect::<Vec<f64>>();
    Ok(df!(
        "run" => rows.iter().map(|(r, _)| r.as_str()).collect::<Vec<_>>(),
        "branch" => rows.iter().map(|(_, m)| m.branch.name()).collect::<Vec<_>>(),
        "top1" => col(|m| m.top1),
        "top5" => col(|m| m.top5),
        "many" => col(|m| m.many),
        "medium" => col(|m| m.medium),
        "few" => col(|m| m.few),
    )?)
}

/// One row per class: `class`, `text`, `train_count`, `bucket`, and one accuracy column
/// per branch (`acc_base`, `acc_retrieval`, `acc_fused`).
pub fn per_class_frame(class_texts: &[String], train_counts: &[usize], branches: &[BranchMetrics]) -> Result<DataFrame> {
    let mut columns: Vec<Column> = vec![
        Column::new("class".into(), (0..train_counts.len() as u32).collect::<Vec<u32>>()),
        Column::new("text".into(), class_texts.to_vec()),
        Column::new("train_count".into(), train_counts.iter().map(|&n| n as u64).collect::<Vec<u64>>()),
        Column::new("bucket".into(), train_counts.iter().map(|&n| ShotBucket::of(n).name()).collect::<Vec<&str>>()),
    ];
    for m in branches {
        columns.push(Column::new(format!("acc_{}", m.branch.name()).into(), m.per_class_top1.clone()));
    }
    Ok(DataFrame::new_infer_height(columns)?)
}
