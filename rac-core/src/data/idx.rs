//! Reader for the IDX format of (Fashion-)MNIST, optionally gzip-compressed.
//!
//! An IDX file is a big-endian header (`0, 0, type, ndim`, then `ndim` u32 sizes) followed
//! by the raw values. We only need unsigned bytes: images (`ndim = 3`) and labels (`ndim = 1`).

use std::io::Read;
use std::path::Path;

use crate::error::{Error, Result};
use crate::fsio;

/// An IDX array of unsigned bytes.
#[derive(Debug, Clone)]
pub struct IdxArray {
    /// The sizes of each dimension.
    pub dims: Vec<usize>,
    /// The values, row-major.
    pub data: Vec<u8>,
}

impl IdxArray {
    /// The number of items (the first dimension).
    pub fn len(&self) -> usize {
        self.dims.first().copied().unwrap_or(0)
    }

    /// Whether there are no items.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The number of values per item.
    pub fn item_size(&self) -> usize {
        self.dims.iter().skip(1).product()
    }

    /// The values of item `i`.
    pub fn item(&self, i: usize) -> &[u8] {
        let s = self.item_size();
        &self.data[i * s..(i + 1) * s]
    }
}

/// Read an IDX file of unsigned bytes; `.gz` files are decompressed.
pub fn read_idx(path: &Path) -> Result<IdxArray> {
    let raw = fsio::read(path, "IDX file")?;
    let bytes = if raw.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&raw[..])
            .read_to_end(&mut out)
            .map_err(|e| Error::Format { path: path.into(), message: format!("bad gzip stream: {e}") })?;
        out
    } else {
        raw
    };
    parse_idx(&bytes).map_err(|message| Error::Format { path: path.into(), message })
}

fn parse_idx(bytes: &[u8]) -> std::result::Result<IdxArray, String> {
    if bytes.len() < 4 || bytes[0] != 0 || bytes[1] != 0 {
        return Err("not an IDX file (bad magic number)".into());
    }
    if bytes[2] != 0x08 {
        return Err(format!("IDX value type 0x{:02x} is not unsigned byte (0x08)", bytes[2]));
    }
    let ndim = bytes[3] as usize;
    let header = 4 + 4 * ndim;
    if bytes.len() < header {
        return Err("truncated IDX header".into());
    }
    let dims: Vec<usize> = (0..ndim).map(|d| u32::from_be_bytes(bytes[4 + 4 * d..8 + 4 * d].try_into().unwrap()) as usize).collect();
    let n: usize = dims.iter().product();
    if bytes.len() != header + n {
        return Err(format!("IDX body has {} bytes but the header {:?} needs {n}", bytes.len() - header, dims));
    }
    Ok(IdxArray { dims, data: bytes[header..].to_vec() })
}
