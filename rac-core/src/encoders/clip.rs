//! CLIP's vision and text towers, through `candle-transformers`' CLIP. The text tower is the
//! paper's T; the vision tower is an alternative E.
//!
//! - Paper: Radford et al., "Learning Transferable Visual Models From Natural Language
//!   Supervision", ICML 2021.
//! - Reference code: Hugging Face `transformers`' `CLIPModel` (`modeling_clip.py`).
//! - Weights: a Hugging Face-layout folder the user brings (`config.json`,
//!   `model.safetensors`, and `tokenizer.json` for the text tower), e.g.
//!   `openai/clip-vit-base-patch16`; a full `CLIPModel` or a single tower loads.
//!
//! Features:
//! - vision: the final-layer-normed CLS token, through `visual_projection` when the file
//!   has it (CLIP's image embedding);
//! - text: the final-layer-normed hidden state of the end-of-text token (the last real
//!   token of each text), through `text_projection` when the file has it. The causal mask
//!   keeps padding from reaching any real token.
//!
//! candle's CLIP fixes the activation to QuickGELU and the layer-norm epsilon to 1e-5, so a
//! config asking for anything else is rejected, naming the field.

use std::path::Path;

use candle_core::{DType, Device, Module, Tensor};
use candle_nn::{Linear, VarMap};
use candle_transformers::models::clip::text_model::{Activation, ClipTextConfig, ClipTextTransformer};
use candle_transformers::models::clip::vision_model::{ClipVisionConfig, ClipVisionTransformer};
use serde::{Deserialize, Serialize};

use super::pixels::check_pixels;
use super::tokenize::{TextTokenizer, TokenBatch};
use super::vit::{hf_preprocess, read_json};
use super::weights::Weights;
use super::{ImageEncoder, TextEncoder};
use crate::data::Preprocess;
use crate::error::{Error, Result};
use crate::fsio;

/// OpenAI CLIP's image normalisation.
pub const CLIP_MEAN: [f32; 3] = [0.481_454_66, 0.457_827_5, 0.408_210_73];
/// OpenAI CLIP's image normalisation.
pub const CLIP_STD: [f32; 3] = [0.268_629_54, 0.261_302_6, 0.275_777_1];

/// One tower's config, as the `vision_config` / `text_config` of a Hugging Face
/// `config.json` gives it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClipTowerConfig {
    /// Width.
    pub hidden_size: usize,
    /// Width of the MLP.
    pub intermediate_size: usize,
    /// Layers.
    pub num_hidden_layers: usize,
    /// Attention heads.
    pub num_attention_heads: usize,
    /// The activation; only `quick_gelu`.
    #[serde(default = "quick_gelu")]
    pub hidden_act: String,
    /// Layer-norm epsilon; only 1e-5.
    #[serde(default = "clip_eps")]
    pub layer_norm_eps: f64,
    /// Output width of the projection.
    #[serde(default)]
    pub projection_dim: Option<usize>,
    /// Vision: side of the input image.
    #[serde(default)]
    pub image_size: Option<usize>,
    /// Vision: side of a patch.
    #[serde(default)]
    pub patch_size: Option<usize>,
    /// Vision: input channels.
    #[serde(default)]
    pub num_channels: Option<usize>,
    /// Text: vocabulary size.
    #[serde(default)]
    pub vocab_size: Option<usize>,
    /// Text: positions.
    #[serde(default)]
    pub max_position_embeddings: Option<usize>,
}

fn quick_gelu() -> String {
    "quick_gelu".into()
}
fn clip_eps() -> f64 {
    1e-5
}

#[derive(Deserialize)]
struct HfClipConfig {
    #[serde(default)]
    vision_config: Option<ClipTowerConfig>,
    #[serde(default)]
    text_config: Option<ClipTowerConfig>,
    #[serde(default)]
    projection_dim: Option<usize>,
}

