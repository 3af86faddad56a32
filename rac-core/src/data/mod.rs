//! Data: manifests, readers for IDX files and split lists, image preprocessing, and the
//! long-tail structure (shot buckets, imbalance) of the training split.
//!
//! This is the first stage of the pipeline: every later stage starts from a [`Dataset`].

pub mod augment;
pub mod dataset;
pub mod embedded;
pub mod idx;
pub mod loader;
pub mod longtail;
pub mod manifest;
pub mod npy;
pub mod preprocess;
pub mod split_list;
pub mod synthetic;
pub mod thinning;

pub use augment::{Augment, AugmentConfig};
pub use dataset::{Dataset, Split, SplitKind};
pub use embedded::{DEFAULT_MANIFEST, default_manifest_path, embedded_default};
pub use loader::{EpochLoader, ImageBatch, LoaderConfig, Transform};
pub use longtail::{LongTailStats, ShotBucket, class_counts};
pub use manifest::{DataManifest, DataOverrides};
pub use preprocess::Preprocess;
pub use thinning::Thinning;
