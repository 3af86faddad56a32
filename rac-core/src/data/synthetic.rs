//! A synthetic set shaped like real embeddings, for index recall and speed checks.
//!
//! Plain random 768-d vectors are not a fair test (no ANN index reaches high recall on
//! them), so points are drawn from Gaussian clusters in a low-dimensional subspace:
//! centres ~ N(0, I) in `subspace` dimensions, points = centre + `spread` * N(0, I),
//! rotated into `dim` dimensions by a random orthonormal basis, plus isotropic noise of
//! standard deviation `noise`, then normalised. Queries come from the same distribution.
//! Every draw is seeded per row, so the set is the same whatever the thread count.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::vectors::{l2_norm, scale_to_unit};

/// The shape of a synthetic set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SyntheticSpec {
    /// Number of base (indexed) vectors.
    pub n_base: usize,
    /// Number of query vectors.
    pub n_queries: usize,
    /// Ambient dimension.
    pub dim: usize,
    /// Number of clusters.
    pub clusters: usize,
    /// Dimension of the subspace holding the clusters.
    pub subspace: usize,
    /// Standard deviation of points around their centre.
    pub spread: f32,
    /// Standard deviation of the isotropic noise.
    pub noise: f32,
    /// The seed.
    pub seed: u64,
}

impl Default for SyntheticSpec {
    /// The acceptance set: 100k x 768, 1,000 clusters in 32-d, spread 0.35, noise 0.02,
    /// 1,000 queries.
    fn default() -> Self {
        SyntheticSpec { n_base: 100_000, n_queries: 1_000, dim: 768, clusters: 1_000, subspace: 32, spread: 0.35, noise: 0.02, seed: 7 }
    }
}

/// A generated set: row-major unit vectors and the cluster of each.
#[derive(Debug, Clone)]
pub struct SyntheticSet {
    /// The spec it was drawn from.
    pub spec: SyntheticSpec,
    /// Base vectors, `n_base x dim`.
    pub base: Vec<f32>,
    /// Cluster of each base vector.
    pub base_labels: Vec<u32>,
    /// Query vectors, `n_queries x dim`.
    pub queries: Vec<f32>,
    /// Cluster of each query.
    pub query_labels: Vec<u32>,
}

fn gaussian(rng: &mut ChaCha8Rng) -> f32 {
    // Box-Muller; u1 in (0, 1] so the log is finite.
    let u1: f64 = 1.0 - rng.random::<f64>();
    let u2: f64 = rng.random::<f64>();
    crate::vectors::box_muller(u1, u2).0 as f32
}

fn stream(seed: u64, stream: u64) -> ChaCha8Rng {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(stream);
    rng
}

/// The most floats (base and queries) a synthetic set is drawn with: 16 GiB.
pub const MAX_FLOATS: usize = 1 << 32;

/// Draw a synthetic set; the spec must have `1 <= subspace <= dim` and at least one cluster.
pub fn generate(spec: &SyntheticSpec) -> Result<SyntheticSet> {
    let (d, s) = (spec.dim, spec.subspace);
    // The set is drawn in memory: a size past what a machine holds is refused, named, before
    // any allocation (a capacity overflow would abort the process).
    let floats = spec.n_base.checked_add(spec.n_queries).and_then(|n| n.checked_mul(d));
    if floats.is_none_or(|f| f > MAX_FLOATS) {
        return Err(Error::Setting {
            field: "synthetic.n_base".into(),
            message: format!(
                "{} base and {} query vectors of dimension {d} are more than the {MAX_FLOATS} floats (16 GiB) a synthetic set is drawn with in memory; lower --n, --queries or --dim",
                spec.n_base, spec.n_queries
            ),
        });
    }
    if s == 0 || s > d || spec.clusters == 0 {
        return Err(Error::Setting {
            field: "synthetic".into(),
            message: format!("need 1 <= subspace <= dim and clusters >= 1 (subspace {s}, dim {d}, clusters {})", spec.clusters),
        });
    }
    // Random orthonormal basis (s columns of length d) by Gram-Schmidt, stored row-major s x d.
    let mut rng = stream(spec.seed, 0);
    let mut basis: Vec<Vec<f32>> = Vec::with_capacity(s);
    while basis.len() < s {
        let mut v: Vec<f32> = (0..d).map(|_| gaussian(&mut rng)).collect();
        for b in &basis {
            let dot: f32 = v.iter().zip(b).map(|(x, y)| x * y).sum();
            v.iter_mut().zip(b).for_each(|(x, y)| *x -= dot * y);
        }
        let norm = l2_norm(&v);
        if norm > 1e-3 {
            scale_to_unit(&mut v, norm);
            basis.push(v);
        }
    }
    let mut rng = stream(spec.seed, 1);
    let centres: Vec<Vec<f32>> = (0..spec.clusters).map(|_| (0..s).map(|_| gaussian(&mut rng)).collect()).collect();
    let draw = |n: usize, stream_base: u64| -> (Vec<f32>, Vec<u32>) {
        let rows: Vec<(Vec<f32>, u32)> = (0..n)
            .into_par_iter()
            .map(|i| {
                let mut rng = stream(spec.seed, stream_base + i as u64);
                let c = rng.random_range(0..spec.clusters);
                let z: Vec<f32> = centres[c].iter().map(|m| m + spec.spread * gaussian(&mut rng)).collect();
                let mut x: Vec<f32> = (0..d).map(|_| spec.noise * gaussian(&mut rng)).collect();
                for (zj, b) in z.iter().zip(&basis) {
                    x.iter_mut().zip(b).for_each(|(xi, bi)| *xi += zj * bi);
                }
                let norm = l2_norm(&x).max(f32::MIN_POSITIVE);
                scale_to_unit(&mut x, norm);
                (x, c as u32)
            })
            .collect();
        let labels = rows.iter().map(|r| r.1).collect();
        (rows.into_iter().flat_map(|r| r.0).collect(), labels)
    };
    let (base, base_labels) = draw(spec.n_base, 1 << 32);
    let (queries, query_labels) = draw(spec.n_queries, 2 << 32);
    Ok(SyntheticSet { spec: spec.clone(), base, base_labels, queries, query_labels })
}
