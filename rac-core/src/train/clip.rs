//! Gradient clipping by global L2 norm (`torch.nn.utils.clip_grad_norm_`): when the norm
//! of all gradients together exceeds `max_norm`, every gradient is scaled by
//! `max_norm / (norm + 1e-6)`.

use candle_core::Var;
use candle_core::backprop::GradStore;

use crate::error::Result;

/// Clip the gradients of `vars` in place; returns the global norm before clipping.
pub fn clip_grad_norm(grads: &mut GradStore, vars: &[Var], max_norm: f64) -> Result<f64> {
    let mut sq = 0f64;
    for v in vars {
        if let Some(g) = grads.get(v.as_tensor()) {
            sq += g.sqr()?.sum_all()?.to_dtype(candle_core::DType::F64)?.to_scalar::<f64>()?;
        }
    }
    let norm = sq.sqrt();
    if norm > max_norm {
        let scale = max_norm / (norm + 1e-6);
        for v in vars {
            if let Some(g) = grads.remove(v.as_tensor()) {
                grads.insert(v.as_tensor(), (g * scale)?);
            }
        }
    }
    Ok(norm)
}
