//! Fusion of the two branches (RAC paper, Eq. 1):
//!
//! `f(x) = (L / 2) * ( f_ret(x) / ||f_ret(x)||_2 + f_base(x) / ||f_base(x)||_2 )`,
//!
//! where L is the number of classes. Normalising each branch makes neither dominate by
//! scale; the `L / 2` factor restores a logit range in which softmax is not flat.

use candle_core::Tensor;

use crate::error::{Error, Result};
use crate::vectors::l2_normalise;

/// Fuse the base and retrieval logits, both `[B, L]`.
pub fn fuse_logits(f_base: &Tensor, f_ret: &Tensor) -> Result<Tensor> {
    if f_base.dims() != f_ret.dims() {
        return Err(Error::Shape {
            what: "fusion: the retrieval logits".into(),
            expected: format!("{:?}, the base logits' shape", f_base.dims()),
            found: format!("{:?}", f_ret.dims()),
        });
    }
    let (_, l) = f_base.dims2()?;
    Ok(((l2_normalise(f_ret)? + l2_normalise(f_base)?)? * (l as f64 / 2.0))?)
}
