//! Fusion of the two branches (RAC paper, Eq. 1):
//!
//! `f(x) = (L / 2) * ( f_ret(x) / ||f_ret(x)||_2 + f_base(x) / ||f_base(x)||_2 )`,
//!
//! where L is the number of classes. Normalising each branch makes neither dominate by
//! scale; the `L / 2` factor restores a logit range in which softmax is not flat.

use candle_core::{D, Tensor};

use crate::error::{Error, Result};

/// A small constant that keeps the norm of an all-zero row from dividing by zero.
const NORM_EPS: f64 = 1e-12;

/// Row-wise L2 normalisation of `[B, C]` logits.
pub fn l2_normalise(x: &Tensor) -> Result<Tensor> {
    let norm = x.sqr()?.sum_keepdim(D::Minus1)?.sqrt()?.clamp(NORM_EPS, f64::MAX)?;
    Ok(x.broadcast_div(&norm)?)
}

/// Fuse the base and retrieval logits, both `[B, L]`.
pub fn fuse_logits(f_base: &Tensor, f_ret: &Tensor) -> Result<Tensor> {
    if f_base.dims() != f_ret.dims() {
        return Err(Error::InvalidInput(format!("base logits {:?} and retrieval logits {:?} differ in shape", f_base.dims(), f_ret.dims())));
    }
    let (_, l) = f_base.dims2()?;
    Ok(((l2_normalise(f_ret)? + l2_normalise(f_base)?)? * (l as f64 / 2.0))?)
}
