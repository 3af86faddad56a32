//! Row vectors as every stage handles them, each computation in one place: L2
//! normalisation (of a tensor's rows and of one slice), the normal draw, f32 values to and
//! from little-endian bytes (LMDB records, cache entries, `.npy`), the fingerprint of a set
//! of vectors (the neighbour cache's key), and the check of rows before they are stored or
//! searched. It imports only `error` and `fsio`, so any
//! stage may call it.

use candle_core::{D, Tensor};

use crate::error::Result;

/// The smallest norm a row is divided by: an all-zero row stays zero instead of dividing
/// by zero.
pub const NORM_EPS: f64 = 1e-12;

/// Row-wise L2 normalisation of a tensor's last dimension (`[n, d]` features, `[B, C]`
/// logits); zero rows stay zero.
pub fn l2_normalise(x: &Tensor) -> Result<Tensor> {
    let norm = x.sqr()?.sum_keepdim(D::Minus1)?.sqrt()?.clamp(NORM_EPS, f64::MAX)?;
    Ok(x.broadcast_div(&norm)?)
}

/// The L2 norm of one row.
pub fn l2_norm(row: &[f32]) -> f32 {
    row.iter().map(|x| x * x).sum::<f32>().sqrt()
}

/// `row` divided by `norm` in place (the caller has checked or floored the norm).
pub fn scale_to_unit(row: &mut [f32], norm: f32) {
    row.iter_mut().for_each(|x| *x /= norm);
}

/// Two independent N(0, 1) values from two uniforms, `u1` in (0, 1] and `u2` in [0, 1)
/// (Box–Muller). Callers draw the uniforms from their own seeded stream, so each keeps the
/// values it always drew.
pub fn box_muller(u1: f64, u2: f64) -> (f64, f64) {
    let r = (-2.0 * u1.ln()).sqrt();
    let t = std::f64::consts::TAU * u2;
    (r * t.cos(), r * t.sin())
}

/// f32 values as little-endian bytes.
pub fn f32_to_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// Little-endian bytes as f32 values (a trailing partial value is ignored: callers check
/// lengths where they know them).
pub fn f32_from_bytes(b: &[u8]) -> Vec<f32> {
    b.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()
}

/// The sha256 of row-major `vectors` of dimension `dim`: the same values in the same
/// order give the same fingerprint.
pub fn fingerprint(vectors: &[f32], dim: usize) -> String {
    let mut bytes: Vec<u8> = (dim as u64).to_le_bytes().to_vec();
    bytes.extend(f32_to_bytes(vectors));
    crate::fsio::sha256_bytes(&bytes)
}

/// Why a row cannot be searched with or stored.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum BadRow {
    /// A value is NaN or infinite (under every metric: it would give distances 0 or inf).
    NotFinite(usize),
    /// All zeros, under cosine (no direction).
    Zero(usize),
    /// Under L2, a row so long that a squared distance to it could pass f32's largest value.
    TooLong(usize, f64),
}

/// The longest row (L2 norm) compared under L2: a quarter of the square root of f32's
/// largest value, so that every squared distance between two such rows, and each term of
/// the exact backend's `|q|^2 + |x|^2 - 2 q.x`, stays finite.
pub const MAX_L2_NORM: f64 = 4.611_686e18;

impl BadRow {
    /// "row R holds a value that is not finite" / "row R is all zeros and …".
    pub fn describe(self) -> String {
        match self {
            BadRow::NotFinite(r) => format!("row {r} holds a value that is not finite (NaN or infinity); fix or drop that row"),
            BadRow::Zero(r) => format!("row {r} is all zeros and has no cosine direction; drop that row, or use metric = \"l2\""),
            BadRow::TooLong(r, norm) => format!(
                "row {r} has a length (L2 norm) of {norm:.3e}, past the {MAX_L2_NORM:.3e} under which L2 distances stay finite in f32; scale the vectors down, or use metric = \"cosine\""
            ),
        }
    }
}

/// How rows will be compared, which decides what a usable row is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compare {
    /// Not yet known (a feature file): finite values are enough.
    Any,
    /// By direction (cosine): not all zeros; normalised by [`prepare_rows`].
    ByDirection,
    /// By L2 distance: no longer than [`MAX_L2_NORM`].
    ByDistance,
}

/// The L2 norm of row `i`, or why it cannot be used: not finite under any metric, zero
/// under cosine, too long under L2. The one row check of sources, queries
/// and feature files.
fn checked_norm(i: usize, row: &[f32], compare: Compare) -> std::result::Result<f64, BadRow> {
    if row.iter().any(|x| !x.is_finite()) {
        return Err(BadRow::NotFinite(i));
    }
    // In f64 where f32 overflows: the squares of finite f32 values never overflow f64.
    let norm = match f64::from(l2_norm(row)) {
        n if n.is_finite() => n,
        _ => row.iter().map(|&x| f64::from(x) * f64::from(x)).sum::<f64>().sqrt(),
    };
    if compare == Compare::ByDirection && norm <= f64::from(f32::MIN_POSITIVE) {
        return Err(BadRow::Zero(i));
    }
    if compare == Compare::ByDistance && norm > MAX_L2_NORM {
        return Err(BadRow::TooLong(i, norm));
    }
    Ok(norm)
}

/// The first row of `data` that [`prepare_rows`] would refuse, without changing anything.
pub fn check_rows(data: &[f32], dim: usize, compare: Compare) -> std::result::Result<(), BadRow> {
    data.chunks(dim.max(1)).enumerate().try_for_each(|(i, row)| checked_norm(i, row, compare).map(|_| ()))
}

/// Check each row of `data` (`dim` columns) and normalise it to unit L2 norm when rows
/// are compared by direction (cosine). Returns the first row that cannot be used, and why.
pub fn prepare_rows(data: &mut [f32], dim: usize, compare: Compare) -> std::result::Result<(), BadRow> {
    for (i, row) in data.chunks_mut(dim.max(1)).enumerate() {
        let norm = checked_norm(i, row, compare)?;
        if compare == Compare::ByDirection {
            match norm as f32 {
                // As f32 where it fits (the rows every run has scaled so, bit for bit).
                n if n.is_finite() => scale_to_unit(row, n),
                _ => row.iter_mut().for_each(|x| *x = (f64::from(*x) / norm) as f32),
            }
        }
    }
    Ok(())
}
