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

/// Hits and items per class: the one count every accuracy of the project is made from (the
/// branches' metrics here, the retrieval-only votes and the exact 1-NN of the index stage).
#[derive(Debug, Clone, PartialEq)]
pub struct ClassTally {
    hits: Vec<usize>,
    items: Vec<usize>,
}

impl ClassTally {
    /// An empty tally over `num_classes` classes.
    pub fn new(num_classes: usize) -> Self {
        ClassTally { hits: vec![0; num_classes], items: vec![0; num_classes] }
    }

    /// The tally of `predictions` against `truth`; a true label outside `0..num_classes` is
    /// an error naming it (`what` says whose labels).
    pub fn of(predictions: &[usize], truth: &[usize], num_classes: usize, what: &str) -> Result<Self> {
        if predictions.len() != truth.len() {
            return Err(Error::Shape {
                what: format!("{what}: predictions"),
                expected: format!("{}, one per label", truth.len()),
                found: predictions.len().to_string(),
            });
        }
        let mut tally = ClassTally::new(num_classes);
        for (&p, &y) in predictions.iter().zip(truth) {
            tally.add(y, p == y, what)?;
        }
        Ok(tally)
    }

    /// Count one item of class `label`, a hit or not.
    pub fn add(&mut self, label: usize, hit: bool, what: &str) -> Result<()> {
        let n = self.items.len();
        let items = self.items.get_mut(label).ok_or_else(|| Error::LabelOutOfRange { what: what.to_string(), label: label as i64, classes: n })?;
        *items += 1;
        self.hits[label] += usize::from(hit);
        Ok(())
    }

    /// Items counted.
    pub fn total(&self) -> usize {
        self.items.iter().sum()
    }

    /// The plain (not balanced) accuracy in percent: hits over all items.
    pub fn overall_percent(&self) -> f64 {
        100.0 * self.hits.iter().sum::<usize>() as f64 / self.total().max(1) as f64
    }

    /// Each class's accuracy in percent; NaN for a class with no item.
    pub fn per_class_percent(&self) -> Vec<f64> {
        self.hits.iter().zip(&self.items).map(|(&h, &t)| if t == 0 { f64::NAN } else { 100.0 * h as f64 / t as f64 }).collect()
    }
}

/// Means of per-class accuracies: over all classes (the balanced accuracy) and within each
/// shot bucket; `None` where no class of the bucket has an item.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct BucketMeans {
    /// All classes.
    pub all: Option<f64>,
    /// Many-shot classes (> 100 training images).
    pub many: Option<f64>,
    /// Medium-shot classes (20–100).
    pub medium: Option<f64>,
    /// Few-shot classes (< 20).
    pub few: Option<f64>,
}

impl BucketMeans {
    /// The means of `per_class` (NaN entries skipped); `train_counts[c]` puts class `c` in
    /// its bucket.
    pub fn of(per_class: &[f64], train_counts: &[usize]) -> Self {
        let mean = |keep: &dyn Fn(usize) -> bool| {
            let xs: Vec<f64> = per_class.iter().enumerate().filter(|&(c, x)| keep(c) && !x.is_nan()).map(|(_, &x)| x).collect();
            (!xs.is_empty()).then(|| xs.iter().sum::<f64>() / xs.len() as f64)
        };
        let bucket = |b: ShotBucket| mean(&|c| train_counts.get(c).is_some_and(|&n| ShotBucket::of(n) == b));
        BucketMeans { all: mean(&|_| true), many: bucket(ShotBucket::Many), medium: bucket(ShotBucket::Medium), few: bucket(ShotBucket::Few) }
    }

    /// The mean of one bucket.
    pub fn bucket(&self, b: ShotBucket) -> Option<f64> {
        match b {
            ShotBucket::Many => self.many,
            ShotBucket::Medium => self.medium,
            ShotBucket::Few => self.few,
        }
    }
}

