//! Conversion of legacy (pre-1.6, non-zip) PyTorch `.pth` files to safetensors.
//!
//! A legacy file is a sequence of pickles followed by raw storages:
//!
//! 1. the magic number `0x1950a86a20f9469cfc6c`, the protocol version (1001) and a
//!    `sys_info` dict (endianness, type sizes);
//! 2. the state dict, whose tensors refer to storages by key through `persistent_id`
//!    tuples `('storage', FloatStorage, key, location, numel, view)`;
//! 3. the list of storage keys, in the order the storages follow;
//! 4. for each storage, its element count as a little-endian `u64`, then its bytes.
//!
//! Tensors may be views with arbitrary strides into their storage (EfficientNet-Lite0's
//! convolution weights are stored channels-last), so each tensor is gathered element by
//! element through its `(offset, shape, stride)` into a contiguous buffer.
//!
//! The pickles are read with candle's pickle machine; this module adds the legacy framing
//! and the strided gather that candle's zip-only reader does not do.

use std::collections::HashMap;
use std::io::{BufRead, Cursor, Read};
use std::path::Path;

use candle_core::pickle::{Object, Stack};
use candle_core::{DType, Device, Tensor};

use crate::error::{Error, Result};
use crate::fsio;

/// The first pickle of every legacy file: protocol 2, LONG1 of the magic number, STOP.
const LEGACY_MAGIC: [u8; 15] = [0x80, 0x02, 0x8a, 0x0a, 0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19, 0x2e];

/// One tensor of a legacy file, before gathering.
#[derive(Debug, Clone)]
pub struct LegacyTensorInfo {
    /// The state-dict key.
    pub name: String,
    /// The element type.
    pub dtype: DType,
    /// The shape.
    pub shape: Vec<usize>,
    /// The strides, in elements.
    pub stride: Vec<usize>,
    /// The offset into the storage, in elements.
    pub offset: usize,
    /// The key of the storage it views.
    pub storage_key: String,
}

/// A parsed legacy file: tensor descriptions and the raw bytes of every storage.
#[derive(Debug)]
pub struct LegacyPth {
    /// The tensors, sorted by name.
    pub tensors: Vec<LegacyTensorInfo>,
    /// The raw little-endian bytes of each storage, by key.
    pub storages: HashMap<String, Vec<u8>>,
}

fn format_err(path: &Path, message: impl Into<String>) -> Error {
    Error::Format { path: path.to_path_buf(), message: message.into() }
}

fn read_pickle<R: BufRead>(r: &mut R, path: &Path, what: &str) -> Result<Object> {
    let mut stack = Stack::empty();
    stack.read_loop(r).and_then(|_| stack.finalize()).map_err(|e| format_err(path, format!("cannot read the {what} pickle: {e}")))
}

impl LegacyPth {
    /// Parse a legacy `.pth` file.
    pub fn read(path: &Path) -> Result<Self> {
        let bytes = fsio::read(path, "PyTorch weights file")?;
        Self::parse(path, &bytes)
    }

