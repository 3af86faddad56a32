//! Typed edits of an [`Experiment`]: what a notebook or a script changes between runs
//! (epochs, k, the text encoder, the loss, the mode, the data set, the name), each checked
//! as a loaded file is. [`Experiment::with`] stays for every other dotted key.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use super::config::Experiment;
use crate::assets::AssetCache;
use crate::data::default_manifest_path;
use crate::error::{Error, Result};
use crate::index::k_max_for;
use crate::model::{LossKind, Mode, Reweighting};

/// The text encoder T of the retrieval branch, as an experiment names it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum TextEncoderKind {
    /// all-MiniLM-L6-v2 (the packaged asset), the demo's T.
    MiniLm,
    /// A bag-of-words whose word vectors train with the heads.
    BowLearned,
    /// A frozen bag-of-words of random word vectors: the cheapest T.
    BowRandom,
    /// The text tower of a CLIP folder.
    ClipText(PathBuf),
}

impl TextEncoderKind {
    /// Every encoder that needs no folder of its own.
    pub const PACKAGED: [TextEncoderKind; 3] = [TextEncoderKind::MiniLm, TextEncoderKind::BowLearned, TextEncoderKind::BowRandom];
}

impl fmt::Display for TextEncoderKind {
    /// The value of `retrieval.text_encoder`: `minilm`, `bow-learned`, `bow-random`,
    /// `clip-text:DIR`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TextEncoderKind::MiniLm => f.write_str("minilm"),
            TextEncoderKind::BowLearned => f.write_str("bow-learned"),
            TextEncoderKind::BowRandom => f.write_str("bow-random"),
            TextEncoderKind::ClipText(dir) => write!(f, "clip-text:{}", dir.display()),
        }
    }
}

impl FromStr for TextEncoderKind {
    type Err = Error;

    /// Parse a `retrieval.text_encoder` value (a notebook parameter, a CLI flag).
    fn from_str(s: &str) -> Result<Self> {
        Ok(match s.split_once(':') {
            Some(("clip" | "clip-text", dir)) if !dir.is_empty() => TextEncoderKind::ClipText(dir.into()),
            _ => match s {
                "minilm" => TextEncoderKind::MiniLm,
                "bow-learned" => TextEncoderKind::BowLearned,
                "bow-random" => TextEncoderKind::BowRandom,
                _ => {
                    return Err(Error::UnknownSpec { what: "text encoder", spec: s.into(), known: "minilm, bow-learned, bow-random, clip-text:DIR" });
                }
            },
        })
    }
}

impl Experiment {
    /// The "file" an edited experiment's errors name.
    fn edit_origin(&self) -> PathBuf {
        PathBuf::from(format!("experiment `{}`", self.name))
    }

    /// This experiment after `edit`, checked as a loaded file is.
    fn edited(&self, edit: impl FnOnce(&mut Experiment)) -> Result<Self> {
        let mut exp = self.clone();
        edit(&mut exp);
        exp.validate(&self.edit_origin())?;
        Ok(exp)
    }

    /// Train for `epochs` epochs; a warm-up longer than that is shortened to it (the
    /// recipe's warm-up is for its own epoch count).
    pub fn with_epochs(&self, epochs: usize) -> Result<Self> {
        self.edited(|e| {
            e.train.epochs = epochs;
            e.train.warmup_epochs = e.train.warmup_epochs.min(epochs);
        })
    }

    /// Read `k` neighbours; the neighbour cache's depth (`retrieval.k_max`) grows to `k`
    /// when it is smaller, and is left as it is otherwise (so records keep their keys).
    pub fn with_k(&self, k: usize) -> Result<Self> {
        self.edited(|e| {
            e.retrieval.k = k;
            e.retrieval.k_max = k_max_for(k, e.retrieval.k_max);
        })
    }

    /// Use `encoder` as T (frozen, or trained with the heads for `bow-learned`).
    pub fn with_text_encoder(&self, encoder: &TextEncoderKind) -> Result<Self> {
        self.edited(|e| e.retrieval.text_encoder = encoder.to_string())
    }

    /// Fine-tune T with the heads (MiniLM, CLIP's text tower).
    pub fn with_finetuned_text(&self, finetune: bool) -> Result<Self> {
        self.edited(|e| e.retrieval.finetune_text = finetune)
    }

    /// Train under `loss`, its other settings (tau, smoothing, weighting) kept.
    pub fn with_loss(&self, loss: LossKind) -> Result<Self> {
        self.edited(|e| e.loss.kind = loss)
    }

    /// The temperature tau of LACE's logit adjustment.
    pub fn with_tau(&self, tau: f64) -> Result<Self> {
        self.edited(|e| e.loss.tau = tau)
    }

    /// The per-class weights of the loss.
    pub fn with_reweighting(&self, reweighting: Reweighting) -> Result<Self> {
        self.edited(|e| e.loss.reweighting = reweighting)
    }

    /// Train and predict with the base branch, the retrieval branch, or both fused.
    pub fn with_mode(&self, mode: Mode) -> Result<Self> {
        self.edited(|e| e.model.mode = mode)
    }

    /// The data set: a manifest's path, or `""` for the embedded Fashion-MNIST-LT (written
    /// under `$RAC_HOME` when the working folder is not the repository). The manifest is
    /// read and checked when the experiment is prepared.
    pub fn with_manifest(&self, manifest: impl AsRef<Path>) -> Result<Self> {
        let manifest = manifest.as_ref();
        let path = if manifest.as_os_str().is_empty() { default_manifest_path(&AssetCache::from_env())? } else { manifest.to_path_buf() };
        self.edited(|e| e.data.manifest = path)
    }

    /// The run's name (its record folder is `<name>-<config hash>`).
    pub fn with_name(&self, name: &str) -> Result<Self> {
        self.edited(|e| e.name = name.to_string())
    }
}
