//! Training: the paper's recipe (AdamW, cosine schedule with warm-up, gradient clipping).

pub mod clip;
pub mod schedule;

pub use clip::clip_grad_norm;
pub use schedule::CosineWarmup;
