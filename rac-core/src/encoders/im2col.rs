//! im2col with TensorFlow "SAME" padding: `[n, c, h, w]` pixels → `[n·oh·ow, k·k·c]`
//! patches (tap-major, channels innermost), so that a dense convolution becomes one matrix
//! product whose result is already channels-last.
//!
//! EfficientNet's stem (3×3, stride 2, 3 → 32 channels) uses it: candle's `conv2d` would
//! produce channels-first output that the rest of the network must transpose back.

use candle_core::{CpuStorage, CustomOp1, DType, Layout, Shape, Tensor};
use rayon::prelude::*;

use super::depthwise::same_padding;

/// SAME-padded im2col of a square `kernel` at `stride`.
#[derive(Debug, Clone, Copy)]
pub struct Im2ColSame {
    /// Kernel side.
    pub kernel: usize,
    /// Stride.
    pub stride: usize,
}

impl Im2ColSame {
    /// The patches of `x` (`[n, c, h, w]`, f32 on the CPU): `[n·oh·ow, k·k·c]`.
    pub fn apply(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        if !x.device().is_cpu() || x.dtype() != DType::F32 {
            candle_core::bail!("im2col: f32 tensors on the CPU only");
        }
        x.contiguous()?.apply_op1_no_bwd(self)
    }
}

impl CustomOp1 for Im2ColSame {
    fn name(&self) -> &'static str {
        "im2col-same"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let CpuStorage::F32(data) = storage else { candle_core::bail!("im2col: f32 input expected") };
        let (start, end) = layout.contiguous_offsets().ok_or_else(|| candle_core::Error::Msg("im2col: contiguous input expected".into()))?;
        let input = &data[start..end];
        let (n, c, h, w) = layout.shape().dims4()?;
        let (k, s) = (self.kernel, self.stride);
        let (pt, _) = same_padding(h, k, s);
        let (pl, _) = same_padding(w, k, s);
        let (oh, ow) = (h.div_ceil(s), w.div_ceil(s));
        let cols = k * k * c;
        let mut out = vec![0f32; n * oh * ow * cols];
        out.par_chunks_mut(ow * cols).enumerate().for_each(|(row, out_row)| {
            let (img, oy) = (row / oh, row % oh);
            let image = &input[img * c * h * w..(img + 1) * c * h * w];
            for ox in 0..ow {
                let patch = &mut out_row[ox * cols..(ox + 1) * cols];
                for ky in 0..k {
                    let iy = (oy * s + ky) as isize - pt as isize;
                    if iy < 0 || iy >= h as isize {
                        continue;
                    }
                    for kx in 0..k {
                        let ix = (ox * s + kx) as isize - pl as isize;
                        if ix < 0 || ix >= w as isize {
                            continue;
                        }
                        for ci in 0..c {
                            patch[(ky * k + kx) * c + ci] = image[(ci * h + iy as usize) * w + ix as usize];
                        }
                    }
                }
            }
        });
        Ok((CpuStorage::F32(out), Shape::from((n * oh * ow, cols))))
    }
}
