//! Neighbour texts → T's features: the k nearest neighbours' texts of every item, joined
//! and truncated, then encoded once per distinct truncated token sequence by a frozen T
//! (cached on disk, content-addressed), or tokenised for a T trained with the heads; the
//! frozen features scaled as `model.input_norm` says.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor, Var};

use super::config::{Experiment, RetrievalRequest};
use super::prepared::{Prepared, RunEnv};
use crate::encoders::{TextEncoder, TokenBatch};
use crate::error::{Error, Result};
use crate::features::{BarProgress, EncodeProgress};
use crate::fsio;
use crate::index::Neighbours;
use crate::model::{RetrievalBatch, Scaler, TrainableTextEncoder};

/// Token ids of this many texts are computed per tokenizer call while deduplicating.
const TOKENIZE_CHUNK: usize = 4096;
/// Distinct token sequences of one length are pooled by T in batches of this many.
const ENCODE_BATCH: usize = 64;

/// A text encoder trained with the heads.
struct TrainableText {
    encoder: Box<dyn TextEncoder>,
}

impl TrainableTextEncoder for TrainableText {
    fn forward(&self, ids: &Tensor, mask: &Tensor) -> Result<Tensor> {
        let lengths = mask.to_dtype(DType::F32)?.sum(1)?.to_vec1::<f32>()?.iter().map(|&l| l as usize).collect();
        self.encoder.pool(&TokenBatch { ids: ids.clone(), mask: mask.clone(), lengths })
    }
    fn dim(&self) -> usize {
        self.encoder.dim()
    }
    fn vars(&self) -> Vec<(String, Var)> {
        let Some(vm) = self.encoder.varmap() else { return Vec::new() };
        let data = vm.data().lock().expect("the varmap lock is not poisoned");
        let mut vars: Vec<(String, Var)> = data.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        vars.sort_by(|a, b| a.0.cmp(&b.0));
        vars
    }
}

/// A frozen T and the scaling fitted on the training items' features (`model.input_norm`):
/// the one path from neighbours to the retrieval branch's scaled input (their first k texts
/// joined as the request says, through T, scaled), taken by cached runs, the run-time memory
/// study and fine-tuning's augmented views.
pub struct FrozenText {
    encoder: Box<dyn TextEncoder>,
    scaler: Scaler,
    request: RetrievalRequest,
}

impl FrozenText {
    /// A frozen `encoder`, the `scaler` fitted on the training items' features, and the
    /// `request` its neighbours are searched and joined by.
    pub fn new(encoder: Box<dyn TextEncoder>, scaler: Scaler, request: RetrievalRequest) -> Self {
        FrozenText { encoder, scaler, request }
    }

    /// The request the neighbours are searched and joined by.
    pub fn request(&self) -> &RetrievalRequest {
        &self.request
    }

    /// T's output width.
    pub fn dim(&self) -> usize {
        self.encoder.dim()
    }

    /// The scaled features of `neighbours`, encoded through the on-disk text-feature cache
    /// in `cache_dir` (one encoding per distinct truncated token sequence).
    pub fn cached(&self, neighbours: &[Neighbours], cache_dir: &Path, progress: &mut dyn EncodeProgress) -> Result<Tensor> {
        let texts = self.request.join_texts(neighbours);
        self.scaler.apply(&frozen_text_features(self.encoder.as_ref(), &texts, cache_dir, progress)?)
    }

    /// The scaled features of `neighbours` on `device`, T's output memoised in `memo` per
    /// joined text: augmented views ask for new texts every step, which the disk cache (one
    /// file per set of texts) would only fill up.
    pub fn memoised(&self, neighbours: &[Neighbours], memo: &mut HashMap<String, Vec<f32>>, device: &Device) -> Result<Tensor> {
        let texts = self.request.join_texts(neighbours);
        let mut missing: Vec<&str> = texts.iter().map(String::as_str).filter(|t| !memo.contains_key(*t)).collect();
        missing.sort_unstable();
        missing.dedup();
        let d = self.dim();
        if !missing.is_empty() {
            let encoded: Vec<f32> = self.encoder.encode(&missing)?.to_dtype(DType::F32)?.to_device(&Device::Cpu)?.flatten_all()?.to_vec1()?;
            for (t, row) in missing.iter().zip(encoded.chunks(d)) {
                memo.insert(t.to_string(), row.to_vec());
            }
        }
        let rows: Vec<f32> = texts.iter().flat_map(|t| memo[t].iter().copied()).collect();
        self.scaler.apply(&Tensor::from_vec(rows, (texts.len(), d), device)?)
    }
}

