//! ViT image encoder, the paper's E (ViT-B/16 pretrained on ImageNet-21k), through
//! `candle-transformers`' ViT encoder blocks (the patch embedding is our own, see
//! `Embeddings`).
//!
//! - Paper: Dosovitskiy et al., "An Image is Worth 16x16 Words: Transformers for Image
//!   Recognition at Scale", ICLR 2021.
//! - Reference code: Hugging Face `transformers`' `ViTModel` (`modeling_vit.py`).
//! - Weights: a Hugging Face-layout folder the user brings, `config.json` +
//!   `model.safetensors` (+ optional `preprocessor_config.json`), e.g.
//!   `google/vit-base-patch16-224-in21k`. Both `ViTModel` names (`embeddings.…`) and
//!   `ViTForImageClassification` names (`vit.embeddings.…`) load.
//!
//! The feature is the CLS token after the final layer norm (`last_hidden_state[:, 0]`), as
//! the paper's retrieval keys. Preprocessing follows `preprocessor_config.json` (default
//! mean 0.5, std 0.5, the in21k checkpoints' values).

use std::path::Path;

use candle_core::{DType, Device, IndexOp, Module, Tensor};
use candle_nn::{LayerNorm, VarMap};
use candle_transformers::models::vit;
use serde::{Deserialize, Serialize};

use super::ImageEncoder;
use super::pixels::check_pixels;
use super::weights::Weights;
use crate::data::Preprocess;
use crate::error::{Error, Result};
use crate::fsio;

/// The ViT architecture, as Hugging Face's `config.json` gives it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VitConfig {
    /// Width of the transformer.
    pub hidden_size: usize,
    /// Number of layers.
    pub num_hidden_layers: usize,
    /// Attention heads per layer.
    pub num_attention_heads: usize,
    /// Width of the MLP.
    pub intermediate_size: usize,
    /// The MLP activation (`gelu` is the exact, erf-based GELU).
    #[serde(default)]
    pub hidden_act: candle_nn::Activation,
    /// Layer-norm epsilon.
    #[serde(default = "default_eps")]
    pub layer_norm_eps: f64,
    /// Side of the square input image.
    pub image_size: usize,
    /// Side of a square patch.
    pub patch_size: usize,
    /// Input channels.
    #[serde(default = "default_channels")]
    pub num_channels: usize,
    /// Whether the query, key and value projections have biases.
    #[serde(default = "default_true")]
    pub qkv_bias: bool,
}

fn default_eps() -> f64 {
    1e-12
}
fn default_channels() -> usize {
    3
}
fn default_true() -> bool {
    true
}

impl VitConfig {
    /// ViT-B/16 at 224 px (`google/vit-base-patch16-224-in21k`).
    pub fn base_patch16_224() -> Self {
        VitConfig {
            hidden_size: 768,
            num_hidden_layers: 12,
            num_attention_heads: 12,
            intermediate_size: 3072,
            hidden_act: candle_nn::Activation::Gelu,
            layer_norm_eps: 1e-12,
            image_size: 224,
            patch_size: 16,
            num_channels: 3,
            qkv_bias: true,
        }
    }

    /// ViT-B/32 at 224 px (`google/vit-base-patch32-224-in21k`).
    pub fn base_patch32_224() -> Self {
        VitConfig { patch_size: 32, ..Self::base_patch16_224() }
    }

    /// The same architecture as candle-transformers' `vit::Config`.
    pub fn to_candle(&self) -> vit::Config {
        vit::Config {
            hidden_size: self.hidden_size,
            num_hidden_layers: self.num_hidden_layers,
            num_attention_heads: self.num_attention_heads,
            intermediate_size: self.intermediate_size,
            hidden_act: self.hidden_act,
            layer_norm_eps: self.layer_norm_eps,
            image_size: self.image_size,
            patch_size: self.patch_size,
            num_channels: self.num_channels,
            qkv_bias: self.qkv_bias,
        }
    }

    fn validate(&self, path: &Path) -> Result<()> {
        let field = |f: &str, m: String| Error::InvalidField { path: path.into(), field: f.into(), message: m };
        if self.num_attention_heads == 0 || !self.hidden_size.is_multiple_of(self.num_attention_heads) {
            return Err(field("num_attention_heads", format!("must divide hidden_size ({})", self.hidden_size)));
        }
        if self.patch_size == 0 || !self.image_size.is_multiple_of(self.patch_size) {
            return Err(field("patch_size", format!("must divide image_size ({})", self.image_size)));
        }
        if self.num_channels != 3 {
            return Err(field("num_channels", format!("RGB encoders take 3 channels, found {}", self.num_channels)));
        }
        Ok(())
    }
}

