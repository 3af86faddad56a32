//! The learning-rate schedule of the paper's recipe: a linear warm-up from `warmup_lr` to
//! `lr` over `warmup_steps`, then a cosine decay from `lr` to `min_lr` at `total_steps`
//! (timm's `CosineLRScheduler` with `warmup_t`, `warmup_lr_init` and `lr_min`, per step).

/// A cosine schedule with linear warm-up, evaluated per optimisation step.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CosineWarmup {
    /// The peak learning rate.
    pub lr: f64,
    /// The learning rate at step 0.
    pub warmup_lr: f64,
    /// The final learning rate.
    pub min_lr: f64,
    /// Steps of linear warm-up.
    pub warmup_steps: usize,
    /// All steps of the run.
    pub total_steps: usize,
}

impl CosineWarmup {
    /// The learning rate of step `step` (0-based).
    pub fn lr_at(&self, step: usize) -> f64 {
        if step < self.warmup_steps {
            let t = step as f64 / self.warmup_steps as f64;
            return self.warmup_lr + (self.lr - self.warmup_lr) * t;
        }
        let decay_steps = self.total_steps.saturating_sub(self.warmup_steps).saturating_sub(1);
        if decay_steps == 0 {
            return self.lr;
        }
        let t = ((step - self.warmup_steps) as f64 / decay_steps as f64).min(1.0);
        self.min_lr + 0.5 * (self.lr - self.min_lr) * (1.0 + (std::f64::consts::PI * t).cos())
    }
}
