//! Training: the paper's recipe (AdamW, cosine schedule with warm-up, gradient clipping) in
//! one loop over a batch source, for heads on cached features and fine-tuned encoders alike.

pub mod clip;
pub mod finetune;
pub mod optim;
pub mod schedule;
pub mod trainer;

pub use clip::clip_grad_norm;
pub use finetune::{FinetuneConfig, Precision, TrainableVit, pixels_to_device};
pub use optim::{AdamW, OptimConfig};
pub use schedule::CosineWarmup;
pub use trainer::{BatchSource, CachedBatches, EpochLog, EvalFn, Inputs, TrainConfig, TrainHooks, TrainJob, predict, train, train_with};
