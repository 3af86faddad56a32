//! The RAC model: the two branches, their fusion, and the long-tail losses it trains under.

pub mod fusion;
pub mod losses;

pub use fusion::fuse_logits;
pub use losses::{LongTailLoss, LossConfig, LossKind, Reweighting};
pub mod rac;

pub use rac::{Batch, HeadKind, InputNorm, Mode, ModelConfig, Outputs, RacModel, RetrievalBatch, Scaler, TrainableTextEncoder, Widths};
