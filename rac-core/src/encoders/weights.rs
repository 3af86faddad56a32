//! Weights files: a safetensors file read once, checksummed, and handed to candle.
//!
//! Every encoder loads through [`Weights`], so that
//! - the sha256 of the file is known (it keys the feature store through the encoder's
//!   fingerprint);
//! - a missing tensor or a tensor of the wrong shape is reported as [`Error::Tensor`],
//!   naming the file and the tensor, whatever model code asked for it;
//! - trainable encoders get their parameters as candle [`Var`]s registered in a [`VarMap`]
//!   under the file's own tensor names, initialised from the file, so that the training
//!   stage can fine-tune them or leave them frozen.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Shape, Tensor, Var};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::{VarBuilder, VarMap};

use crate::error::{Error, Result};
use crate::fsio;

/// A safetensors file loaded into memory, with its sha256.
#[derive(Debug, Clone)]
pub struct Weights {
    path: PathBuf,
    sha256: String,
    tensors: HashMap<String, Tensor>,
    device: Device,
    /// Seed of made-up tensors for names the file lacks (see [`Weights::synthetic`]).
    synthetic: Option<u64>,
}

impl Weights {
    /// Random weights of whatever shapes the model code asks for, for checks and benches
    /// that need the real architecture but not trained values (the GPU check compares CPU
    /// and CUDA on them). A tensor depends only on the seed, its name and its shape, so two
    /// devices build identical models; 1-d tensors (biases, norms, variances) are drawn
    /// from [0.5, 1.5], others uniformly within ±1/sqrt(fan-in).
    pub fn synthetic(seed: u64, device: &Device) -> Self {
        Weights {
            path: PathBuf::from(format!("synthetic-weights-{seed}")),
            sha256: fsio::sha256_bytes(format!("synthetic-weights-{seed}").as_bytes()),
            tensors: HashMap::new(),
            device: device.clone(),
            synthetic: Some(seed),
        }
    }

    fn made_up(&self, name: &str, shape: &[usize], device: &Device) -> Option<candle_core::Result<Tensor>> {
        use rand::{Rng, SeedableRng};
        let seed = self.synthetic?;
        let digest = fsio::sha256_bytes(format!("{seed}\0{name}\0{shape:?}").as_bytes());
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(u64::from_str_radix(&digest[..16], 16).expect("hex digits"));
        let n: usize = shape.iter().product();
        let (lo, hi) = if shape.len() == 1 {
            (0.5, 1.5)
        } else {
            let b = 1.0 / (shape[1..].iter().product::<usize>().max(1) as f32).sqrt();
            (-b, b)
        };
        let data: Vec<f32> = (0..n).map(|_| rng.random_range(lo..hi)).collect();
        Some(Tensor::from_vec(data, shape, &Device::Cpu).and_then(|t| t.to_device(device)))
    }

    /// Read a safetensors file onto `device`. Floating-point tensors are converted to f32;
    /// integer tensors (such as `num_batches_tracked`) are kept as they are.
    pub fn load(path: &Path, device: &Device) -> Result<Self> {
        let bytes = fsio::read(path, "weights file")?;
        let sha256 = fsio::sha256_bytes(&bytes);
        let raw = candle_core::safetensors::load_buffer(&bytes, device)
            .map_err(|e| Error::Format { path: path.to_path_buf(), message: format!("not a readable safetensors file ({})", root_cause(&e)) })?;
        let mut tensors = HashMap::with_capacity(raw.len());
        for (name, t) in raw {
            let t = if t.dtype().is_float() && t.dtype() != DType::F32 { t.to_dtype(DType::F32)? } else { t };
            tensors.insert(name, t);
        }
        Ok(Weights { path: path.to_path_buf(), sha256, tensors, device: device.clone(), synthetic: None })
    }

    /// Weights held in memory (tests, conversions); `path` names them in errors, and the
    /// checksum covers every tensor's name, shape, dtype and values.
    pub fn from_tensors(path: &Path, tensors: HashMap<String, Tensor>, device: &Device) -> Result<Self> {
        use sha2::{Digest, Sha256};
        let mut names: Vec<&String> = tensors.keys().collect();
        names.sort();
        let mut hasher = Sha256::new();
        for name in names {
            let t = &tensors[name];
            hasher.update(format!("{name}{:?}{:?}", t.dims(), t.dtype()).as_bytes());
            for v in t.flatten_all()?.to_dtype(DType::F64)?.to_vec1::<f64>()? {
                hasher.update(v.to_le_bytes());
            }
        }
        let sha256 = hex::encode(hasher.finalize());
        Ok(Weights { path: path.to_path_buf(), sha256, tensors, device: device.clone(), synthetic: None })
    }

    /// The same file's identity (path, checksum) over other tensors: the bf16 copies of a
    /// trainable encoder's f32 master weights, rebuilt every step under mixed precision.
    pub fn with_tensors(&self, tensors: HashMap<String, Tensor>) -> Self {
        Weights { tensors, synthetic: None, ..self.clone_identity() }
    }

    fn clone_identity(&self) -> Self {
        Weights {
            path: self.path.clone(),
            sha256: self.sha256.clone(),
            tensors: HashMap::new(),
            device: self.device.clone(),
            synthetic: self.synthetic,
        }
    }

    /// The file the weights came from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The sha256 of the file.
    pub fn sha256(&self) -> &str {
        &self.sha256
    }

    /// The device the tensors live on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Every tensor, by name.
    pub fn tensors(&self) -> &HashMap<String, Tensor> {
        &self.tensors
    }

    /// Whether a tensor is present.
    pub fn contains(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }

