//! A minimal `.npy` reader and writer for little-endian f32 matrices (format 1.0, C order):
//! the exchange format of `rac index synth` and the FAISS comparison script.

use std::path::Path;

use crate::error::{Error, Result};
use crate::fsio;

const MAGIC: &[u8] = b"\x93NUMPY";

/// Write a row-major f32 array of `shape` to `path` (atomically).
pub fn write_f32(path: &Path, data: &[f32], shape: &[usize]) -> Result<()> {
    assert_eq!(shape.iter().product::<usize>(), data.len(), "shape matches data");
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    let shape_txt = if dims.len() == 1 { format!("({},)", dims[0]) } else { format!("({})", dims.join(", ")) };
    let mut header = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': {shape_txt}, }}");
    // Pad so that magic + version + length + header + newline is a multiple of 64.
    let unpadded = MAGIC.len() + 2 + 2 + header.len() + 1;
    header.push_str(&" ".repeat((64 - unpadded % 64) % 64));
    header.push('\n');
    let mut bytes = Vec::with_capacity(10 + header.len() + data.len() * 4);
    bytes.extend_from_slice(MAGIC);
    bytes.extend_from_slice(&[1, 0]);
    bytes.extend_from_slice(&(header.len() as u16).to_le_bytes());
    bytes.extend_from_slice(header.as_bytes());
    bytes.extend(data.iter().flat_map(|x| x.to_le_bytes()));
    fsio::write_atomic(path, &bytes)
}

/// Read a little-endian f32 (or f64, converted) C-order array; returns the data and shape.
pub fn read_f32(path: &Path) -> Result<(Vec<f32>, Vec<usize>)> {
    let bytes = fsio::read(path, ".npy file")?;
    let bad = |m: &str| Error::Format { path: path.to_path_buf(), message: m.to_string() };
    if bytes.len() < 10 || &bytes[..6] != MAGIC {
        return Err(bad("not a .npy file (bad magic)"));
    }
    let (hlen, start) = match bytes[6] {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        2 | 3 if bytes.len() >= 12 => (u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize, 12),
        _ => return Err(bad("unsupported .npy version")),
    };
    let header =
        std::str::from_utf8(bytes.get(start..start + hlen).ok_or_else(|| bad("truncated header"))?).map_err(|_| bad("header is not UTF-8"))?;
    let field = |name: &str| -> Option<&str> {
        let i = header.find(&format!("'{name}'"))?;
        let rest = header[i + name.len() + 2..].trim_start().strip_prefix(':')?.trim_start();
        Some(rest)
    };
    let descr = field("descr").ok_or_else(|| bad("header has no descr"))?;
    let width = if descr.starts_with("'<f4'") {
        4
    } else if descr.starts_with("'<f8'") {
        8
    } else {
        return Err(bad(&format!("dtype {} is not supported (expected '<f4' or '<f8')", descr.split(',').next().unwrap_or(""))));
    };
    if field("fortran_order").is_some_and(|v| v.starts_with("True")) {
        return Err(bad("Fortran-order arrays are not supported"));
    }
    let shape_txt = field("shape").ok_or_else(|| bad("header has no shape"))?;
    let inner = shape_txt.strip_prefix('(').and_then(|s| s.split(')').next()).ok_or_else(|| bad("malformed shape"))?;
    let shape: Vec<usize> = inner
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.parse::<usize>().map_err(|_| bad("malformed shape")))
        .collect::<Result<_>>()?;
    let count: usize = shape.iter().product();
    let body = &bytes[start + hlen..];
    if body.len() != count * width {
        return Err(bad(&format!("expected {} data bytes for shape {shape:?}, found {}", count * width, body.len())));
    }
    let data = if width == 4 {
        crate::vectors::f32_from_bytes(body)
    } else {
        body.chunks_exact(8).map(|c| f64::from_le_bytes(c.try_into().expect("8 bytes")) as f32).collect()
    };
    Ok((data, shape))
}
