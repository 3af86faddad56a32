//! Encoders: the frozen image encoder E whose embeddings key the retrieval index, and the
//! text encoder T that reads the retrieved texts (DESIGN.md §1, retrieval branch).
//!
//! | file | building block |
//! |---|---|
//! | [`weights`] | safetensors → candle, with the file's sha256 and errors naming the tensor |
//! | [`pixels`] | decoded images → normalised `[n, 3, s, s]` pixels, in parallel |
//! | [`depthwise`] | the depthwise convolution of MobileNet-style networks |
//! | [`bias_act`] | per-channel bias + ReLU6, fused |
//! | [`im2col`] | SAME-padded patches, for dense convolutions as one matrix product |
//! | [`efficientnet`] | EfficientNet-Lite0 (the embedded default E) |
//! | [`vit`] | ViT-B/16 and ViT-B/32 from a Hugging Face folder (the paper's E) |
//! | [`clip`] | CLIP vision and text towers from a Hugging Face folder (the paper's T) |
//! | [`tokenize`] | `tokenizer.json` → padded, truncated token ids |
//! | [`minilm`] | all-MiniLM-L6-v2: BERT, mean pooling, L2 normalisation (the embedded default T) |
//! | [`bow`] | bag-of-words text encoders, random and learned (the paper's Fig. 4 ablation) |
//! | [`spec`] | encoders by name, as the CLI and experiment files give them |
//!
//! An [`ImageEncoder`] owns the preprocessing its weights expect, and its
//! [`ImageEncoder::fingerprint`] covers the weights' sha256, the architecture and that
//! preprocessing, so the feature store never mixes features of two encoders.

pub mod bias_act;
pub mod bow;
pub mod clip;
pub mod depthwise;
pub mod efficientnet;
pub mod im2col;
pub mod minilm;
pub mod pixels;
pub mod spec;
pub mod tokenize;
pub mod vit;
pub mod weights;

use candle_core::{Device, Tensor};
use candle_nn::VarMap;
use image::DynamicImage;

use crate::data::Preprocess;
use crate::error::{Error, Result};
use crate::fsio;

pub use bow::{LearnedBow, RandomBow};
pub use clip::{ClipTextEncoder, ClipVisionEncoder};
pub use efficientnet::{EfficientNet, EfficientNetConfig};
pub use minilm::MiniLm;
pub use spec::{ImageEncoderSpec, TextEncoderSpec};
pub use tokenize::{TextTokenizer, TokenBatch};
pub use vit::{VitConfig, VitEncoder};
pub use weights::Weights;

/// An image encoder: a batch of decoded images → an `[n, d]` f32 tensor.
pub trait ImageEncoder: Send + Sync {
    /// A short name (`efficientnet-lite0`, `vit`, `clip-vision`).
    fn name(&self) -> &str;

    /// The feature dimension `d`.
    fn dim(&self) -> usize;

    /// The preprocessing the weights expect; its `crop` is the input size.
    fn preprocess(&self) -> &Preprocess;

    /// The sha256 of the weights file.
    fn weights_sha256(&self) -> &str;

    /// The architecture's configuration, serialised; part of the fingerprint.
    fn config_json(&self) -> String;

    /// The device the encoder runs on.
    fn device(&self) -> &Device;

    /// Encode normalised `[n, 3, s, s]` pixels (`s` = the input size) into `[n, d]`.
    fn forward(&self, pixels: &Tensor) -> Result<Tensor>;

    /// The side of the square input.
    fn input_size(&self) -> usize {
        self.preprocess().crop as usize
    }

    /// A stable 16-hex-digit fingerprint: the weights' sha256, the architecture and the
    /// encoder's own preprocessing.
    fn fingerprint(&self) -> String {
        let pre = serde_json::to_string(self.preprocess()).expect("preprocess serialises");
        let text = format!("{}\n{}\n{}\n{}", self.name(), self.weights_sha256(), self.config_json(), pre);
        fsio::sha256_bytes(text.as_bytes())[..16].to_string()
    }

    /// Encode decoded images with the encoder's own preprocessing.
    fn encode(&self, images: &[DynamicImage]) -> Result<Tensor> {
        self.encode_with(images, self.preprocess())
    }

    /// Encode decoded images with the given preprocessing, whose crop must be the input size.
    fn encode_with(&self, images: &[DynamicImage], pre: &Preprocess) -> Result<Tensor> {
        if pre.crop as usize != self.input_size() {
            return Err(Error::Shape {
                what: format!("{}: the preprocessing's crop", self.name()),
                expected: format!("{} px, the encoder's input size", self.input_size()),
                found: format!("{} px", pre.crop),
            });
        }
        let pixels = pixels::images_to_pixels(images, pre, self.device())?;
        self.forward(&pixels)
    }

    /// The preprocessing used to encode a data set whose manifest asks for `data`: the
    /// encoder's input size and normalisation (what the weights expect), with the data set's
    /// resize-to-crop ratio (how much border the images carry).
    fn preprocess_for(&self, data: &Preprocess) -> Preprocess {
        let own = self.preprocess();
        let ratio = data.resize as f64 / data.crop.max(1) as f64;
        Preprocess {
            resize: ((own.crop as f64 * ratio).round() as u32).max(own.crop),
            crop: own.crop,
            mean: own.mean,
            std: own.std,
            grey_to_rgb: true,
        }
    }
}

/// A text encoder: a batch of strings → token-level or pooled features.
pub trait TextEncoder: Send + Sync {
    /// A short name (`minilm`, `clip-text`, `bow-random`, `bow-learned`).
    fn name(&self) -> &str;

    /// The feature dimension `d`.
    fn dim(&self) -> usize;

    /// A stable 16-hex-digit fingerprint of the weights, tokeniser and settings.
    fn fingerprint(&self) -> String;

    /// Tokenise: truncated to the encoder's maximum, padded to the longest in the batch.
    fn tokenize(&self, texts: &[&str]) -> Result<TokenBatch>;

    /// Token-level features `[n, len, d]`; padding positions are those where the batch's
    /// mask is 0.
    fn token_features(&self, batch: &TokenBatch) -> Result<Tensor>;

    /// Pooled features `[n, d]` of a tokenised batch; by default the mean of the token
    /// features over the mask (the bag-of-words definition), which encoders override.
    fn pool(&self, batch: &TokenBatch) -> Result<Tensor> {
        masked_mean(&self.token_features(batch)?, &batch.mask)
    }

    /// Pooled features `[n, d]` of a batch of strings.
    fn encode(&self, texts: &[&str]) -> Result<Tensor> {
        if texts.is_empty() {
            return Err(Error::Empty { what: format!("{}: the batch of texts", self.name()), hint: "give at least one text".into() });
        }
        self.pool(&self.tokenize(texts)?)
    }

    /// The trainable parameters, for encoders that have them: fine-tune them, or leave
    /// them out of the optimiser to keep the encoder frozen.
    fn varmap(&self) -> Option<&VarMap> {
        None
    }
}

/// The mean over the tokens where `mask` is 1: `x` is `[n, len, d]`, `mask` is `[n, len]`.
pub fn masked_mean(x: &Tensor, mask: &Tensor) -> Result<Tensor> {
    let mask = mask.to_dtype(x.dtype())?.unsqueeze(2)?;
    let sum = x.broadcast_mul(&mask)?.sum(1)?;
    let count = mask.sum(1)?.clamp(1e-9f32, f32::MAX)?;
    Ok(sum.broadcast_div(&count)?)
}
