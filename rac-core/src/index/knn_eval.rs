//! Retrieval-only classification, the paper's Table 4 protocol: label a query from its
//! neighbours' labels alone — by the nearest one, by a majority vote over k, or by a
//! distance-weighted vote over k as in DINO's k-NN evaluation (weights `exp(sim / T)`,
//! T = 0.07, sim the cosine similarity `1 - d`, or `-d` for L2).
//!
//! Accuracies are means of per-class accuracy (the test set is balanced, the score is the
//! balanced one), overall and per shot bucket of the class's training count.

use polars::prelude::*;

use super::config::Metric;
use super::retrieval::Neighbours;
use crate::data::longtail::ShotBucket;
use crate::error::{Error, Result};

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

/// Per-class accuracy of `predictions` against `truth`, over `num_classes` classes
/// (`None` for a class with no test item).
pub fn per_class_accuracy(predictions: &[u32], truth: &[u32], num_classes: usize) -> Vec<Option<f64>> {
    let mut hit = vec![0usize; num_classes];
    let mut all = vec![0usize; num_classes];
    for (&p, &t) in predictions.iter().zip(truth) {
        if (t as usize) < num_classes {
            all[t as usize] += 1;
            hit[t as usize] += usize::from(p == t);
        }
    }
    (0..num_classes).map(|c| (all[c] > 0).then(|| hit[c] as f64 / all[c] as f64)).collect()
}

fn mean_over(acc: &[Option<f64>], keep: impl Fn(usize) -> bool) -> Option<f64> {
    let v: Vec<f64> = acc.iter().enumerate().filter(|(c, _)| keep(*c)).filter_map(|(_, a)| *a).collect();
    (!v.is_empty()).then(|| 100.0 * v.iter().sum::<f64>() / v.len() as f64)
}

/// The retrieval-only table: one row per rule (1-NN, majority@k, weighted@k), with the
/// balanced top-1 accuracy in percent overall and per shot bucket (many / medium / few).
///
/// `neighbours[i]` are the neighbours of test item `i` (at least `k` of them), `test_labels`
/// its true labels, `train_counts[c]` the training count of class `c`.
pub fn retrieval_only_table(neighbours: &[Neighbours], test_labels: &[u32], train_counts: &[usize], k: usize, metric: Metric) -> Result<DataFrame> {
    if neighbours.len() != test_labels.len() {
        return Err(Error::InvalidInput(format!(
            "retrieval-only evaluation: {} neighbour lists for {} test labels",
            neighbours.len(),
            test_labels.len()
        )));
    }
    if let Some(i) = neighbours.iter().position(|n| n.labels.len() < k) {
        return Err(Error::InvalidInput(format!("retrieval-only evaluation: query {i} has fewer than k = {k} neighbours")));
    }
    let num_classes = train_counts.len();
    if let Some(&t) = test_labels.iter().find(|&&t| t as usize >= num_classes) {
        return Err(Error::InvalidInput(format!("retrieval-only evaluation: test label {t} but only {num_classes} classes")));
    }
    let buckets: Vec<ShotBucket> = train_counts.iter().map(|&n| ShotBucket::of(n)).collect();
    let rules = [VoteRule::Nearest, VoteRule::Majority, VoteRule::Weighted { temperature: DINO_TEMPERATURE }];
    let mut method = Vec::new();
    let mut ks = Vec::new();
    let mut cols: [Vec<Option<f64>>; 4] = Default::default();
    for rule in rules {
        let kk = if rule == VoteRule::Nearest { 1 } else { k };
        let preds: Vec<u32> = neighbours.iter().map(|n| vote(&n.labels, &n.distances, kk, rule, metric).expect("k >= 1 neighbours")).collect();
        let acc = per_class_accuracy(&preds, test_labels, num_classes);
        method.push(rule.name().to_string());
        ks.push(kk as u32);
        cols[0].push(mean_over(&acc, |_| true));
        for (j, b) in ShotBucket::ALL.iter().enumerate() {
            cols[j + 1].push(mean_over(&acc, |c| buckets[c] == *b));
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
    ])
    .map_err(|e| Error::InvalidInput(format!("retrieval-only table: {e}")))?;
    Ok(df)
}
