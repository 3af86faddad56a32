//! Long-tail losses, in the general form of the RAC paper (§3.3):
//!
//! `loss = -alpha_y * log softmax(f(x) + tau * Delta)_y`, label-smoothed,
//!
//! | loss | alpha_y | Delta |
//! |---|---|---|
//! | CE | 1 | 0 |
//! | BalCE | 1 / N_y | 0 |
//! | LACE | 1 | `Delta_j = log(N_j / N)` for every class j (Menon et al., logit adjustment) |
//! | LDAM | 1 / N_y | `-m_y` on the true class only, `m_y ∝ N_y^(-1/4)` (Cao et al.) |
//!
//! Any loss can take another re-weighting (`1/sqrt(N_y)`, `1/log(N_y)`). Class weights are
//! normalised to mean 1 over the classes, and the batch reduction is the weighted mean
//! `sum_i alpha_i l_i / sum_i alpha_i`, as `torch.nn.functional.cross_entropy(weight=…)`
//! computes it. Label smoothing mixes the one-hot target with the uniform distribution.
//!
//! The adjustment lives in the loss only: evaluation uses the raw logits.

use candle_core::{D, DType, Device, Tensor};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Which loss.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LossKind {
    /// Cross-entropy.
    Ce,
    /// Class-balanced cross-entropy, `alpha_y = 1/N_y`.
    Balce,
    /// Logit-adjusted cross-entropy, `Delta = log prior`.
    Lace,
    /// Label-distribution-aware margin loss.
    Ldam,
}

impl LossKind {
    /// The name used in tables: `CE`, `BalCE`, `LACE`, `LDAM`.
    pub fn display_name(self) -> &'static str {
        match self {
            LossKind::Ce => "CE",
            LossKind::Balce => "BalCE",
            LossKind::Lace => "LACE",
            LossKind::Ldam => "LDAM",
        }
    }
}

/// Per-class weights `alpha_y`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reweighting {
    /// The loss's own weighting (1 for CE and LACE, `1/N_y` for BalCE and LDAM).
    Default,
    /// `alpha_y = 1`.
    None,
    /// `alpha_y = 1 / N_y`.
    Inverse,
    /// `alpha_y = 1 / sqrt(N_y)`.
    InverseSqrt,
    /// `alpha_y = 1 / log(N_y)` (with `N_y` floored at 2 so the log is positive).
    InverseLog,
}

/// The loss section of an experiment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LossConfig {
    /// Which loss.
    #[serde(default = "default_kind")]
    pub kind: LossKind,
    /// The temperature of the logit adjustment (LACE).
    #[serde(default = "default_tau")]
    pub tau: f64,
    /// Label smoothing.
    #[serde(default = "default_smoothing")]
    pub label_smoothing: f64,
    /// Class re-weighting.
    #[serde(default = "default_reweighting")]
    pub reweighting: Reweighting,
    /// LDAM's largest margin (given to the rarest class).
    #[serde(default = "default_max_margin")]
    pub ldam_max_margin: f64,
}

fn default_kind() -> LossKind {
    LossKind::Lace
}
fn default_tau() -> f64 {
    1.0
}
fn default_smoothing() -> f64 {
    0.1
}
fn default_reweighting() -> Reweighting {
    Reweighting::Default
}
fn default_max_margin() -> f64 {
    0.5
}

impl LossConfig {
    /// Check every value (finite, in its range); errors name the field within `[loss]`.
    /// Experiments call it at load, so a loss is never built from a NaN.
    pub fn validate(&self) -> Result<()> {
        let bad = |field: &str, message: String| Err(Error::Setting { field: field.into(), message });
        if !self.tau.is_finite() || self.tau < 0.0 {
            return bad("tau", format!("must be a finite number >= 0, found {}", self.tau));
        }
        if !(0.0..1.0).contains(&self.label_smoothing) {
            return bad("label_smoothing", format!("must lie in [0, 1), found {}", self.label_smoothing));
        }
        if !(self.ldam_max_margin.is_finite() && self.ldam_max_margin > 0.0) {
            return bad("ldam_max_margin", format!("must be a finite number > 0, found {}", self.ldam_max_margin));
        }
        Ok(())
    }
}

impl Default for LossConfig {
    fn default() -> Self {
        LossConfig {
            kind: default_kind(),
            tau: default_tau(),
            label_smoothing: default_smoothing(),
            reweighting: default_reweighting(),
            ldam_max_margin: default_max_margin(),
        }
    }
}

/// A loss bound to the training class counts.
#[derive(Debug, Clone)]
pub struct LongTailLoss {
    config: LossConfig,
    /// `[C]` class weights, mean 1.
    alpha: Tensor,
    /// `[C]` additive adjustment for every class (LACE), already multiplied by tau.
    shift: Tensor,
    /// `[C]` margin subtracted from the true class's logit (LDAM).
    margin: Tensor,
    num_classes: usize,
}

