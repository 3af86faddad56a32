//! Training: the paper's recipe (AdamW, cosine schedule with warm-up, gradient clipping).

pub mod clip;
pub mod finetune;
pub mod optim;
pub mod schedule;
pub mod trainer;

pub use clip::clip_grad_norm;
pub use finetune::{FinetuneConfig, Precision, TrainableVit, pixels_to_device};
pub use optim::{AdamW, OptimConfig};
pub use schedule::CosineWarmup;
pub use trainer::{EpochLog, Inputs, TrainConfig, TrainHooks, predict, train};
