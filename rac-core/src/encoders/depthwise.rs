//! Depthwise 2-D convolution on channels-last (`[n, h, w, c]`) tensors, with TensorFlow
//! "SAME" padding, a per-channel bias and an optional fused ReLU6.
//!
//! MobileNet-style networks (EfficientNet-Lite among them) spend little arithmetic in their
//! depthwise layers, but candle's grouped `conv2d` runs one convolution per group, which for
//! a 1152-channel depthwise layer is 1152 tiny convolutions. This op is a direct loop instead:
//! rows of output pixels in parallel (rayon), channels innermost so the compiler vectorises
//! the multiply-adds. Off the CPU it runs as a sum over the k·k taps of shifted views times
//! per-channel weights, in candle ops ([`DepthwiseConv2d::forward_candle`]): about 3k
//! elementwise passes instead of one small convolution per channel.

use candle_core::{CpuStorage, CustomOp1, DType, Layout, Module, Shape, Tensor};
use rayon::prelude::*;

/// TensorFlow "SAME" padding of one spatial axis: `(before, after)`. The output length is
/// `ceil(input / stride)`; an odd total puts the extra row or column after.
pub fn same_padding(input: usize, kernel: usize, stride: usize) -> (usize, usize) {
    let out = input.div_ceil(stride.max(1));
    let total = ((out.max(1) - 1) * stride + kernel).saturating_sub(input);
    (total / 2, total - total / 2)
}

/// A depthwise convolution with its (BatchNorm-folded) weights.
#[derive(Debug, Clone)]
pub struct DepthwiseConv2d {
    /// `[k, k, c]`: tap-major, channels innermost.
    taps: Vec<f32>,
    bias: Vec<f32>,
    channels: usize,
    kernel: usize,
    stride: usize,
    relu6: bool,
    /// `[c, 1, k, k]` and `[c]`, for candle's grouped convolution.
    weight_nchw: Tensor,
    bias_tensor: Tensor,
    /// `[k · k, c]` on the weights' device: the taps for the path off the CPU.
    taps_tensor: Tensor,
}

impl DepthwiseConv2d {
    /// `weight` is `[c, 1, k, k]` (PyTorch layout), `bias` is `[c]`.
    pub fn new(weight: &Tensor, bias: &Tensor, stride: usize, relu6: bool) -> candle_core::Result<Self> {
        let (channels, one, kernel, kernel2) = weight.dims4()?;
        if one != 1 || kernel != kernel2 {
            candle_core::bail!("depthwise weight must be [c, 1, k, k], found {:?}", weight.dims());
        }
        let taps = weight.squeeze(1)?.permute((1, 2, 0))?.flatten_all()?.to_dtype(DType::F32)?.to_vec1::<f32>()?;
        let bias_v = bias.to_dtype(DType::F32)?.to_vec1::<f32>()?;
        if bias_v.len() != channels {
            candle_core::bail!("depthwise bias has {} values for {channels} channels", bias_v.len());
        }
        Ok(Self {
            taps,
            bias: bias_v,
            channels,
            kernel,
            stride,
            relu6,
            weight_nchw: weight.clone(),
            bias_tensor: bias.clone(),
            taps_tensor: weight.squeeze(1)?.permute((1, 2, 0))?.reshape((kernel * kernel, channels))?.contiguous()?,
        })
    }

    /// The number of channels.
    pub fn channels(&self) -> usize {
        self.channels
    }

    /// The same convolution with candle ops only, as the path off the CPU: the sum over the
    /// k·k taps of the padded input's shifted, strided views times each tap's per-channel
    /// weights. `x` is `[n, h, w, c]`.
    pub fn forward_candle(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let (n, h, w, c) = x.dims4()?;
        let (k, s) = (self.kernel, self.stride);
        let (oh, ow) = (h.div_ceil(s), w.div_ceil(s));
        let (pt, pb) = same_padding(h, k, s);
        let (pl, pr) = same_padding(w, k, s);
        // s − 1 more zeros after, so that every tap's view is a whole number of strides long.
        let x = x.pad_with_zeros(1, pt, pb + s - 1)?.pad_with_zeros(2, pl, pr + s - 1)?;
        let wp = x.dim(2)?;
        let taps = self.taps_tensor.to_device(x.device())?.to_dtype(x.dtype())?;
        let mut acc: Option<Tensor> = None;
        for dy in 0..k {
            let rows = x.narrow(1, dy, oh * s)?;
            let rows = if s > 1 { rows.reshape((n, oh, s, wp, c))?.narrow(2, 0, 1)?.squeeze(2)? } else { rows };
            for dx in 0..k {
                let v = rows.narrow(2, dx, ow * s)?;
                let v = if s > 1 { v.reshape((n, oh, ow, s, c))?.narrow(3, 0, 1)?.squeeze(3)? } else { v };
                let term = v.broadcast_mul(&taps.get(dy * k + dx)?)?;
                acc = Some(match acc {
                    None => term,
                    Some(a) => (a + term)?,
                });
            }
        }
        let bias = self.bias_tensor.to_device(x.device())?.to_dtype(x.dtype())?;
        let y = acc.expect("a kernel has at least one tap").broadcast_add(&bias)?;
        if self.relu6 { y.clamp(0f32, 6f32) } else { Ok(y) }
    }