    /// Parse the bytes of a legacy `.pth` file; `path` is only used in error messages.
    pub fn parse(path: &Path, bytes: &[u8]) -> Result<Self> {
        if bytes.starts_with(b"PK\x03\x04") {
            return Err(format_err(path, "this is a zip-format .pth (PyTorch >= 1.6); read it with candle's pickle::PthTensors"));
        }
        if !bytes.starts_with(&LEGACY_MAGIC) {
            return Err(format_err(path, "not a legacy PyTorch file (magic number missing)"));
        }
        let mut r = Cursor::new(&bytes[LEGACY_MAGIC.len()..]);
        match read_pickle(&mut r, path, "protocol version")? {
            Object::Int(1001) => {}
            other => return Err(format_err(path, format!("unsupported protocol version {other:?}"))),
        }
        let sys_info = read_pickle(&mut r, path, "sys_info")?;
        check_little_endian(path, sys_info)?;
        let state = read_pickle(&mut r, path, "state dict")?;
        let Object::Dict(items) = state else {
            return Err(format_err(path, "the top-level object is not a state dict"));
        };
        let mut tensors = Vec::with_capacity(items.len());
        for (name, value) in items {
            let name_str = match &name {
                Object::Unicode(s) => s.clone(),
                other => return Err(format_err(path, format!("state-dict key {other:?} is not a string"))),
            };
            // `state_dict()` attaches its per-module version numbers as `_metadata`.
            if name_str == "_metadata" {
                continue;
            }
            let info = value
                .into_tensor_info(name, Path::new(""))
                .map_err(|e| Error::Tensor { path: path.into(), name: name_str.clone(), message: e.to_string() })?
                .ok_or_else(|| Error::Tensor {
                    path: path.into(),
                    name: name_str.clone(),
                    message: "not a tensor (expected torch._utils._rebuild_tensor_v2)".into(),
                })?;
            let elem = info.dtype.size_in_bytes();
            tensors.push(LegacyTensorInfo {
                name: name_str,
                dtype: info.dtype,
                shape: info.layout.dims().to_vec(),
                stride: info.layout.stride().to_vec(),
                // candle records the storage offset in bytes.
                offset: info.layout.start_offset() / elem,
                storage_key: info.path.trim_start_matches('/').to_string(),
            });
        }
        tensors.sort_by(|a, b| a.name.cmp(&b.name));

        let keys = match read_pickle(&mut r, path, "storage keys")? {
            Object::List(keys) | Object::Tuple(keys) => keys,
            other => return Err(format_err(path, format!("storage key list expected, found {other:?}"))),
        };
        let dtype_of: HashMap<&str, DType> = tensors.iter().map(|t| (t.storage_key.as_str(), t.dtype)).collect();
        let mut storages = HashMap::with_capacity(keys.len());
        for key in keys {
            let Object::Unicode(key) = key else {
                return Err(format_err(path, "a storage key is not a string"));
            };
            let dtype = *dtype_of.get(key.as_str()).ok_or_else(|| format_err(path, format!("storage {key} is used by no tensor")))?;
            let mut n = [0u8; 8];
            r.read_exact(&mut n).map_err(|_| format_err(path, format!("truncated before storage {key}")))?;
            let numel = u64::from_le_bytes(n) as usize;
            let mut data = vec![0u8; numel * dtype.size_in_bytes()];
            r.read_exact(&mut data).map_err(|_| format_err(path, format!("truncated inside storage {key} ({numel} elements)")))?;
            storages.insert(key, data);
        }
        for t in &tensors {
            if !storages.contains_key(&t.storage_key) {
                return Err(Error::Tensor { path: path.into(), name: t.name.clone(), message: format!("storage {} is missing", t.storage_key) });
            }
        }
        Ok(LegacyPth { tensors, storages })
    }

    /// Gather one tensor through its strides into a contiguous candle tensor on the CPU.
    pub fn gather(&self, path: &Path, info: &LegacyTensorInfo) -> Result<Tensor> {
        let storage = &self.storages[&info.storage_key];
        let elem = info.dtype.size_in_bytes();
        let numel: usize = info.shape.iter().product();
        let mut out = Vec::with_capacity(numel * elem);
        let mut index = vec![0usize; info.shape.len()];
        for _ in 0..numel {
            let offset = info.offset + index.iter().zip(&info.stride).map(|(i, s)| i * s).sum::<usize>();
            let bytes = storage.get(offset * elem..(offset + 1) * elem).ok_or_else(|| Error::Tensor {
                path: path.into(),
                name: info.name.clone(),
                message: format!("element offset {offset} is outside its storage"),
            })?;
            out.extend_from_slice(bytes);
            // Advance the row-major multi-index.
            for d in (0..index.len()).rev() {
                index[d] += 1;
                if index[d] < info.shape[d] {
                    break;
                }
                index[d] = 0;
            }
        }
        Ok(Tensor::from_raw_buffer(&out, info.dtype, &info.shape, &Device::Cpu)?)
    }

    /// Every tensor, gathered, by name.
    pub fn tensors(&self, path: &Path) -> Result<HashMap<String, Tensor>> {
        self.tensors.iter().map(|t| Ok((t.name.clone(), self.gather(path, t)?))).collect()
    }
}

fn check_little_endian(path: &Path, sys_info: Object) -> Result<()> {
    if let Object::Dict(items) = sys_info {
        for (k, v) in items {
            if k == Object::Unicode("little_endian".into()) && v == Object::Bool(false) {
                return Err(format_err(path, "big-endian PyTorch files are not supported"));
            }
        }
    }
    Ok(())
}

/// Convert a legacy `.pth` state dict to a safetensors file, written atomically.
/// Returns the names and shapes of the converted tensors, sorted by name.
pub fn convert_legacy_pth(src: &Path, dst: &Path) -> Result<Vec<(String, Vec<usize>)>> {
    let pth = LegacyPth::read(src)?;
    let tensors = pth.tensors(src)?;
    let tmp = fsio::temp_sibling(dst);
    candle_core::safetensors::save(&tensors, &tmp).map_err(|e| Error::Io {
        op: "writing",
        path: dst.into(),
        cause: std::io::Error::other(e.to_string()),
    })?;
    std::fs::rename(&tmp, dst).map_err(|e| Error::Io { op: "renaming into", path: dst.into(), cause: e })?;
    Ok(pth.tensors.iter().map(|t| (t.name.clone(), t.shape.clone())).collect())
}