/// Read a JSON file into `T`; errors name the file.
pub(crate) fn read_json<T: serde::de::DeserializeOwned>(path: &Path, what: &str) -> Result<T> {
    let text = fsio::read_to_string(path, what)?;
    serde_json::from_str(&text).map_err(|e| Error::Config { path: path.into(), message: e.to_string() })
}

/// The preprocessing of a Hugging Face folder: mean and std from `preprocessor_config.json`
/// when it exists, else the given defaults; resize and crop to the model's image size.
pub(crate) fn hf_preprocess(dir: &Path, image_size: usize, mean: [f32; 3], std: [f32; 3]) -> Result<Preprocess> {
    #[derive(Deserialize)]
    struct Processor {
        image_mean: Option<[f32; 3]>,
        image_std: Option<[f32; 3]>,
    }
    let path = dir.join("preprocessor_config.json");
    let (mean, std) = if path.is_file() {
        let p: Processor = read_json(&path, "preprocessor config")?;
        (p.image_mean.unwrap_or(mean), p.image_std.unwrap_or(std))
    } else {
        (mean, std)
    };
    if std.iter().any(|&s| !(s > 0.0)) {
        return Err(Error::InvalidField { path, field: "image_std".into(), message: "every channel's std must be positive".into() });
    }
    Ok(Preprocess { resize: image_size as u32, crop: image_size as u32, mean, std, grey_to_rgb: true })
}

/// The embeddings (patch projection, class token, position embeddings) in `ViTModel`'s
/// names. The patch projection, a stride-`p` convolution in the reference, is computed as
/// one matrix product over the non-overlapping patches: the same numbers, and a backward
/// pass that needs no gradient of the pixels. candle's convolution always computes that
/// gradient with a transposed convolution, which took 38% of a bf16 ViT-B/16 training step
/// on an H100 (the GPU check's kernel profile).
struct Embeddings {
    /// `[c · p · p, hidden]`: the convolution kernel, flattened and transposed.
    projection_t: Tensor,
    bias: Tensor,
    cls_token: Tensor,
    position_embeddings: Tensor,
    patch: usize,
    hidden: usize,
}

impl Embeddings {
    fn new(cfg: &vit::Config, vb: candle_nn::VarBuilder) -> candle_core::Result<Self> {
        let (h, c, p) = (cfg.hidden_size, cfg.num_channels, cfg.patch_size);
        let patches = (cfg.image_size / p) * (cfg.image_size / p);
        // Read in the reference's order, so that a wrong shape is reported for the same tensor.
        let cls_token = vb.get((1, 1, h), "cls_token")?;
        let kernel = vb.get((h, c, p, p), "patch_embeddings.projection.weight")?;
        Ok(Embeddings {
            projection_t: kernel.reshape((h, c * p * p))?.t()?,
            bias: vb.get(h, "patch_embeddings.projection.bias")?,
            cls_token,
            position_embeddings: vb.get((1, patches + 1, h), "position_embeddings")?,
            patch: p,
            hidden: h,
        })
    }

    fn forward(&self, pixels: &Tensor) -> candle_core::Result<Tensor> {
        let (n, c, height, width) = pixels.dims4()?;
        let (p, gh, gw) = (self.patch, height / self.patch, width / self.patch);
        // [n, c, gh, p, gw, p] → [n, gh, gw, c, p, p]: each row one patch in the kernel's order.
        let patches = pixels.reshape(vec![n, c, gh, p, gw, p])?.permute(vec![0, 2, 4, 1, 3, 5])?.contiguous()?.reshape((n * gh * gw, c * p * p))?;
        let x = patches.matmul(&self.projection_t)?.broadcast_add(&self.bias)?.reshape((n, gh * gw, self.hidden))?;
        let cls = self.cls_token.broadcast_as((n, 1, self.hidden))?;
        Tensor::cat(&[&cls, &x], 1)?.broadcast_add(&self.position_embeddings)
    }
}

/// A ViT whose feature is the final-layer-normed CLS token.
pub struct VitEncoder {
    embeddings: Embeddings,
    encoder: vit::Encoder,
    layernorm: LayerNorm,
    config: VitConfig,
    preprocess: Preprocess,
    weights_sha256: String,
    device: Device,
    /// The type the forward pass computes in (f32, or bf16 for a bf16-trained encoder).
    dtype: DType,
}

impl VitEncoder {
    /// Load a Hugging Face folder. Its `config.json` gives the architecture; when the folder
    /// has none, `preset` does ([`VitConfig::base_patch16_224`], [`VitConfig::base_patch32_224`]).
    /// When both are there they must agree on the shape of the network.
    pub fn load(dir: &Path, preset: Option<VitConfig>, device: &Device) -> Result<Self> {
        let (weights, config, preprocess) = Self::read_folder(dir, preset, device)?;
        Self::from_weights(&weights, config, preprocess)
    }

