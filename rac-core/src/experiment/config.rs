//! `Experiment`: one RAC experiment as a value (serde; TOML on disk).
//!
//! Every section has defaults: the paper's settings where they fit our data, and the
//! choices DESIGN.md documents where they do not (a linear head on frozen features on
//! the CPU trains with a larger learning rate than a fine-tuned ViT). Unknown keys are
//! rejected with the key named, and values are validated once, at load time.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::data::{SplitKind, Thinning};
use crate::encoders::{ImageEncoderSpec, TextEncoderSpec};
use crate::error::{Error, Result};
use crate::fsio;
use crate::index::{DEFAULT_K_MAX, IndexConfig, Neighbours, SearchRequest, k_max_for};
use crate::model::{LossConfig, Mode, ModelConfig};
use crate::train::{FinetuneConfig, OptimConfig, TrainConfig};

/// Which data set, and how much of its training split is held out for tuning.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataSection {
    /// The data manifest; a relative path starts at the experiment file's folder, then at
    /// the working folder.
    #[serde(default = "default_manifest")]
    pub manifest: PathBuf,
    /// Evaluate on a validation split held out from the training data (`val_per_class`
    /// images of each class with enough of them) instead of the test split. Use it for any
    /// tuning; the test split is for the final numbers only.
    #[serde(default)]
    pub val_per_class: usize,
}

fn default_manifest() -> PathBuf {
    PathBuf::from("data-manifests/fashion-mnist-lt.toml")
}

impl Default for DataSection {
    fn default() -> Self {
        DataSection { manifest: default_manifest(), val_per_class: 0 }
    }
}

/// The frozen image encoder E (and the base branch's features).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EncoderSection {
    /// An image-encoder spec: `efficientnet-lite0`, `vit:<folder>`, `clip-vision:<folder>`.
    #[serde(default = "default_image_encoder")]
    pub image: String,
}

fn default_image_encoder() -> String {
    "efficientnet-lite0".into()
}

impl Default for EncoderSection {
    fn default() -> Self {
        EncoderSection { image: default_image_encoder() }
    }
}

/// How the retrieval branch reads the index.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetrievalSection {
    /// Neighbours whose texts are read (the paper's k = 30).
    #[serde(default = "default_k")]
    pub k: usize,
    /// Neighbour lists are cached up to this k; any k up to it re-uses them.
    #[serde(default = "default_k_max")]
    pub k_max: usize,
    /// Drop the first hit of training queries, which is the query itself.
    #[serde(default = "default_true")]
    pub drop_self: bool,
    /// Truncate the concatenated texts to this many tokens (the paper's 76).
    #[serde(default = "default_max_tokens")]
    pub max_tokens: usize,
    /// The text encoder T: `minilm`, `bow-random`, `bow-learned`, `clip-text:<folder>`.
    #[serde(default = "default_text_encoder")]
    pub text_encoder: String,
    /// Fine-tune T with the heads (trainable encoders only); a frozen T's outputs are cached.
    #[serde(default)]
    pub finetune_text: bool,
    /// Placed between the neighbours' texts.
    #[serde(default = "default_separator")]
    pub separator: String,
}

fn default_k() -> usize {
    30
}
fn default_k_max() -> usize {
    DEFAULT_K_MAX
}
fn default_true() -> bool {
    true
}
fn default_max_tokens() -> usize {
    76
}
fn default_text_encoder() -> String {
    "minilm".into()
}
fn default_separator() -> String {
    ", ".into()
}

impl Default for RetrievalSection {
    fn default() -> Self {
        RetrievalSection {
            k: default_k(),
            k_max: default_k_max(),
            drop_self: true,
            max_tokens: default_max_tokens(),
            text_encoder: default_text_encoder(),
            finetune_text: false,
            separator: default_separator(),
        }
    }
}

/// The retrieval branch's request as one value, built from `[retrieval]` and checked at
/// load: the index search (k, k_max, drop_self) and how the neighbours' texts are joined
/// for T. (T's truncation to `max_tokens` is part of T's own spec, `text_encoder()`.)
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetrievalRequest {
    /// What the index is asked: k of k_max neighbours, a training query's own item dropped
    /// or kept.
    pub search: SearchRequest,
    /// Placed between the neighbours' texts.
    pub separator: String,
}

impl RetrievalRequest {
    /// Neighbours read per item.
    pub fn k(&self) -> usize {
        self.search.k()
    }

    /// The first k neighbours' texts of every item, joined with the separator.
    pub fn join_texts(&self, neighbours: &[Neighbours]) -> Vec<String> {
        let k = self.k();
        neighbours.iter().map(|n| n.texts.iter().take(k).map(String::as_str).collect::<Vec<_>>().join(&self.separator)).collect()
    }
}

