//! Encoders by name: what the CLI's `--encoder` and experiment files say, as serde data.
//!
//! | spec string | encoder |
//! |---|---|
//! | `efficientnet-lite0` | the cached `efficientnet-lite0` asset |
//! | `vit:DIR`, `vit-b16:DIR`, `vit-b32:DIR` | a Hugging Face ViT folder (presets for folders without `config.json`) |
//! | `clip:DIR` | the vision tower of a Hugging Face CLIP folder |
//!
//! Text encoders: `minilm` (the cached asset, or `minilm:DIR`), `clip-text:DIR`, `bow-random`,
//! `bow-learned` (or `bow-learned:GLOVE-FILE`).

use std::path::PathBuf;

use candle_core::Device;
use serde::{Deserialize, Serialize};

use super::tokenize::DEFAULT_MAX_TOKENS;
use super::{
    ClipTextEncoder, ClipVisionEncoder, EfficientNet, EfficientNetConfig, ImageEncoder, LearnedBow, MiniLm, RandomBow, TextEncoder, VitConfig,
    VitEncoder,
};
use crate::assets::AssetCache;
use crate::error::{Error, Result};

/// A ViT preset, for folders that lack a `config.json`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum VitPreset {
    /// ViT-B/16, 224 px.
    B16,
    /// ViT-B/32, 224 px.
    B32,
}

/// Which image encoder, and where its weights are.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum ImageEncoderSpec {
    /// EfficientNet-Lite0; `weights` defaults to the cached asset, `input_size` to 224.
    EfficientnetLite0 {
        /// A `model.safetensors` in `efficientnet_pytorch` names, instead of the asset.
        #[serde(default)]
        weights: Option<PathBuf>,
        /// The input side in pixels (the crop); the resize keeps the 256/224 ratio.
        #[serde(default)]
        input_size: Option<u32>,
    },
    /// A Hugging Face ViT folder.
    Vit {
        /// The folder (`config.json`, `model.safetensors`).
        dir: PathBuf,
        /// The preset used when the folder has no `config.json`.
        #[serde(default)]
        preset: Option<VitPreset>,
    },
    /// The vision tower of a Hugging Face CLIP folder.
    ClipVision {
        /// The folder (`config.json`, `model.safetensors`).
        dir: PathBuf,
    },
}

impl ImageEncoderSpec {
    /// Parse a spec string (see the module table).
    pub fn parse(s: &str) -> Result<Self> {
        let (name, dir) = split_spec(s);
        let need_dir = |d: Option<PathBuf>| d.ok_or(Error::SpecNeedsFolder { what: "image encoder", name: name.to_string() });
        match name {
            "efficientnet-lite0" if dir.is_none() => Ok(Self::EfficientnetLite0 { weights: None, input_size: None }),
            "vit" => Ok(Self::Vit { dir: need_dir(dir)?, preset: None }),
            "vit-b16" => Ok(Self::Vit { dir: need_dir(dir)?, preset: Some(VitPreset::B16) }),
            "vit-b32" => Ok(Self::Vit { dir: need_dir(dir)?, preset: Some(VitPreset::B32) }),
            "clip" | "clip-vision" => Ok(Self::ClipVision { dir: need_dir(dir)? }),
            _ => Err(Error::UnknownSpec { what: "image encoder", spec: s.to_string(), known: IMAGE_ENCODERS }),
        }
    }

    /// The weight file the encoder loads (for provenance: its sha256 names the model).
    pub fn weights(&self, cache: &AssetCache) -> Result<PathBuf> {
        Ok(match self {
            Self::EfficientnetLite0 { weights: Some(p), .. } => p.clone(),
            Self::EfficientnetLite0 { weights: None, .. } => cache.require("efficientnet-lite0")?.join("model.safetensors"),
            Self::Vit { dir, .. } | Self::ClipVision { dir } => dir.join("model.safetensors"),
        })
    }

    /// Load the encoder onto `device`.
    pub fn load(&self, cache: &AssetCache, device: &Device) -> Result<Box<dyn ImageEncoder>> {
        Ok(match self {
            Self::EfficientnetLite0 { weights, input_size } => {
                let path = match weights {
                    Some(p) => p.clone(),
                    None => cache.require("efficientnet-lite0")?.join("model.safetensors"),
                };
                let mut config = EfficientNetConfig::lite0();
                if let Some(size) = *input_size {
                    if size < 32 {
                        return Err(Error::Setting {
                            field: "encoder.image".into(),
                            message: format!("efficientnet-lite0: input size {size} is below 32 px; give 32 or more"),
                        });
                    }
                    let p = &mut config.preprocess;
                    p.resize = (size as f64 * p.resize as f64 / p.crop as f64).round() as u32;
                    p.crop = size;
                }
                Box::new(EfficientNet::load(&path, config, device)?)
            }
            Self::Vit { dir, preset } => {
                let preset = preset.map(|p| match p {
                    VitPreset::B16 => VitConfig::base_patch16_224(),
                    VitPreset::B32 => VitConfig::base_patch32_224(),
                });
                Box::new(VitEncoder::load(dir, preset, device)?)
            }
            Self::ClipVision { dir } => Box::new(ClipVisionEncoder::load(dir, device)?),
        })
    }
}