/// Pooled outputs of a frozen text encoder for every text, cached on disk
/// (content-addressed: encoder fingerprint + texts).
///
/// Only the first `max_tokens` tokens of a joined neighbour text reach T, so texts are
/// deduplicated on their truncated token ids, not on the strings: the many training items
/// whose nearest neighbours share one label sequence up to the cut cost one encoding.
/// Distinct sequences are encoded in batches of equal length, which need no padding.
pub fn frozen_text_features(encoder: &dyn TextEncoder, texts: &[String], cache_dir: &Path, progress: &mut dyn EncodeProgress) -> Result<Tensor> {
    let mut hasher_input = encoder.fingerprint();
    for t in texts {
        hasher_input.push('\0');
        hasher_input.push_str(t);
    }
    let path = cache_dir.join(format!("{}.safetensors", &fsio::sha256_bytes(hasher_input.as_bytes())[..24]));
    if path.is_file() {
        if let Ok(t) = candle_core::safetensors::load(&path, &Device::Cpu)
            && let Some(f) = t.get("features").filter(|f| f.dims() == [texts.len(), encoder.dim()])
        {
            return Ok(f.clone());
        }
        progress.warn(&format!("damaged text-feature cache {}; encoding again", path.display()));
    }
    // Truncated token ids of every text, and the distinct ones.
    let mut distinct: HashMap<Vec<u32>, u32> = HashMap::new();
    let mut sequences: Vec<Vec<u32>> = Vec::new();
    let mut slot_of_text = Vec::with_capacity(texts.len());
    for chunk in texts.chunks(TOKENIZE_CHUNK) {
        let refs: Vec<&str> = chunk.iter().map(String::as_str).collect();
        let batch = encoder.tokenize(&refs)?;
        let ids: Vec<Vec<u32>> = batch.ids.to_vec2()?;
        for (row, &len) in ids.into_iter().zip(&batch.lengths) {
            let seq = row[..len].to_vec();
            let next = sequences.len() as u32;
            let slot = *distinct.entry(seq.clone()).or_insert_with(|| {
                sequences.push(seq);
                next
            });
            slot_of_text.push(slot);
        }
    }
    // Encode the distinct sequences, grouped by length, in item order within a length.
    let mut order: Vec<u32> = (0..sequences.len() as u32).collect();
    order.sort_by_key(|&s| (sequences[s as usize].len(), s));
    let mut rows: Vec<Option<Tensor>> = vec![None; sequences.len()];
    progress.start(sequences.len(), &format!("{}: {} distinct token sequences of {} texts", encoder.name(), sequences.len(), texts.len()));
    let mut done = 0;
    for group in order.chunk_by(|&a, &b| sequences[a as usize].len() == sequences[b as usize].len()) {
        for chunk in group.chunks(ENCODE_BATCH) {
            let len = sequences[chunk[0] as usize].len();
            let ids: Vec<u32> = chunk.iter().flat_map(|&s| sequences[s as usize].iter().copied()).collect();
            let batch = TokenBatch {
                ids: Tensor::from_vec(ids, (chunk.len(), len), &Device::Cpu)?,
                mask: Tensor::ones((chunk.len(), len), DType::U32, &Device::Cpu)?,
                lengths: vec![len; chunk.len()],
            };
            let pooled = encoder.pool(&batch)?;
            for (i, &s) in chunk.iter().enumerate() {
                rows[s as usize] = Some(pooled.get(i)?);
            }
            done += chunk.len();
            progress.advance(done);
        }
    }
    progress.finish();
    let table = Tensor::stack(&rows.into_iter().map(|r| r.expect("every sequence encoded")).collect::<Vec<_>>(), 0)?;
    let idx = Tensor::from_vec(slot_of_text, texts.len(), &Device::Cpu)?;
    // A frozen T's features are constants of the run. Detached, as a cache hit's loaded
    // tensor is: a T with variables (the learned bag-of-words, frozen) would otherwise hand
    // the heads a graph back through every sequence it encoded, which the backward pass of
    // every training step walks (notebook 05's 30 epochs: 2,422 s, against 1 s detached).
    let feats = table.index_select(&idx, 0)?.detach();
    fsio::create_dir_all(cache_dir)?;
    let tmp = fsio::temp_sibling(&path);
    candle_core::safetensors::save(&HashMap::from([("features".to_string(), feats.clone())]), &tmp)?;
    std::fs::rename(&tmp, &path).map_err(|e| Error::Io { op: "renaming into", path: path.clone(), cause: e })?;
    Ok(feats)
}