    /// The same convolution as candle's grouped `conv2d` (one convolution per channel): the
    /// reference the other two paths are tested against.
    pub fn forward_grouped(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let (_, h, w, _) = x.dims4()?;
        let (pt, pb) = same_padding(h, self.kernel, self.stride);
        let (pl, pr) = same_padding(w, self.kernel, self.stride);
        let x = x.permute((0, 3, 1, 2))?.pad_with_zeros(2, pt, pb)?.pad_with_zeros(3, pl, pr)?;
        let y = x.conv2d(&self.weight_nchw, 0, self.stride, 1, self.channels)?;
        let y = y.broadcast_add(&self.bias_tensor.reshape((1, self.channels, 1, 1))?)?;
        let y = if self.relu6 { y.clamp(0f32, 6f32)? } else { y };
        y.permute((0, 2, 3, 1))?.contiguous()
    }
}

impl Module for DepthwiseConv2d {
    /// `x` is `[n, h, w, c]`; the result is `[n, ceil(h/s), ceil(w/s), c]`.
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let (_, _, _, c) = x.dims4()?;
        if c != self.channels {
            candle_core::bail!("depthwise conv expects {} channels, found {c}", self.channels);
        }
        if x.device().is_cpu() && x.dtype() == DType::F32 { x.contiguous()?.apply_op1_no_bwd(self) } else { self.forward_candle(x) }
    }
}

impl CustomOp1 for DepthwiseConv2d {
    fn name(&self) -> &'static str {
        "depthwise-conv2d-nhwc"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let CpuStorage::F32(data) = storage else { candle_core::bail!("depthwise conv: f32 input expected") };
        let (start, end) = layout.contiguous_offsets().ok_or_else(|| candle_core::Error::Msg("depthwise conv: contiguous input expected".into()))?;
        let input = &data[start..end];
        let (n, h, w, c) = layout.shape().dims4()?;
        let (k, s) = (self.kernel, self.stride);
        let (pt, _) = same_padding(h, k, s);
        let (pl, _) = same_padding(w, k, s);
        let (oh, ow) = (h.div_ceil(s), w.div_ceil(s));
        let mut out = vec![0f32; n * oh * ow * c];
        let geometry = Geometry { h, w, c, k, s, pt, pl, relu6: self.relu6 };
        let wide = simd_available();
        // One task per output row of one image.
        out.par_chunks_mut(ow * c).enumerate().for_each(|(row, out_row)| {
            let (img, oy) = (row / oh, row % oh);
            let image = &input[img * h * w * c..(img + 1) * h * w * c];
            if wide {
                // SAFETY: `simd_available` checked that the CPU has AVX2.
                #[cfg(target_arch = "x86_64")]
                unsafe {
                    output_row_avx2(&geometry, image, &self.taps, &self.bias, oy, out_row)
                }
            } else {
                output_row(&geometry, image, &self.taps, &self.bias, oy, out_row)
            }
        });
        Ok((CpuStorage::F32(out), Shape::from((n, oh, ow, c))))
    }
}

/// The shape of one depthwise convolution, for the row kernel.
struct Geometry {
    h: usize,
    w: usize,
    c: usize,
    k: usize,
    s: usize,
    pt: usize,
    pl: usize,
    relu6: bool,
}

/// Whether the AVX2 build of the row kernel can run here.
fn simd_available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx2")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// The row kernel compiled for AVX2: the same code, vectorised 8 floats wide instead of the
/// baseline's 4.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn output_row_avx2(g: &Geometry, image: &[f32], taps: &[f32], bias: &[f32], oy: usize, out_row: &mut [f32]) {
    output_row(g, image, taps, bias, oy, out_row)
}

/// One output row of one image: every output pixel starts from the bias, accumulates its
/// in-bounds taps channel-wise, then is clamped when the layer has a ReLU6.
#[inline(always)]
fn output_row(g: &Geometry, image: &[f32], taps: &[f32], bias: &[f32], oy: usize, out_row: &mut [f32]) {
    let Geometry { h, w, c, k, s, pt, pl, relu6 } = *g;
    for (ox, acc) in out_row.chunks_exact_mut(c).enumerate() {
        acc.copy_from_slice(bias);
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
                let px = &image[(iy as usize * w + ix as usize) * c..][..c];
                let tap = &taps[(ky * k + kx) * c..][..c];
                for ((a, &v), &t) in acc.iter_mut().zip(px).zip(tap) {
                    *a += v * t;
                }
            }
        }
        if relu6 {
            for a in acc.iter_mut() {
                *a = a.clamp(0.0, 6.0);
            }
        }
    }
}
