//! Retrieval-only classification, the paper's Table 4 protocol: label a query from its
//! neighbours' labels alone — by the nearest one, by a majority vote over k, or by a
//! distance-weighted vote over k as in DINO's k-NN evaluation (weights `exp(sim / T)`,
//! T = 0.07, sim the cosine similarity `1 - d`, or `-d` for L2).
//!
//! Accuracies are means of per-class accuracy (the test set is balanced, the score is the
//! balanced one), overall and per shot bucket of the class's training count, counted by
//! [`ClassTally`] as every accuracy of the project is. Exact neighbours come from
//! [`ExactMatrix`], the one brute-force search.

use candle_core::Tensor;
use polars::prelude::*;
use serde::Serialize;

use crate::data::longtail::ShotBucket;
use crate::error::{Error, Result};
use crate::eval::{BucketMeans, ClassTally};
use crate::index::{ExactMatrix, Metric, Neighbours};
use crate::vectors::l2_normalise;

/// DINO's temperature for the weighted vote.
pub const DINO_TEMPERATURE: f32 = 0.07;

/// How the neighbours' labels become one label.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum VoteRule {
    /// The nearest neighbour's label (1-NN).
    Nearest,
    /// The most frequent label among the first k; a tie goes to the label seen first.
    Majority,
    /// The label with the largest sum of `exp(sim / temperature)` among the first k.
    Weighted {
        /// The softmax temperature (DINO: 0.07).
        temperature: f32,
    },
}

impl VoteRule {
    /// The rule's name in tables.
    pub fn name(&self) -> &'static str {
        match self {
            VoteRule::Nearest => "1-NN",
            VoteRule::Majority => "majority",
            VoteRule::Weighted { .. } => "weighted",
        }
    }
}

/// The label `rule` gives from neighbour `labels` and `distances` (nearest first), using
/// the first `k`.
pub fn vote(labels: &[u32], distances: &[f32], k: usize, rule: VoteRule, metric: Metric) -> Option<u32> {
    let k = k.min(labels.len());
    if k == 0 {
        return None;
    }
    match rule {
        VoteRule::Nearest => Some(labels[0]),
        VoteRule::Majority | VoteRule::Weighted { .. } => {
            // (label, score, first rank), in order of first appearance.
            let mut scores: Vec<(u32, f64, usize)> = Vec::new();
            for r in 0..k {
                let w = match rule {
                    VoteRule::Weighted { temperature } => {
                        let sim = match metric {
                            Metric::Cosine => 1.0 - distances[r],
                            Metric::L2 => -distances[r],
                        };
                        ((sim / temperature) as f64).exp()
                    }
                    _ => 1.0,
                };
                match scores.iter_mut().find(|s| s.0 == labels[r]) {
                    Some(s) => s.1 += w,
                    None => scores.push((labels[r], w, r)),
                }
            }
            scores.iter().max_by(|a, b| a.1.total_cmp(&b.1).then(b.2.cmp(&a.2))).map(|s| s.0)
        }
    }
}