/// The retrieval branch's inputs of a run: the joined neighbour texts of the training and
/// evaluation items through T.
pub struct RetrievalInputs {
    /// The training items' input (T's scaled features, or tokens for a trainable T).
    pub train: RetrievalBatch,
    /// The evaluation items' input.
    pub eval: RetrievalBatch,
    /// T's output width.
    pub text_dim: usize,
    /// T, when it is trained with the heads (`retrieval.finetune_text`).
    pub trainable: Option<Box<dyn TrainableTextEncoder>>,
    /// T, when it is frozen, with the scaling fitted on the training items' features: for
    /// features computed later (the run-time memory study's, and those of augmented views
    /// while fine-tuning), so it is loaded once.
    pub frozen: Option<FrozenText>,
}

/// The neighbours of every training item (without itself) and every evaluation item, their
/// texts joined, and T's features of them (frozen: cached and scaled; trainable: tokens).
pub fn retrieval_inputs(exp: &Experiment, prep: &mut Prepared, env: &RunEnv) -> Result<RetrievalInputs> {
    let device = exp.train.device.resolve("train.device")?;
    let r = &exp.retrieval;
    let request = exp.retrieval_request()?;
    let (train_nb, eval_nb) = prep.neighbours(request.search).map_err(|e| e.within("retrieval"))?;
    let vocabulary: Vec<&str> = prep.dataset.class_texts.iter().map(String::as_str).collect();
    let encoder = exp.text_encoder()?.load(&env.cache, &vocabulary, &device)?;
    let text_dim = encoder.dim();
    if r.finetune_text {
        if encoder.varmap().is_none() {
            return Err(Error::Setting {
                field: "retrieval.finetune_text".into(),
                message: format!(
                    "the text encoder `{}` has no trainable parameters; use `minilm`, `bow-learned` or `clip-text:DIR`, or set it to false",
                    r.text_encoder
                ),
            });
        }
        let tokens = |nb: &[Neighbours]| -> Result<RetrievalBatch> {
            let texts = request.join_texts(nb);
            let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
            let b = encoder.tokenize(&refs)?;
            Ok(RetrievalBatch::Tokens { ids: b.ids, mask: b.mask })
        };
        let (train, eval) = (tokens(&train_nb)?, tokens(&eval_nb)?);
        return Ok(RetrievalInputs { train, eval, text_dim, trainable: Some(Box::new(TrainableText { encoder })), frozen: None });
    }
    let dir = env.work_dir("text-features");
    let mut progress = BarProgress::new(env.progress).with_unit("sequences");
    // The scaling is fitted on the training items' features, so they are encoded first.
    let train = frozen_text_features(encoder.as_ref(), &request.join_texts(&train_nb), &dir, &mut progress)?;
    let scaler = exp.model.input_norm.fit(&train)?;
    let train = scaler.apply(&train)?;
    let frozen = FrozenText { encoder, scaler, request };
    let eval = frozen.cached(&eval_nb, &dir, &mut progress)?;
    Ok(RetrievalInputs {
        train: RetrievalBatch::Embedded(train),
        eval: RetrievalBatch::Embedded(eval),
        text_dim,
        trainable: None,
        frozen: Some(frozen),
    })
}