impl LongTailLoss {
    /// Bind a loss to per-class training counts `N_y`.
    pub fn new(config: &LossConfig, class_counts: &[usize], device: &Device) -> Result<Self> {
        if class_counts.is_empty() || class_counts.contains(&0) {
            return Err(Error::Empty {
                what: "a class's training items".into(),
                hint: "the loss needs every class's training count; a class with none is a label gap of the data set: check its split files".into(),
            });
        }
        let c = class_counts.len();
        let n: f64 = class_counts.iter().sum::<usize>() as f64;
        let counts: Vec<f64> = class_counts.iter().map(|&x| x as f64).collect();
        let weighting = match (config.reweighting, config.kind) {
            (Reweighting::Default, LossKind::Balce | LossKind::Ldam) => Reweighting::Inverse,
            (Reweighting::Default, _) => Reweighting::None,
            (w, _) => w,
        };
        let mut alpha: Vec<f64> = counts
            .iter()
            .map(|&ny| match weighting {
                Reweighting::None | Reweighting::Default => 1.0,
                Reweighting::Inverse => 1.0 / ny,
                Reweighting::InverseSqrt => 1.0 / ny.sqrt(),
                Reweighting::InverseLog => 1.0 / ny.max(2.0).ln(),
            })
            .collect();
        let mean = alpha.iter().sum::<f64>() / c as f64;
        alpha.iter_mut().for_each(|a| *a /= mean);
        let shift: Vec<f64> = match config.kind {
            LossKind::Lace => counts.iter().map(|&ny| config.tau * (ny / n).ln()).collect(),
            _ => vec![0.0; c],
        };
        let margin: Vec<f64> = match config.kind {
            LossKind::Ldam => {
                let raw: Vec<f64> = counts.iter().map(|&ny| ny.powf(-0.25)).collect();
                let max = raw.iter().cloned().fold(f64::MIN, f64::max);
                raw.iter().map(|m| config.ldam_max_margin * m / max).collect()
            }
            _ => vec![0.0; c],
        };
        let t = |v: Vec<f64>| Tensor::from_vec(v.iter().map(|&x| x as f32).collect::<Vec<f32>>(), c, device);
        Ok(LongTailLoss { config: config.clone(), alpha: t(alpha)?, shift: t(shift)?, margin: t(margin)?, num_classes: c })
    }

    /// The class weights `alpha` (mean 1).
    pub fn alpha(&self) -> &Tensor {
        &self.alpha
    }

    /// The loss of `[B, C]` logits against `[B]` u32 targets: a scalar tensor.
    pub fn forward(&self, logits: &Tensor, targets: &Tensor) -> Result<Tensor> {
        let (b, c) = logits.dims2()?;
        if c != self.num_classes {
            return Err(Error::Shape {
                what: "loss: logit columns".into(),
                expected: format!("{}, the classes the loss was built for", self.num_classes),
                found: c.to_string(),
            });
        }
        let targets = targets.to_dtype(DType::U32)?;
        let onehot = one_hot(&targets, c, logits.device())?;
        let logits = logits.to_dtype(DType::F32)?;
        // f + tau * Delta, with LDAM's margin on the true class only.
        let adjusted = logits.broadcast_add(&self.shift.unsqueeze(0)?)?.sub(&onehot.broadcast_mul(&self.margin.unsqueeze(0)?)?)?;
        let log_p = candle_nn::ops::log_softmax(&adjusted, D::Minus1)?;
        let eps = self.config.label_smoothing;
        let target_dist = ((onehot * (1.0 - eps))? + eps / c as f64)?;
        let per_item = (target_dist * log_p)?.sum(D::Minus1)?.neg()?; // [B]
        let w = self.alpha.index_select(&targets, 0)?; // [B]
        let loss = (per_item * &w)?.sum_all()?.div(&w.sum_all()?)?;
        debug_assert_eq!(b, w.dims1()?);
        Ok(loss)
    }
}

/// `[B, C]` f32 one-hot rows of `[B]` u32 targets.
pub fn one_hot(targets: &Tensor, num_classes: usize, device: &Device) -> Result<Tensor> {
    let t: Vec<u32> = targets.to_vec1()?;
    if let Some(&bad) = t.iter().find(|&&x| x as usize >= num_classes) {
        return Err(Error::LabelOutOfRange { what: "loss: a target".into(), label: bad as i64, classes: num_classes });
    }
    let mut v = vec![0f32; t.len() * num_classes];
    for (i, &y) in t.iter().enumerate() {
        v[i * num_classes + y as usize] = 1.0;
    }
    Ok(Tensor::from_vec(v, (t.len(), num_classes), device)?)
}
