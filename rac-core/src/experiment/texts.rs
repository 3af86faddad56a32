//! Neighbour texts → T's features: the k nearest neighbours' texts of every item, joined
//! and truncated, then encoded once per distinct truncated token sequence by a frozen T
//! (cached on disk, content-addressed), or tokenised for a T trained with the heads; the
//! frozen features scaled as `model.input_norm` says.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor, Var};

use super::config::Experiment;
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

/// The k first neighbours' texts of every item, joined with `sep`.
pub fn join_texts(neighbours: &[Neighbours], k: usize, sep: &str) -> Vec<String> {
    neighbours.iter().map(|n| n.texts.iter().take(k).map(String::as_str).collect::<Vec<_>>().join(sep)).collect()
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
    /// The scaling fitted on the training items' frozen features (`model.input_norm`), for
    /// features computed later (those of augmented views while fine-tuning).
    pub norm: Option<Scaler>,
    /// T, when it is trained with the heads (`retrieval.finetune_text`).
    pub trainable: Option<Box<dyn TrainableTextEncoder>>,
    /// T, when it is frozen: fine-tuning encodes the neighbour texts of augmented views with
    /// it, so it is loaded once.
    pub frozen: Option<Box<dyn TextEncoder>>,
}

/// The neighbours of every training item (without itself) and every evaluation item, their
/// texts joined, and T's features of them (frozen: cached and scaled; trainable: tokens).
pub fn retrieval_inputs(exp: &Experiment, prep: &mut Prepared, env: &RunEnv) -> Result<RetrievalInputs> {
    let device = exp.train.device.resolve("train.device")?;
    let r = &exp.retrieval;
    let (train_nb, eval_nb) = prep.neighbours(exp.cache_query()?).map_err(|e| e.within("retrieval"))?;
    let (train_texts, eval_texts) = (join_texts(&train_nb, r.k, &r.separator), join_texts(&eval_nb, r.k, &r.separator));
    let vocabulary: Vec<&str> = prep.dataset.class_texts.iter().map(String::as_str).collect();
    let encoder = exp.text_encoder()?.load(&env.cache, &vocabulary, &device)?;
    let text_dim = encoder.dim();
    if r.finetune_text {
        if encoder.varmap().is_none() {
            return Err(Error::InvalidInput(format!("retrieval.finetune_text: the text encoder `{}` has no trainable parameters", r.text_encoder)));
        }
        let tokens = |texts: &[String]| -> Result<RetrievalBatch> {
            let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
            let b = encoder.tokenize(&refs)?;
            Ok(RetrievalBatch::Tokens { ids: b.ids, mask: b.mask })
        };
        let (train, eval) = (tokens(&train_texts)?, tokens(&eval_texts)?);
        return Ok(RetrievalInputs { train, eval, text_dim, norm: None, trainable: Some(Box::new(TrainableText { encoder })), frozen: None });
    }
    let dir = env.work_dir("text-features");
    let mut progress = BarProgress::new(env.progress).with_unit("sequences");
    let train = frozen_text_features(encoder.as_ref(), &train_texts, &dir, &mut progress)?;
    let eval = frozen_text_features(encoder.as_ref(), &eval_texts, &dir, &mut progress)?;
    let scaler = exp.model.input_norm.fit(&train)?;
    let (train, eval) = (scaler.apply(&train)?, scaler.apply(&eval)?);
    Ok(RetrievalInputs {
        train: RetrievalBatch::Embedded(train),
        eval: RetrievalBatch::Embedded(eval),
        text_dim,
        norm: Some(scaler),
        trainable: None,
        frozen: Some(encoder),
    })
}