/// What the retrieval index holds: the paper's explicit memory. By default the training
/// split; an index of external data only (`sources = ["external"]`, thinned) re-creates
/// the paper's Fig 5.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemorySection {
    /// The data set's splits the index is built from, each a source of its own: `train`
    /// (without a held-out part), `external` (the manifest's `[external]` split), `val`.
    #[serde(default = "default_sources")]
    pub sources: Vec<String>,
    /// How every source is thinned before it goes in (seeded).
    #[serde(default)]
    pub thinning: Thinning,
}

fn default_sources() -> Vec<String> {
    vec![MemorySection::TRAIN.into()]
}

impl Default for MemorySection {
    fn default() -> Self {
        MemorySection { sources: default_sources(), thinning: Thinning::default() }
    }
}

impl MemorySection {
    /// The name of the training split's source.
    pub const TRAIN: &'static str = "train";

    /// Whether this is the default: the whole training split.
    pub fn is_default(&self) -> bool {
        *self == MemorySection::default()
    }

    /// The splits of `sources`; errors are [`Error::Setting`]s naming `sources`.
    pub fn splits(&self) -> Result<Vec<SplitKind>> {
        let bad = |message: String| Error::Setting { field: "sources".into(), message };
        if self.sources.is_empty() {
            return Err(bad("the index needs at least one source".into()));
        }
        let mut out: Vec<SplitKind> = Vec::new();
        for name in &self.sources {
            let kind = SplitKind::parse(name).ok_or_else(|| bad(format!("unknown source `{name}`; known: train, external, val")))?;
            if kind == SplitKind::Test {
                return Err(bad("`test` is the evaluation split; an index holding it would answer every query with itself".into()));
            }
            if out.contains(&kind) {
                return Err(bad(format!("`{name}` is named twice")));
            }
            out.push(kind);
        }
        Ok(out)
    }

    /// The checks that need no data (see [`Self::splits`] and [`Thinning::validate`]).
    pub fn validate(&self) -> Result<()> {
        self.splits()?;
        self.thinning.validate().map_err(|e| e.within("thinning"))
    }
}

/// One experiment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Experiment {
    /// The run's name (its record folder is `<name>-<config hash>`).
    pub name: String,
    /// The data set.
    #[serde(default)]
    pub data: DataSection,
    /// The frozen image encoder.
    #[serde(default)]
    pub encoder: EncoderSection,
    /// The retrieval index.
    #[serde(default)]
    pub index: IndexConfig,
    /// What the index holds (left out of the saved form at its default, so that records
    /// written before it existed keep their keys).
    #[serde(default, skip_serializing_if = "MemorySection::is_default")]
    pub memory: MemorySection,
    /// The retrieval branch.
    #[serde(default)]
    pub retrieval: RetrievalSection,
    /// The model.
    #[serde(default)]
    pub model: ModelConfig,
    /// The loss.
    #[serde(default)]
    pub loss: LossConfig,
    /// The optimiser.
    #[serde(default)]
    pub optim: OptimConfig,
    /// The schedule, epochs, batch size and seed.
    #[serde(default)]
    pub train: TrainConfig,
    /// Fine-tune this image encoder as the base branch, on augmented images (meant for
    /// CUDA), instead of training a head on E's cached features. Left out: the head.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_encoder: Option<FinetuneConfig>,
}

/// The method name of an experiment in tables: `CE`, `BalCE`, `LACE`, `LDAM` for the base
/// branch alone, `retrieval` and `RAC` otherwise.
pub fn method_name(exp: &Experiment) -> String {
    exp.method_name()
}

impl Experiment {
    /// The method name in tables: `CE`, `BalCE`, `LACE`, `LDAM` for the base branch alone,
    /// `retrieval` and `RAC` otherwise.
    pub fn method_name(&self) -> String {
        match self.model.mode {
            Mode::Base => self.loss.kind.display_name().to_string(),
            Mode::Retrieval => "retrieval".into(),
            Mode::Rac => "RAC".into(),
        }
    }

    /// The retrieval branch's request (`retrieval.k`, `k_max`, `drop_self`, `separator`),
    /// checked at load: every route to the index takes it.
    pub fn retrieval_request(&self) -> Result<RetrievalRequest> {
        let r = &self.retrieval;
        Ok(RetrievalRequest { search: SearchRequest::new(r.k, r.k_max, r.drop_self)?, separator: r.separator.clone() })
    }

    /// The frozen image encoder E (`encoder.image`), checked at load.
    pub fn image_encoder(&self) -> Result<ImageEncoderSpec> {
        ImageEncoderSpec::parse(&self.encoder.image)
    }

    /// The text encoder T (`retrieval.text_encoder`, with its truncation and the seed),
    /// checked at load.
    pub fn text_encoder(&self) -> Result<TextEncoderSpec> {
        TextEncoderSpec::parse(&self.retrieval.text_encoder, self.retrieval.max_tokens, self.train.seed)
    }

    /// An experiment with every default and the given name.
    pub fn named(name: &str) -> Self {
        let text = format!("name = {}", toml::Value::String(name.into()));
        toml::from_str(&text).expect("defaults deserialise")
    }

