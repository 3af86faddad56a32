//! Retrieval-only classification with exact cosine 1-NN: each query takes the label of its
//! nearest reference item. This is the paper's "retrieval only" baseline at k = 1 (Table 4
//! reports it for ViT-B/16 with k-NN); it is the ground truth the index stage's approximate
//! backends are measured against.

use candle_core::{D, Tensor};
use serde::Serialize;

use crate::data::ShotBucket;
use crate::encoders::l2_normalize;
use crate::error::{Error, Result};

/// Accuracies of a 1-NN classification, as fractions in [0, 1].
#[derive(Debug, Clone, Serialize)]
pub struct KnnReport {
    /// Queries.
    pub queries: usize,
    /// Reference items.
    pub references: usize,
    /// Fraction of queries whose nearest item has their label.
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

/// The index of the nearest reference row (cosine) of every query row. Queries are
/// processed in chunks of `chunk` rows to bound memory.
pub fn nearest_neighbours(queries: &Tensor, references: &Tensor, chunk: usize) -> Result<Vec<usize>> {
    let (nq, dq) = queries.dims2()?;
    let (nr, dr) = references.dims2()?;
    if dq != dr {
        return Err(Error::InvalidInput(format!("1-NN: queries have dimension {dq}, references {dr}")));
    }
    if nr == 0 {
        return Err(Error::InvalidInput("1-NN: there are no reference items".into()));
    }
    let refs_t = l2_normalize(references)?.t()?.contiguous()?;
    let mut out = Vec::with_capacity(nq);
    let chunk = chunk.max(1);
    let mut start = 0;
    while start < nq {
        let len = chunk.min(nq - start);
        let q = l2_normalize(&queries.narrow(0, start, len)?)?;
        let best = q.matmul(&refs_t)?.argmax(D::Minus1)?.to_vec1::<u32>()?;
        out.extend(best.into_iter().map(|i| i as usize));
        start += len;
    }
    Ok(out)
}

/// 1-NN accuracy of `queries` (with `query_labels`) against `references` (with
/// `reference_labels`); `train_counts` gives each class's shot bucket.
pub fn one_nn_accuracy(
    queries: &Tensor,
    query_labels: &[usize],
    references: &Tensor,
    reference_labels: &[usize],
    train_counts: &[usize],
) -> Result<KnnReport> {
    let nn = nearest_neighbours(queries, references, 1024)?;
    if nn.len() != query_labels.len() {
        return Err(Error::InvalidInput(format!("1-NN: {} queries but {} query labels", nn.len(), query_labels.len())));
    }
    let classes = train_counts.len();
    let (mut correct, mut total) = (vec![0usize; classes], vec![0usize; classes]);
    for (&j, &y) in nn.iter().zip(query_labels) {
        let pred = *reference_labels
            .get(j)
            .ok_or_else(|| Error::InvalidInput(format!("1-NN: reference {j} has no label ({} labels)", reference_labels.len())))?;
        if y >= classes {
            return Err(Error::InvalidInput(format!("1-NN: query label {y} is out of range (0..{classes})")));
        }
        total[y] += 1;
        correct[y] += (pred == y) as usize;
    }
    let per_class: Vec<f64> = (0..classes).map(|c| if total[c] > 0 { correct[c] as f64 / total[c] as f64 } else { f64::NAN }).collect();
    let mean_of = |keep: &dyn Fn(usize) -> bool| {
        let v: Vec<f64> = (0..classes).filter(|&c| keep(c) && total[c] > 0).map(|c| per_class[c]).collect();
        (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
    };
    let bucket = |b: ShotBucket| mean_of(&|c| ShotBucket::of(train_counts[c]) == b);
    Ok(KnnReport {
        queries: nn.len(),
        references: reference_labels.len(),
        top1: correct.iter().sum::<usize>() as f64 / nn.len().max(1) as f64,
        balanced: mean_of(&|_| true).unwrap_or(f64::NAN),
        many: bucket(ShotBucket::Many),
        medium: bucket(ShotBucket::Medium),
        few: bucket(ShotBucket::Few),
        per_class,
    })
}
