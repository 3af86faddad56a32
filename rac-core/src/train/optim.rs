//! AdamW with decoupled weight decay (Loshchilov & Hutter), the paper's optimiser.
//!
//! The update is the one of `candle_nn::AdamW` (and `torch.optim.AdamW`). It is written
//! here because checkpoints must hold the optimiser's moments and step count, so that a
//! killed run resumes to the same result as an uninterrupted one, and candle's optimiser
//! keeps those private.

use std::collections::HashMap;

use candle_core::{Tensor, Var};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The optimiser section of an experiment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OptimConfig {
    /// Peak learning rate.
    #[serde(default = "default_lr")]
    pub lr: f64,
    /// Adam's `beta1` and `beta2`.
    #[serde(default = "default_betas")]
    pub betas: [f64; 2],
    /// Adam's epsilon.
    #[serde(default = "default_eps")]
    pub eps: f64,
    /// Decoupled weight decay.
    #[serde(default = "default_wd")]
    pub weight_decay: f64,
    /// Clip gradients to this global L2 norm (0 disables clipping).
    #[serde(default = "default_clip")]
    pub clip_norm: f64,
}

fn default_lr() -> f64 {
    1e-3
}
fn default_betas() -> [f64; 2] {
    [0.9, 0.999]
}
fn default_eps() -> f64 {
    1e-8
}
fn default_wd() -> f64 {
    0.02
}
fn default_clip() -> f64 {
    1.0
}

impl OptimConfig {
    /// Check every value (finite, in its range); errors name the field within `[optim]`.
    pub fn validate(&self) -> Result<()> {
        let bad = |field: &str, message: String| Err(Error::Setting { field: field.into(), message });
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return bad("lr", format!("must be a finite number > 0, found {}", self.lr));
        }
        for (i, b) in self.betas.iter().enumerate() {
            if !(0.0..1.0).contains(b) {
                return bad("betas", format!("beta{} must lie in [0, 1), found {b}", i + 1));
            }
        }
        if !(self.eps.is_finite() && self.eps > 0.0) {
            return bad("eps", format!("must be a finite number > 0, found {}", self.eps));
        }
        if !self.weight_decay.is_finite() || self.weight_decay < 0.0 {
            return bad("weight_decay", format!("must be a finite number >= 0, found {}", self.weight_decay));
        }
        if !self.clip_norm.is_finite() || self.clip_norm < 0.0 {
            return bad("clip_norm", format!("must be a finite number >= 0 (0 disables clipping), found {}", self.clip_norm));
        }
        Ok(())
    }
}

impl Default for OptimConfig {
    fn default() -> Self {
        OptimConfig { lr: default_lr(), betas: default_betas(), eps: default_eps(), weight_decay: default_wd(), clip_norm: default_clip() }
    }
}

/// AdamW over named variables.
#[derive(Debug)]
pub struct AdamW {
    params: Vec<(String, Var, Tensor, Tensor)>,
    step: usize,
    config: OptimConfig,
}

impl AdamW {
    /// An optimiser over `vars`, with zero moments.
    pub fn new(vars: &[(String, Var)], config: &OptimConfig) -> Result<Self> {
        let params =
            vars.iter().map(|(n, v)| Ok((n.clone(), v.clone(), v.as_tensor().zeros_like()?, v.as_tensor().zeros_like()?))).collect::<Result<_>>()?;
        Ok(AdamW { params, step: 0, config: config.clone() })
    }

    /// Steps taken so far.
    pub fn step_count(&self) -> usize {
        self.step
    }

    /// One update with learning rate `lr`.
    pub fn step(&mut self, grads: &candle_core::backprop::GradStore, lr: f64) -> Result<()> {
        self.step += 1;
        let [b1, b2] = self.config.betas;
        let scale_m = 1.0 / (1.0 - b1.powi(self.step as i32));
        let scale_v = 1.0 / (1.0 - b2.powi(self.step as i32));
        for (_, var, m, v) in self.params.iter_mut() {
            let Some(g) = grads.get(var.as_tensor()) else { continue };
            let next_m = ((&*m * b1)? + (g * (1.0 - b1))?)?;
            let next_v = ((&*v * b2)? + (g.sqr()? * (1.0 - b2))?)?;
            let update = ((&next_m * scale_m)? / ((&next_v * scale_v)?.sqrt()? + self.config.eps)?)?;
            let decayed = (var.as_tensor() * (1.0 - lr * self.config.weight_decay))?;
            var.set(&(decayed - (update * lr)?)?)?;
            *m = next_m;
            *v = next_v;
        }
        Ok(())
    }

    /// The optimiser's state as named tensors (`adamw.m.<name>`, `adamw.v.<name>`), plus
    /// the step count.
    pub fn state(&self) -> (HashMap<String, Tensor>, usize) {
        let mut out = HashMap::new();
        for (n, _, m, v) in &self.params {
            out.insert(format!("adamw.m.{n}"), m.clone());
            out.insert(format!("adamw.v.{n}"), v.clone());
        }
        (out, self.step)
    }

    /// Restore the state written by [`AdamW::state`]; what does not fit is said in words, for
    /// the caller to name its checkpoint file with.
    pub fn load_state(&mut self, tensors: &HashMap<String, Tensor>, step: usize) -> std::result::Result<(), String> {
        for (n, var, m, v) in self.params.iter_mut() {
            let get = |k: String| tensors.get(&k).cloned().ok_or_else(|| format!("missing optimiser tensor `{k}`"));
            let (nm, nv) = (get(format!("adamw.m.{n}"))?, get(format!("adamw.v.{n}"))?);
            if nm.dims() != var.dims() || nv.dims() != var.dims() {
                return Err(format!("the optimiser tensors of `{n}` have shape {:?}, the model {:?}", nm.dims(), var.dims()));
            }
            *m = nm;
            *v = nv;
        }
        self.step = step;
        Ok(())
    }
}
