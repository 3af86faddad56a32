//! Exact k-NN: a batched matrix product on candle, then a bounded top-k per row.
//!
//! This is the ground truth every approximate backend is measured against, and it stays
//! usable at any size: queries go through in blocks, so memory is `block x n` scores.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use candle_core::{Device, Tensor};
use rayon::prelude::*;

use super::config::Metric;
use crate::error::Result;

/// Queries scored per matrix product; bounds the score block to `BLOCK x n` floats.
const BLOCK: usize = 256;

/// The index's vectors as one matrix, ready for brute-force search.
pub struct ExactMatrix {
    ids: Vec<u32>,
    dim: usize,
    metric: Metric,
    matrix: Tensor,
    /// Squared norms of the rows (used by L2).
    sq_norms: Vec<f32>,
}

/// A (key, id) pair ordered by key, then id, so ties break the same way every time.
#[derive(PartialEq)]
struct Hit(f32, u32);
impl Eq for Hit {}
impl PartialOrd for Hit {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Hit {
    fn cmp(&self, other: &Self) -> Ordering {
        self.0.total_cmp(&other.0).then(self.1.cmp(&other.1))
    }
}

impl ExactMatrix {
    /// Build from row-major `data` (`ids.len() x dim`), already normalised for cosine.
    pub fn new(ids: Vec<u32>, data: Vec<f32>, dim: usize, metric: Metric) -> Result<Self> {
        let n = ids.len();
        let sq_norms = data.chunks(dim.max(1)).map(|r| r.iter().map(|x| x * x).sum()).collect();
        let matrix = Tensor::from_vec(data, (n, dim), &Device::Cpu)?;
        Ok(ExactMatrix { ids, dim, metric, matrix, sq_norms })
    }

    /// Number of rows.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// Whether it has no rows.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// The `k` nearest rows of each query (row-major `queries`, normalised for cosine), nearest
    /// first, as (item id, distance) with distance `1 - cos` or `||q - x||`.
    pub fn search(&self, queries: &[f32], k: usize) -> Result<Vec<Vec<(u32, f32)>>> {
        let dim = self.dim;
        let nq = queries.len() / dim;
        let n = self.len();
        let k = k.min(n);
        let xt = self.matrix.t()?;
        let mut out = Vec::with_capacity(nq);
        for block in queries.chunks(BLOCK * dim) {
            let b = block.len() / dim;
            let q = Tensor::from_slice(block, (b, dim), &Device::Cpu)?;
            let scores = q.matmul(&xt)?.flatten_all()?.to_vec1::<f32>()?;
            let rows: Vec<Vec<(u32, f32)>> = scores.par_chunks(n).zip(block.par_chunks(dim)).map(|(row, qv)| self.top_k(row, qv, k)).collect();
            out.extend(rows);
        }
        Ok(out)
    }

    fn top_k(&self, scores: &[f32], query: &[f32], k: usize) -> Vec<(u32, f32)> {
        // Rank by a key that is monotone in the distance: -dot for cosine, |x|^2 - 2 dot for L2.
        let key = |j: usize| match self.metric {
            Metric::Cosine => -scores[j],
            Metric::L2 => self.sq_norms[j] - 2.0 * scores[j],
        };
        let mut heap: BinaryHeap<Hit> = BinaryHeap::with_capacity(k + 1);
        for j in 0..scores.len() {
            let h = Hit(key(j), self.ids[j]);
            if heap.len() < k {
                heap.push(h);
            } else if let Some(top) = heap.peek()
                && h < *top
            {
                heap.pop();
                heap.push(h);
            }
        }
        let q_sq: f32 = query.iter().map(|x| x * x).sum();
        heap.into_sorted_vec()
            .into_iter()
            .map(|Hit(key, id)| {
                let d = match self.metric {
                    Metric::Cosine => (1.0 + key).max(0.0),
                    Metric::L2 => (q_sq + key).max(0.0).sqrt(),
                };
                (id, d)
            })
            .collect()
    }
}