/// Read one tower's config from a folder's `config.json`: the `vision_config` or
/// `text_config` of a full CLIP config, or the whole file for a single-tower config.
fn tower_config(path: &Path, tower: &str) -> Result<(ClipTowerConfig, Option<usize>)> {
    let text = fsio::read_to_string(path, "CLIP config")?;
    let full: HfClipConfig = serde_json::from_str(&text).map_err(|e| Error::Config { path: path.into(), message: e.to_string() })?;
    let sub = if tower == "vision" { full.vision_config } else { full.text_config };
    let cfg = match sub {
        Some(c) => c,
        None => read_json::<ClipTowerConfig>(path, "CLIP config")?,
    };
    let field = |f: &str, m: String| Error::InvalidField { path: path.into(), field: format!("{tower}_config.{f}"), message: m };
    if cfg.hidden_act != "quick_gelu" {
        return Err(field("hidden_act", format!("`{}` is not supported; candle's CLIP uses quick_gelu", cfg.hidden_act)));
    }
    if (cfg.layer_norm_eps - 1e-5).abs() > 1e-12 {
        return Err(field("layer_norm_eps", format!("{} is not supported; candle's CLIP uses 1e-5", cfg.layer_norm_eps)));
    }
    if cfg.num_attention_heads == 0 || cfg.hidden_size % cfg.num_attention_heads != 0 {
        return Err(field("num_attention_heads", format!("must divide hidden_size ({})", cfg.hidden_size)));
    }
    Ok((cfg, full.projection_dim))
}

/// A projection `[out, in]` when the file has it, checked against `hidden`.
fn projection(weights: &Weights, name: &str, hidden: usize) -> Result<Option<Linear>> {
    if !weights.contains(name) {
        return Ok(None);
    }
    let w = weights.get_any(name)?;
    match w.dims() {
        [_, i] if *i == hidden => Ok(Some(Linear::new(w, None))),
        d => Err(Error::Tensor {
            path: weights.path().into(),
            name: name.into(),
            message: format!("expected shape [projection_dim, {hidden}], found {d:?}"),
        }),
    }
}

/// CLIP's vision tower as an image encoder.
pub struct ClipVisionEncoder {
    model: ClipVisionTransformer,
    projection: Option<Linear>,
    config: ClipTowerConfig,
    image_size: usize,
    dim: usize,
    preprocess: Preprocess,
    weights_sha256: String,
    device: Device,
}

impl ClipVisionEncoder {
    /// Load a Hugging Face CLIP folder (`config.json`, `model.safetensors`, and optionally
    /// `preprocessor_config.json`).
    pub fn load(dir: &Path, device: &Device) -> Result<Self> {
        let config_path = dir.join("config.json");
        let (config, top_proj) = tower_config(&config_path, "vision")?;
        let field = |f: &str| Error::InvalidField {
            path: config_path.clone(),
            field: format!("vision_config.{f}"),
            message: "is required for the vision tower".into(),
        };
        let image_size = config.image_size.ok_or_else(|| field("image_size"))?;
        let patch_size = config.patch_size.ok_or_else(|| field("patch_size"))?;
        if patch_size == 0 || image_size % patch_size != 0 {
            return Err(Error::InvalidField {
                path: config_path,
                field: "vision_config.patch_size".into(),
                message: format!("must divide image_size ({image_size})"),
            });
        }
        let cfg = ClipVisionConfig {
            embed_dim: config.hidden_size,
            activation: Activation::QuickGelu,
            intermediate_size: config.intermediate_size,
            num_hidden_layers: config.num_hidden_layers,
            num_attention_heads: config.num_attention_heads,
            projection_dim: config.projection_dim.or(top_proj).unwrap_or(config.hidden_size),
            num_channels: config.num_channels.unwrap_or(3),
            image_size,
            patch_size,
        };
        let weights = Weights::load(&dir.join("model.safetensors"), device)?;
        // candle draws a random class embedding when the tensor is absent; a missing tensor
        // must be an error instead.
        weights.get("vision_model.embeddings.class_embedding", &[cfg.embed_dim])?;
        let model = weights.build(|vb| ClipVisionTransformer::new(vb.pp("vision_model"), &cfg))?;
        let projection = projection(&weights, "visual_projection.weight", cfg.embed_dim)?;
        let dim = match &projection {
            Some(p) => p.weight().dim(0)?,
            None => cfg.embed_dim,
        };
        let preprocess = hf_preprocess(dir, image_size, CLIP_MEAN, CLIP_STD)?;
        Ok(ClipVisionEncoder {
            model,
            projection,
            config,
            image_size,
            dim,
            preprocess,
            weights_sha256: weights.sha256().to_string(),
            device: device.clone(),
        })
    }
}

impl ImageEncoder for ClipVisionEncoder {
    fn name(&self) -> &str {
        "clip-vision"
    }
    fn dim(&self) -> usize {
        self.dim
    }
    fn preprocess(&self) -> &Preprocess {
        &self.preprocess
    }
    fn weights_sha256(&self) -> &str {
        &self.weights_sha256
    }
    fn config_json(&self) -> String {
        format!("{}{}", serde_json::to_string(&self.config).expect("configs serialise"), self.projection.is_some())
    }
    fn device(&self) -> &Device {
        &self.device
    }
    fn forward(&self, pixels: &Tensor) -> Result<Tensor> {
        check_pixels(pixels, self.image_size, "clip-vision")?;
        let pixels = pixels.to_device(&self.device)?.to_dtype(DType::F32)?;
        let x = self.model.forward(&pixels)?;
        Ok(match &self.projection {
            Some(p) => p.forward(&x)?,
            None => x,
        })
    }
}