    /// One tensor, checked against the expected shape; the error names the tensor.
    pub fn get(&self, name: &str, shape: &[usize]) -> Result<Tensor> {
        if !self.tensors.contains_key(name)
            && let Some(t) = self.made_up(name, shape, &self.device)
        {
            return Ok(t?);
        }
        let t = self.tensors.get(name).ok_or_else(|| self.missing(name))?;
        if t.dims() != shape {
            return Err(Error::Tensor {
                path: self.path.clone(),
                name: name.into(),
                message: format!("expected shape {shape:?}, found {:?}", t.dims()),
            });
        }
        Ok(t.clone())
    }

    /// One tensor of any shape; the error names the tensor.
    pub fn get_any(&self, name: &str) -> Result<Tensor> {
        self.tensors.get(name).cloned().ok_or_else(|| self.missing(name))
    }

    fn missing(&self, name: &str) -> Error {
        Error::Tensor { path: self.path.clone(), name: name.into(), message: "missing from the weights file".into() }
    }

    /// Build a frozen model: `build` reads its tensors through a [`VarBuilder`]; candle's
    /// "cannot find tensor" and "shape mismatch" errors become [`Error::Tensor`].
    pub fn build<T>(&self, build: impl FnOnce(VarBuilder<'static>) -> candle_core::Result<T>) -> Result<T> {
        self.build_as(DType::F32, build)
    }

    /// [`Weights::build`] with tensors of type `dtype`.
    pub fn build_as<T>(&self, dtype: DType, build: impl FnOnce(VarBuilder<'static>) -> candle_core::Result<T>) -> Result<T> {
        let backend = Backend { weights: self.clone(), varmap: None };
        let vb = VarBuilder::from_backend(Box::new(backend), dtype, self.device.clone());
        build(vb).map_err(|e| self.load_error(e))
    }

    /// Build a trainable model: every tensor `build` asks for becomes a [`Var`] initialised
    /// from the file and registered in `varmap` under its name in the file.
    pub fn build_trainable<T>(&self, varmap: &VarMap, build: impl FnOnce(VarBuilder<'static>) -> candle_core::Result<T>) -> Result<T> {
        self.build_trainable_as(varmap, DType::F32, build)
    }

    /// [`Weights::build_trainable`] with parameters of type `dtype` (bf16 training).
    pub fn build_trainable_as<T>(
        &self,
        varmap: &VarMap,
        dtype: DType,
        build: impl FnOnce(VarBuilder<'static>) -> candle_core::Result<T>,
    ) -> Result<T> {
        let backend = Backend { weights: self.clone(), varmap: Some(varmap.clone()) };
        let vb = VarBuilder::from_backend(Box::new(backend), dtype, self.device.clone());
        build(vb).map_err(|e| self.load_error(e))
    }

    /// Turn a candle error raised while loading into one that names the tensor and the file.
    pub fn load_error(&self, e: candle_core::Error) -> Error {
        tensor_error(&self.path, e)
    }
}

/// Map a candle loading error to [`Error::Tensor`] when it is about one tensor.
pub fn tensor_error(path: &Path, e: candle_core::Error) -> Error {
    match e {
        candle_core::Error::CannotFindTensor { path: name } => {
            Error::Tensor { path: path.into(), name, message: "missing from the weights file".into() }
        }
        candle_core::Error::UnexpectedShape { msg, expected, got } if msg.starts_with("shape mismatch for ") => Error::Tensor {
            path: path.into(),
            name: msg.trim_start_matches("shape mismatch for ").to_string(),
            message: format!("expected shape {:?}, found {:?}", expected.dims(), got.dims()),
        },
        candle_core::Error::WithBacktrace { inner, .. } | candle_core::Error::Context { inner, .. } => tensor_error(path, *inner),
        other => Error::Candle(other),
    }
}

/// The innermost message of a candle error, without backtraces.
pub(crate) fn root_cause(e: &candle_core::Error) -> String {
    match e {
        candle_core::Error::WithBacktrace { inner, .. } => root_cause(inner),
        other => other.to_string(),
    }
}

/// The candle backend behind [`Weights::build`] and [`Weights::build_trainable`].
struct Backend {
    weights: Weights,
    varmap: Option<VarMap>,
}

impl Backend {
    fn fetch(&self, name: &str, shape: Option<&Shape>, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        let t = match (self.weights.tensors.get(name), shape) {
            (Some(t), _) => t.clone(),
            (None, Some(s)) => match self.weights.made_up(name, s.dims(), dev) {
                Some(t) => t?,
                None => return Err(candle_core::Error::CannotFindTensor { path: name.to_string() }),
            },
            (None, None) => return Err(candle_core::Error::CannotFindTensor { path: name.to_string() }),
        };
        let t = t.to_dtype(dtype)?.to_device(dev)?;
        let Some(varmap) = &self.varmap else { return Ok(t) };
        let mut data = varmap.data().lock().map_err(|_| candle_core::Error::Msg("the VarMap lock is poisoned".into()))?;
        if let Some(var) = data.get(name) {
            return Ok(var.as_tensor().clone());
        }
        let var = Var::from_tensor(&t)?;
        let tensor = var.as_tensor().clone();
        data.insert(name.to_string(), var);
        Ok(tensor)
    }
}

impl SimpleBackend for Backend {
    fn get(&self, s: Shape, name: &str, _h: candle_nn::Init, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        if let Some(t) = self.weights.tensors.get(name)
            && t.shape() != &s
        {
            return Err(candle_core::Error::UnexpectedShape { msg: format!("shape mismatch for {name}"), expected: s, got: t.shape().clone() });
        }
        self.fetch(name, Some(&s), dtype, dev)
    }

    fn get_unchecked(&self, name: &str, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        self.fetch(name, None, dtype, dev)
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.weights.tensors.contains_key(name)
    }
}
