//! Features: image embeddings computed once and cached on disk (the feature store).
//!
//! This stage sits between the encoders and the retrieval index: the index and the training
//! stages read [`Features`] (a candle tensor plus item ids and labels) from
//! [`FeatureStore::get_or_encode`].

pub mod file;
pub mod progress;
pub mod store;

pub use crate::fsio::CacheOutcome;
pub use file::FeatureFile;
pub use progress::BarProgress;
pub use store::{EncodeOptions, EncodeProgress, FeatureKey, FeatureMeta, FeatureStore, Features, Lookup, encode_split, features_of};