/// CLIP's text tower as a text encoder; its parameters are trainable.
pub struct ClipTextEncoder {
    model: ClipTextTransformer,
    projection: Option<Linear>,
    tokenizer: TextTokenizer,
    varmap: VarMap,
    dim: usize,
    fingerprint: String,
    device: Device,
}

impl ClipTextEncoder {
    /// Load a Hugging Face CLIP folder (`config.json`, `model.safetensors`,
    /// `tokenizer.json`), truncating texts to `max_tokens` tokens.
    pub fn load(dir: &Path, max_tokens: usize, device: &Device) -> Result<Self> {
        let config_path = dir.join("config.json");
        let (config, top_proj) = tower_config(&config_path, "text")?;
        let required = |f: &str| Error::InvalidField {
            path: config_path.clone(),
            field: format!("text_config.{f}"),
            message: "is required for the text tower".into(),
        };
        let vocab_size = config.vocab_size.ok_or_else(|| required("vocab_size"))?;
        let max_positions = config.max_position_embeddings.ok_or_else(|| required("max_position_embeddings"))?;
        if max_tokens > max_positions {
            return Err(Error::Setting {
                field: "retrieval.max_tokens".into(),
                message: format!("{max_tokens}: at most {max_positions} tokens fit the position embeddings of {}; lower it", config_path.display()),
            });
        }
        let cfg = ClipTextConfig {
            vocab_size,
            embed_dim: config.hidden_size,
            activation: Activation::QuickGelu,
            intermediate_size: config.intermediate_size,
            max_position_embeddings: max_positions,
            pad_with: None,
            num_hidden_layers: config.num_hidden_layers,
            num_attention_heads: config.num_attention_heads,
            projection_dim: config.projection_dim.or(top_proj).unwrap_or(config.hidden_size),
        };
        let tokenizer = TextTokenizer::from_file(&dir.join("tokenizer.json"), max_tokens)?;
        let weights = Weights::load(&dir.join("model.safetensors"), device)?;
        let varmap = VarMap::new();
        let model = weights.build_trainable(&varmap, |vb| ClipTextTransformer::new(vb.pp("text_model"), &cfg))?;
        let projection = match projection(&weights, "text_projection.weight", cfg.embed_dim)? {
            Some(p) => {
                let w = weights.build_trainable(&varmap, |vb| vb.get(p.weight().dims(), "text_projection.weight"))?;
                Some(Linear::new(w, None))
            }
            None => None,
        };
        let dim = match &projection {
            Some(p) => p.weight().dim(0)?,
            None => cfg.embed_dim,
        };
        let settings = format!("clip-text\n{}\n{}\n{max_tokens}\n{}", weights.sha256(), tokenizer.sha256(), projection.is_some());
        Ok(ClipTextEncoder {
            model,
            projection,
            tokenizer,
            varmap,
            dim,
            fingerprint: fsio::sha256_bytes(settings.as_bytes())[..16].to_string(),
            device: device.clone(),
        })
    }
}

impl TextEncoder for ClipTextEncoder {
    fn name(&self) -> &str {
        "clip-text"
    }
    fn dim(&self) -> usize {
        self.dim
    }
    fn fingerprint(&self) -> String {
        self.fingerprint.clone()
    }
    fn tokenize(&self, texts: &[&str]) -> Result<TokenBatch> {
        self.tokenizer.encode_batch(texts, &self.device)
    }
    fn token_features(&self, batch: &TokenBatch) -> Result<Tensor> {
        Ok(self.model.forward_with_mask(&batch.ids, usize::MAX)?)
    }
    fn pool(&self, batch: &TokenBatch) -> Result<Tensor> {
        let x = self.token_features(batch)?;
        let (n, len, d) = x.dims3()?;
        let rows: Vec<u32> = batch.lengths.iter().enumerate().map(|(i, &l)| (i * len + l.max(1) - 1) as u32).collect();
        let idx = Tensor::from_vec(rows, n, x.device())?;
        let pooled = x.reshape((n * len, d))?.index_select(&idx, 0)?;
        Ok(match &self.projection {
            Some(p) => p.forward(&pooled)?,
            None => pooled,
        })
    }
    fn varmap(&self) -> Option<&VarMap> {
        Some(&self.varmap)
    }
}
