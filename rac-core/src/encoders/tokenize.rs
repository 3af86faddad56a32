//! Tokenisation through the `tokenizers` crate: `tokenizer.json` → token ids, truncated to a
//! maximum (76 by default, the paper's cut for the concatenated neighbour texts) and padded
//! to the longest text of the batch.

use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use tokenizers::{PaddingParams, PaddingStrategy, Tokenizer, TruncationParams};

use crate::error::{Error, Result};
use crate::fsio;

/// The paper's maximum text length, in tokens (special tokens included).
pub const DEFAULT_MAX_TOKENS: usize = 76;

/// A tokenised batch: ids and attention mask, both `[n, len]` u32.
#[derive(Debug, Clone)]
pub struct TokenBatch {
    /// Token ids.
    pub ids: Tensor,
    /// 1 for a real token, 0 for padding.
    pub mask: Tensor,
    /// The number of real tokens of each text.
    pub lengths: Vec<usize>,
}

impl TokenBatch {
    /// The number of texts.
    pub fn len(&self) -> usize {
        self.lengths.len()
    }

    /// Whether the batch is empty.
    pub fn is_empty(&self) -> bool {
        self.lengths.is_empty()
    }

    /// The total number of real tokens.
    pub fn total_tokens(&self) -> usize {
        self.lengths.iter().sum()
    }
}

/// A `tokenizers` tokenizer with truncation and batch padding set.
#[derive(Clone)]
pub struct TextTokenizer {
    inner: Tokenizer,
    max_tokens: usize,
    source: PathBuf,
    sha256: String,
}

impl std::fmt::Debug for TextTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TextTokenizer").field("source", &self.source).field("max_tokens", &self.max_tokens).finish()
    }
}

impl TextTokenizer {
    /// Read a `tokenizer.json`; a file that does not parse is an error naming it.
    pub fn from_file(path: &Path, max_tokens: usize) -> Result<Self> {
        let bytes = fsio::read(path, "tokenizer file")?;
        let inner = Tokenizer::from_bytes(&bytes)
            .map_err(|e| Error::Format { path: path.to_path_buf(), message: format!("not a valid tokenizer.json ({e})") })?;
        Self::new(inner, max_tokens, path, fsio::sha256_bytes(&bytes))
    }

    /// Wrap a tokenizer built in code; `source` names it in errors, `sha256` identifies it.
    pub fn new(mut inner: Tokenizer, max_tokens: usize, source: &Path, sha256: String) -> Result<Self> {
        if max_tokens == 0 {
            return Err(Error::Setting {
                field: "retrieval.max_tokens".into(),
                message: format!("must be at least 1 (tokenizer {})", source.display()),
            });
        }
        let pad_token = ["[PAD]", "<pad>", "<|endoftext|>"].into_iter().find(|t| inner.token_to_id(t).is_some());
        let (pad_id, pad_token) = match (inner.get_padding(), pad_token) {
            (Some(p), _) => (p.pad_id, p.pad_token.clone()),
            (None, Some(t)) => (inner.token_to_id(t).unwrap_or(0), t.to_string()),
            (None, None) => (0, String::new()),
        };
        inner
            .with_truncation(Some(TruncationParams { max_length: max_tokens, ..Default::default() }))
            .map_err(|e| Error::Format { path: source.into(), message: format!("cannot set truncation ({e})") })?;
        inner.with_padding(Some(PaddingParams { strategy: PaddingStrategy::BatchLongest, pad_id, pad_token, ..Default::default() }));
        Ok(TextTokenizer { inner, max_tokens, source: source.to_path_buf(), sha256 })
    }

    /// The maximum number of tokens of a text, special tokens included.
    pub fn max_tokens(&self) -> usize {
        self.max_tokens
    }

    /// The sha256 of the tokenizer file.
    pub fn sha256(&self) -> &str {
        &self.sha256
    }

    /// The underlying tokenizer.
    pub fn inner(&self) -> &Tokenizer {
        &self.inner
    }

    /// The id of a token, if the vocabulary has it.
    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// The vocabulary size, added tokens included.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// Tokenise a batch onto `device`.
    pub fn encode_batch(&self, texts: &[&str], device: &Device) -> Result<TokenBatch> {
        if texts.is_empty() {
            return Err(Error::Empty { what: "the batch of texts".into(), hint: "give at least one text".into() });
        }
        let encodings = self.inner.encode_batch(texts.to_vec(), true).map_err(|e| Error::Format {
            path: self.source.clone(),
            message: format!("the tokenizer failed: {e}; fetch the asset again (`rac assets fetch`)"),
        })?;
        let len = encodings.iter().map(|e| e.get_ids().len()).max().unwrap_or(0).max(1);
        let n = encodings.len();
        let (mut ids, mut mask, mut lengths) = (Vec::with_capacity(n * len), Vec::with_capacity(n * len), Vec::with_capacity(n));
        for e in &encodings {
            let (i, m) = (e.get_ids(), e.get_attention_mask());
            ids.extend_from_slice(i);
            mask.extend_from_slice(m);
            // Padding to the batch's longest already happened; a text with no token at all
            // (an empty string without special tokens) still gets one padded slot.
            ids.extend(std::iter::repeat_n(0, len - i.len()));
            mask.extend(std::iter::repeat_n(0, len - m.len()));
            lengths.push(m.iter().filter(|&&v| v != 0).count());
        }
        Ok(TokenBatch { ids: Tensor::from_vec(ids, (n, len), device)?, mask: Tensor::from_vec(mask, (n, len), device)?, lengths })
    }
}