/// Which text encoder, and its settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum TextEncoderSpec {
    /// all-MiniLM-L6-v2; `dir` defaults to the cached `minilm` asset.
    Minilm {
        /// A sentence-transformers folder instead of the asset.
        #[serde(default)]
        dir: Option<PathBuf>,
        /// Truncation, in tokens.
        #[serde(default = "default_max_tokens")]
        max_tokens: usize,
    },
    /// The text tower of a Hugging Face CLIP folder.
    ClipText {
        /// The folder (`config.json`, `model.safetensors`, `tokenizer.json`).
        dir: PathBuf,
        /// Truncation, in tokens.
        #[serde(default = "default_max_tokens")]
        max_tokens: usize,
    },
    /// Random bag-of-words.
    BowRandom {
        /// Vector dimension.
        #[serde(default = "default_bow_dim")]
        dim: usize,
        /// The seed of the word vectors.
        #[serde(default)]
        seed: u64,
        /// Truncation, in words.
        #[serde(default = "default_max_tokens")]
        max_tokens: usize,
    },
    /// Learned bag-of-words over the vocabulary of the texts it is given.
    BowLearned {
        /// Vector dimension (ignored with `glove`, whose file sets it).
        #[serde(default = "default_bow_dim")]
        dim: usize,
        /// The seed of the random rows.
        #[serde(default)]
        seed: u64,
        /// A GloVe-format text file for the initial rows.
        #[serde(default)]
        glove: Option<PathBuf>,
        /// Truncation, in words.
        #[serde(default = "default_max_tokens")]
        max_tokens: usize,
    },
}

/// The image-encoder spec strings, for error messages.
const IMAGE_ENCODERS: &str = "efficientnet-lite0, vit:DIR, vit-b16:DIR, vit-b32:DIR, clip:DIR";
/// The text-encoder spec strings, for error messages.
const TEXT_ENCODERS: &str = "minilm, bow-random, bow-learned, clip-text:DIR";

/// `name:DIR` → (name, Some(DIR)); `name` or `name:` → (name, None).
fn split_spec(s: &str) -> (&str, Option<PathBuf>) {
    match s.split_once(':') {
        Some((n, d)) if !d.is_empty() => (n, Some(PathBuf::from(d))),
        Some((n, _)) => (n, None),
        None => (s, None),
    }
}

fn default_max_tokens() -> usize {
    DEFAULT_MAX_TOKENS
}
fn default_bow_dim() -> usize {
    300
}

impl TextEncoderSpec {
    /// Parse an experiment's `retrieval.text_encoder` string (see the module table), with the
    /// truncation and the seed (of the bag-of-words vectors) that the experiment gives.
    pub fn parse(s: &str, max_tokens: usize, seed: u64) -> Result<Self> {
        let (name, dir) = split_spec(s);
        Ok(match name {
            "minilm" => Self::Minilm { dir, max_tokens },
            "clip" | "clip-text" => {
                Self::ClipText { dir: dir.ok_or(Error::SpecNeedsFolder { what: "text encoder", name: name.to_string() })?, max_tokens }
            }
            "bow-random" => Self::BowRandom { dim: default_bow_dim(), seed, max_tokens },
            "bow-learned" => Self::BowLearned { dim: default_bow_dim(), seed, glove: dir, max_tokens },
            _ => return Err(Error::UnknownSpec { what: "text encoder", spec: s.to_string(), known: TEXT_ENCODERS }),
        })
    }

    /// The weight file the encoder loads, if it has one (a bag-of-words is seeded, or read
    /// from a GloVe file).
    pub fn weights(&self, cache: &AssetCache) -> Result<Option<PathBuf>> {
        Ok(match self {
            Self::Minilm { dir: Some(d), .. } | Self::ClipText { dir: d, .. } => Some(d.join("model.safetensors")),
            Self::Minilm { dir: None, .. } => Some(cache.require("minilm")?.join("model.safetensors")),
            Self::BowLearned { glove, .. } => glove.clone(),
            Self::BowRandom { .. } => None,
        })
    }

    /// Load the encoder onto `device`; `vocabulary` is the texts a learned bag-of-words
    /// builds its vocabulary from (the others ignore it).
    pub fn load(&self, cache: &AssetCache, vocabulary: &[&str], device: &Device) -> Result<Box<dyn TextEncoder>> {
        Ok(match self {
            Self::Minilm { dir, max_tokens } => {
                let dir = match dir {
                    Some(d) => d.clone(),
                    None => cache.require("minilm")?,
                };
                Box::new(MiniLm::load(&dir, *max_tokens, device)?)
            }
            Self::ClipText { dir, max_tokens } => Box::new(ClipTextEncoder::load(dir, *max_tokens, device)?),
            Self::BowRandom { dim, seed, max_tokens } => Box::new(RandomBow::new(*dim, *seed, *max_tokens, device)?),
            Self::BowLearned { dim, seed, glove, max_tokens } => Box::new(match glove {
                Some(g) => LearnedBow::with_glove(vocabulary, g, *seed, *max_tokens, device)?,
                None => LearnedBow::new(vocabulary, *dim, *seed, *max_tokens, device)?,
            }),
        })
    }
}