    /// The weights, architecture and preprocessing of a Hugging Face folder, as
    /// [`VitEncoder::load`] reads them (fine-tuning builds a trainable encoder from them).
    pub fn read_folder(dir: &Path, preset: Option<VitConfig>, device: &Device) -> Result<(Weights, VitConfig, Preprocess)> {
        let config_path = dir.join("config.json");
        let config = if config_path.is_file() {
            let c: VitConfig = read_json(&config_path, "ViT config")?;
            if let Some(p) = &preset {
                for (f, a, b) in [
                    ("hidden_size", c.hidden_size, p.hidden_size),
                    ("num_hidden_layers", c.num_hidden_layers, p.num_hidden_layers),
                    ("patch_size", c.patch_size, p.patch_size),
                    ("image_size", c.image_size, p.image_size),
                ] {
                    if a != b {
                        return Err(Error::InvalidField {
                            path: config_path,
                            field: f.into(),
                            message: format!("is {a} but the chosen preset has {b}"),
                        });
                    }
                }
            }
            c
        } else {
            preset.ok_or_else(|| Error::MissingFile {
                what: "ViT config".into(),
                path: config_path.clone(),
                hint: Some("give the folder a Hugging Face config.json, or pick a preset (vit-b16, vit-b32)".into()),
            })?
        };
        config.validate(&config_path)?;
        let weights = Weights::load(&dir.join("model.safetensors"), device)?;
        let preprocess = hf_preprocess(dir, config.image_size, [0.5; 3], [0.5; 3])?;
        Ok((weights, config, preprocess))
    }

    /// Build from loaded weights; a missing tensor or a wrong shape names the tensor.
    pub fn from_weights(weights: &Weights, config: VitConfig, preprocess: Preprocess) -> Result<Self> {
        Self::assemble(weights, config, preprocess, None, DType::F32)
    }

    /// A frozen encoder computing in `dtype` (bf16 under mixed precision): its tensors are the
    /// weights' own, so gradients flow back to whatever they were computed from.
    pub fn from_weights_as(weights: &Weights, config: VitConfig, preprocess: Preprocess, dtype: DType) -> Result<Self> {
        Self::assemble(weights, config, preprocess, None, dtype)
    }

    /// Build a trainable encoder (fine-tuning the base branch): every parameter becomes a
    /// `Var` of type `dtype` in `varmap`; with bf16 the forward pass runs in bf16 too.
    pub fn trainable(weights: &Weights, config: VitConfig, preprocess: Preprocess, varmap: &VarMap, dtype: DType) -> Result<Self> {
        Self::assemble(weights, config, preprocess, Some(varmap), dtype)
    }

    fn assemble(weights: &Weights, config: VitConfig, preprocess: Preprocess, trainable: Option<&VarMap>, dtype: DType) -> Result<Self> {
        let prefix = if weights.contains("vit.embeddings.cls_token") { "vit" } else { "" };
        let cfg = config.to_candle();
        let build = |vb: candle_nn::VarBuilder<'static>| {
            let vb = if prefix.is_empty() { vb } else { vb.pp(prefix) };
            let embeddings = Embeddings::new(&cfg, vb.pp("embeddings"))?;
            let encoder = vit::Encoder::new(&cfg, vb.pp("encoder"))?;
            let layernorm = candle_nn::layer_norm(cfg.hidden_size, cfg.layer_norm_eps, vb.pp("layernorm"))?;
            Ok((embeddings, encoder, layernorm))
        };
        let (embeddings, encoder, layernorm) = match trainable {
            None => weights.build_as(dtype, build)?,
            Some(varmap) => weights.build_trainable_as(varmap, dtype, build)?,
        };
        Ok(VitEncoder {
            embeddings,
            encoder,
            layernorm,
            config,
            preprocess,
            weights_sha256: weights.sha256().to_string(),
            device: weights.device().clone(),
            dtype,
        })
    }

    /// The architecture.
    pub fn config(&self) -> &VitConfig {
        &self.config
    }
}

impl ImageEncoder for VitEncoder {
    fn name(&self) -> &str {
        "vit"
    }
    fn dim(&self) -> usize {
        self.config.hidden_size
    }
    fn preprocess(&self) -> &Preprocess {
        &self.preprocess
    }
    fn weights_sha256(&self) -> &str {
        &self.weights_sha256
    }
    fn config_json(&self) -> String {
        serde_json::to_string(&self.config).expect("configs serialise")
    }
    fn device(&self) -> &Device {
        &self.device
    }
    fn forward(&self, pixels: &Tensor) -> Result<Tensor> {
        check_pixels(pixels, self.config.image_size, "vit")?;
        let pixels = pixels.to_device(&self.device)?.to_dtype(self.dtype)?;
        let x = self.embeddings.forward(&pixels)?;
        let x = self.encoder.forward(&x)?;
        Ok(x.i((.., 0, ..))?.apply(&self.layernorm)?.contiguous()?)
    }
}