/// Evaluate `[N, C]` logits against labels; `train_counts` give the shot buckets.
pub fn evaluate(branch: Branch, logits: &Tensor, labels: &[usize], train_counts: &[usize]) -> Result<BranchMetrics> {
    let (n, c) = logits.dims2()?;
    if n != labels.len() {
        return Err(Error::Shape {
            what: "evaluation: rows of logits".into(),
            expected: format!("{}, one per label", labels.len()),
            found: n.to_string(),
        });
    }
    if c != train_counts.len() {
        return Err(Error::Shape {
            what: "evaluation: logit columns".into(),
            expected: format!("{}, one per class", train_counts.len()),
            found: c.to_string(),
        });
    }
    let top = top_k(logits, 5)?;
    let (mut top1, mut top5) = (ClassTally::new(c), ClassTally::new(c));
    for (preds, &y) in top.iter().zip(labels) {
        top1.add(y, preds.first().is_some_and(|&p| p as usize == y), "evaluation")?;
        top5.add(y, preds.iter().any(|&p| p as usize == y), "evaluation")?;
    }
    let per_class_top1 = top1.per_class_percent();
    let means = BucketMeans::of(&per_class_top1, train_counts);
    let nan = |x: Option<f64>| x.unwrap_or(f64::NAN);
    Ok(BranchMetrics {
        branch,
        top1: nan(means.all),
        top5: nan(BucketMeans::of(&top5.per_class_percent(), train_counts).all),
        many: nan(means.many),
        medium: nan(means.medium),
        few: nan(means.few),
        per_class_top1,
    })
}

/// One cell of a table as text, the same in a terminal, a notebook's HTML table and the
/// README: floats with 2 decimals (accuracies are in percent), 4 below 1, tiny or huge ones
/// in scientific notation; nulls empty.
pub fn format_value(v: &AnyValue) -> String {
    let float = |x: f64| {
        let a = x.abs();
        if x.is_nan() {
            "NaN".to_string()
        } else if a != 0.0 && !(1e-3..1e7).contains(&a) {
            format!("{x:.3e}")
        } else if a < 1.0 && a != 0.0 {
            format!("{x:.4}")
        } else {
            format!("{x:.2}")
        }
    };
    match v {
        AnyValue::Null => String::new(),
        AnyValue::Float64(x) => float(*x),
        AnyValue::Float32(x) => float(*x as f64),
        AnyValue::String(s) => s.to_string(),
        AnyValue::StringOwned(s) => s.to_string(),
        other => other.to_string(),
    }
}

/// A table as aligned plain text, every value through [`format_value`]: numbers
/// right-aligned, text left-aligned, the shape below. What the CLI prints.
pub fn text_table(df: &DataFrame) -> String {
    let cols = df.columns();
    let rows: Vec<Vec<String>> =
        (0..df.height()).map(|r| cols.iter().map(|c| c.get(r).map(|v| format_value(&v)).unwrap_or_default()).collect()).collect();
    let widths: Vec<usize> = cols
        .iter()
        .enumerate()
        .map(|(i, c)| rows.iter().map(|row| row[i].chars().count()).chain([c.name().chars().count()]).max().unwrap_or(0))
        .collect();
    let pad = |text: &str, width: usize, right: bool| {
        let fill = " ".repeat(width.saturating_sub(text.chars().count()));
        if right { format!("{fill}{text}") } else { format!("{text}{fill}") }
    };
    let numeric: Vec<bool> = cols.iter().map(|c| c.dtype().is_primitive_numeric()).collect();
    let line = |row: Vec<String>| row.join("  ").trim_end().to_string();
    let mut out = vec![line(cols.iter().enumerate().map(|(i, c)| pad(c.name(), widths[i], numeric[i])).collect())];
    out.push(line(widths.iter().map(|&w| "-".repeat(w)).collect()));
    for row in &rows {
        out.push(line(row.iter().enumerate().map(|(i, v)| pad(v, widths[i], numeric[i])).collect()));
    }
    out.push(format!("({} rows × {} columns)", df.height(), cols.len()));
    out.join("\n")
}

/// Stack tables with the same columns into one, in order (sweeps, run lists, demo tables);
/// `empty` says what was to be stacked, for the error when there is none.
pub fn vstack_all(frames: impl IntoIterator<Item = DataFrame>, empty: &str) -> Result<DataFrame> {
    let mut frames = frames.into_iter();
    let mut table = frames.next().ok_or_else(|| Error::Empty { what: empty.to_string(), hint: "give at least one table".into() })?;
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