/// The retrieval-only table: one row per rule (1-NN, majority@k, weighted@k), with the
/// balanced top-1 accuracy in percent overall and per shot bucket (many / medium / few).
///
/// `neighbours[i]` are the neighbours of test item `i` (at least `k` of them), `test_labels`
/// its true labels, `train_counts[c]` the training count of class `c`.
pub fn retrieval_only_table(neighbours: &[Neighbours], test_labels: &[u32], train_counts: &[usize], k: usize, metric: Metric) -> Result<DataFrame> {
    if neighbours.len() != test_labels.len() {
        return Err(Error::Shape {
            what: "retrieval-only evaluation: neighbour lists".into(),
            expected: format!("{}, one per test label", test_labels.len()),
            found: neighbours.len().to_string(),
        });
    }
    if let Some(i) = neighbours.iter().position(|n| n.labels.len() < k) {
        return Err(Error::Shape {
            what: format!("retrieval-only evaluation: query {i}'s neighbours"),
            expected: format!("at least k = {k} (search as deep as the table's k)"),
            found: neighbours[i].labels.len().to_string(),
        });
    }
    let num_classes = train_counts.len();
    if let Some(&t) = test_labels.iter().find(|&&t| t as usize >= num_classes) {
        return Err(Error::LabelOutOfRange { what: "retrieval-only evaluation: a test label".into(), label: t.into(), classes: num_classes });
    }
    let truth: Vec<usize> = test_labels.iter().map(|&t| t as usize).collect();
    let rules = [VoteRule::Nearest, VoteRule::Majority, VoteRule::Weighted { temperature: DINO_TEMPERATURE }];
    let mut method = Vec::new();
    let mut ks = Vec::new();
    let mut cols: [Vec<Option<f64>>; 4] = Default::default();
    for rule in rules {
        let kk = if rule == VoteRule::Nearest { 1 } else { k };
        let preds: Vec<usize> =
            neighbours.iter().map(|n| vote(&n.labels, &n.distances, kk, rule, metric).expect("k >= 1 neighbours") as usize).collect();
        let means = BucketMeans::of(&ClassTally::of(&preds, &truth, num_classes, "retrieval-only evaluation")?.per_class_percent(), train_counts);
        method.push(rule.name().to_string());
        ks.push(kk as u32);
        cols[0].push(means.all);
        for (j, b) in ShotBucket::ALL.iter().enumerate() {
            cols[j + 1].push(means.bucket(*b));
        }
    }
    let [all, many, medium, few] = cols;
    let df = DataFrame::new_infer_height(vec![
        Column::new("method".into(), method),
        Column::new("k".into(), ks),
        Column::new("all".into(), all),
        Column::new("many".into(), many),
        Column::new("medium".into(), medium),
        Column::new("few".into(), few),
    ])?;
    Ok(df)
}

/// Accuracies of an exact 1-NN classification, in percent.
#[derive(Debug, Clone, Serialize)]
pub struct KnnReport {
    /// Queries.
    pub queries: usize,
    /// Reference items.
    pub references: usize,
    /// Percent of queries whose nearest item has their label.
    pub top1: f64,
    /// Mean of the per-class accuracies (the balanced accuracy; the paper's "all").
    pub balanced: f64,
    /// Per-class accuracy (NaN for a class without queries).
    pub per_class: Vec<f64>,
    /// Mean per-class accuracy over the many-shot classes, if any.
    pub many: Option<f64>,
    /// Mean per-class accuracy over the medium-shot classes, if any.
    pub medium: Option<f64>,
    /// Mean per-class accuracy over the few-shot classes, if any.
    pub few: Option<f64>,
}

/// Exact cosine 1-NN accuracy of `queries` (with `query_labels`) against `references` (with
/// `reference_labels`), searched by [`ExactMatrix`]; `train_counts` gives each class's shot
/// bucket. The retrieval-only baseline at k = 1, straight from two feature matrices.
pub fn one_nn_accuracy(
    queries: &Tensor,
    query_labels: &[usize],
    references: &Tensor,
    reference_labels: &[usize],
    train_counts: &[usize],
) -> Result<KnnReport> {
    let (nq, dq) = queries.dims2()?;
    let (nr, dr) = references.dims2()?;
    if dq != dr {
        return Err(Error::Shape { what: "1-NN: the queries' dimension".into(), expected: format!("{dr}, the references'"), found: dq.to_string() });
    }
    if nr == 0 {
        return Err(Error::Empty { what: "1-NN: the reference set".into(), hint: "encode the training split first".into() });
    }
    if nq != query_labels.len() || nr != reference_labels.len() {
        return Err(Error::Shape {
            what: "1-NN: labels".into(),
            expected: format!("one per row ({nq} queries, {nr} references)"),
            found: format!("{} and {}", query_labels.len(), reference_labels.len()),
        });
    }
    let rows = |t: &Tensor| -> Result<Vec<f32>> { Ok(l2_normalise(t)?.flatten_all()?.to_vec1::<f32>()?) };
    let matrix = ExactMatrix::new((0..nr as u32).collect(), rows(references)?, dr, Metric::Cosine)?;
    let hits = matrix.search(&rows(queries)?, 1)?;
    let preds: Vec<usize> = hits.iter().map(|h| reference_labels[h[0].0 as usize]).collect();
    let tally = ClassTally::of(&preds, query_labels, train_counts.len(), "1-NN")?;
    let per_class = tally.per_class_percent();
    let means = BucketMeans::of(&per_class, train_counts);
    Ok(KnnReport {
        queries: nq,
        references: nr,
        top1: tally.overall_percent(),
        balanced: means.all.unwrap_or(f64::NAN),
        many: means.many,
        medium: means.medium,
        few: means.few,
        per_class,
    })
}