    /// Read and validate an experiment file.
    pub fn load(path: &Path) -> Result<Self> {
        let text = fsio::read_to_string(path, "experiment file")?;
        let mut exp = Self::parse(path, &text)?;
        // A relative manifest path starts at the experiment's folder when it exists there.
        if exp.data.manifest.is_relative()
            && let Some(dir) = path.parent()
        {
            let candidate = dir.join(&exp.data.manifest);
            if candidate.is_file() {
                exp.data.manifest = candidate;
            }
        }
        Ok(exp)
    }

    /// Parse and validate experiment TOML; `path` names it in errors.
    pub fn parse(path: &Path, text: &str) -> Result<Self> {
        let exp: Experiment = toml::from_str(text).map_err(|e| Error::Config { path: path.into(), message: e.to_string() })?;
        exp.validate(path)?;
        Ok(exp)
    }

    /// Check the values that parse but make no sense.
    pub fn validate(&self, path: &Path) -> Result<()> {
        let field = |f: &str, m: String| Err(Error::InvalidField { path: path.into(), field: f.into(), message: m });
        let r = &self.retrieval;
        self.retrieval_request().map_err(|e| e.in_section(path, "retrieval"))?;
        if r.max_tokens == 0 {
            return field("retrieval.max_tokens", "must be at least 1".into());
        }
        self.train.validate().map_err(|e| e.in_section(path, "train"))?;
        self.optim.validate().map_err(|e| e.in_section(path, "optim"))?;
        self.loss.validate().map_err(|e| e.in_section(path, "loss"))?;
        if self.name.trim().is_empty() || self.name.contains(['/', '\\']) {
            return field("name", format!("`{}` cannot name a run folder", self.name));
        }
        if let Err(e) = self.image_encoder() {
            return field("encoder.image", e.to_string());
        }
        if let Err(e) = self.text_encoder() {
            return field("retrieval.text_encoder", e.to_string());
        }
        self.index.validate().map_err(|e| e.in_section(path, "index"))?;
        self.memory.validate().map_err(|e| e.in_section(path, "memory"))?;
        if let Some(b) = &self.base_encoder {
            b.validate().map_err(|e| e.in_section(path, "base_encoder"))?;
            if !self.model.mode.has_base() {
                return field("base_encoder", "fine-tunes the base branch, but model.mode has none (use `rac` or `base`)".into());
            }
            if self.retrieval.finetune_text {
                return field("retrieval.finetune_text", "cannot be combined with base_encoder: fine-tuning reads a frozen T".into());
            }
        }
        Ok(())
    }

    /// A stable 12-hex-digit hash of the resolved configuration: the key of its run record.
    pub fn config_hash(&self) -> String {
        let json = serde_json::to_vec(self).expect("experiments serialise");
        fsio::sha256_bytes(&json)[..12].to_string()
    }

    /// This experiment as TOML.
    pub fn to_toml(&self) -> String {
        toml::to_string(self).expect("experiments serialise to TOML")
    }

    /// A copy with one dotted key set from its TOML text (`retrieval.k` = `10`,
    /// `loss.kind` = `ce`); a key that does not exist is an error naming it.
    pub fn with(&self, dotted: &str, value: &str) -> Result<Self> {
        let path = Path::new("--set");
        let mut root = toml::Value::try_from(self).expect("experiments serialise");
        let parsed: toml::Value = toml::from_str::<toml::Table>(&format!("v = {value}"))
            .map(|mut t| t.remove("v").expect("the key we wrote"))
            .unwrap_or_else(|_| toml::Value::String(value.to_string()));
        let mut node = &mut root;
        let mut missing = false;
        let parts: Vec<&str> = dotted.split('.').collect();
        for (i, part) in parts.iter().enumerate() {
            let table = node.as_table_mut().ok_or_else(|| Error::InvalidField {
                path: path.into(),
                field: dotted.into(),
                message: format!("`{}` is not a section", parts[..i].join(".")),
            })?;
            if i + 1 == parts.len() {
                // A key left out of the saved form while at its default (train.device) is
                // still a key; the sections reject unknown keys, so parsing below tells.
                missing = !table.contains_key(*part);
                table.insert(part.to_string(), parsed.clone());
                break;
            }
            // A section left out of the saved form at its default (`memory`) is still a
            // section: an empty one is put in, and parsing below rejects a name that is none.
            if !table.contains_key(*part) {
                missing = true;
                table.insert(part.to_string(), toml::Value::Table(toml::Table::new()));
            }
            node = table.get_mut(*part).expect("just ensured");
        }
        let mut exp: Experiment = root.try_into().map_err(|e: toml::de::Error| Error::InvalidField {
            path: path.into(),
            field: dotted.into(),
            message: if missing && e.to_string().contains("unknown field") { "no such key in an experiment".into() } else { e.to_string() },
        })?;
        if dotted == "retrieval.k" {
            exp.retrieval.k_max = k_max_for(exp.retrieval.k, exp.retrieval.k_max);
        }
        exp.validate(path)?;
        Ok(exp)
    }
}
