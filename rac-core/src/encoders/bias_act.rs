//! A per-channel bias plus an optional ReLU6, fused, on channels-last tensors (last
//! dimension = channels).
//!
//! After a folded-BatchNorm convolution every EfficientNet layer adds a bias and most clamp
//! to [0, 6]. As separate candle ops that is a broadcast add and two broadcast comparisons,
//! each a pass over the whole activation through candle's strided-broadcast path; fused, it
//! is one pass. Off the CPU it falls back to those candle ops.

use candle_core::{CpuStorage, CustomOp1, DType, InplaceOp1, Layout, Module, Shape, Tensor};
use rayon::prelude::*;

/// `y = x + bias` (then clamped to [0, 6] when `relu6`), bias along the last dimension.
#[derive(Debug, Clone)]
pub struct BiasAct {
    bias: Vec<f32>,
    bias_tensor: Tensor,
    relu6: bool,
}

impl BiasAct {
    /// `bias` is `[c]`.
    pub fn new(bias: &Tensor, relu6: bool) -> candle_core::Result<Self> {
        Ok(BiasAct { bias: bias.to_dtype(DType::F32)?.to_vec1::<f32>()?, bias_tensor: bias.clone(), relu6 })
    }
}

impl Module for BiasAct {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let c = x.dim(candle_core::D::Minus1)?;
        if c != self.bias.len() {
            candle_core::bail!("bias of {} channels for a tensor of {c} channels", self.bias.len());
        }
        if x.device().is_cpu() && x.dtype() == DType::F32 { x.contiguous()?.apply_op1_no_bwd(self) } else { self.forward_candle(x) }
    }
}

impl BiasAct {
    /// The same, reusing `x`'s storage on the CPU: for a freshly computed tensor that no
    /// other handle reads (a matrix product's output), it saves a copy of the activation.
    pub(crate) fn forward_owned(&self, x: Tensor) -> candle_core::Result<Tensor> {
        let c = x.dim(candle_core::D::Minus1)?;
        if c != self.bias.len() {
            candle_core::bail!("bias of {} channels for a tensor of {c} channels", self.bias.len());
        }
        if x.device().is_cpu() && x.dtype() == DType::F32 && x.is_contiguous() {
            x.inplace_op1(self)?;
            Ok(x)
        } else {
            self.forward(&x)
        }
    }

    fn apply_rows(&self, data: &mut [f32]) {
        let c = self.bias.len();
        // Chunks of whole rows, large enough to amortise rayon's scheduling.
        let rows_per_task = (16384 / c.max(1)).max(1);
        data.par_chunks_mut(rows_per_task * c).for_each(|chunk| {
            for row in chunk.chunks_exact_mut(c) {
                for (v, &b) in row.iter_mut().zip(&self.bias) {
                    *v += b;
                }
                if self.relu6 {
                    for v in row.iter_mut() {
                        *v = v.clamp(0.0, 6.0);
                    }
                }
            }
        });
    }

    /// The same with candle ops only: the path off the CPU, and the tests' reference.
    pub fn forward_candle(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let y = x.broadcast_add(&self.bias_tensor)?;
        if self.relu6 { y.clamp(0f32, 6f32) } else { Ok(y) }
    }
}

impl CustomOp1 for BiasAct {
    fn name(&self) -> &'static str {
        "bias-relu6"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let CpuStorage::F32(data) = storage else { candle_core::bail!("bias-relu6: f32 input expected") };
        let (start, end) = layout.contiguous_offsets().ok_or_else(|| candle_core::Error::Msg("bias-relu6: contiguous input expected".into()))?;
        let mut out = data[start..end].to_vec();
        self.apply_rows(&mut out);
        Ok((CpuStorage::F32(out), layout.shape().clone()))
    }
}

impl InplaceOp1 for BiasAct {
    fn name(&self) -> &'static str {
        "bias-relu6-inplace"
    }

    fn cpu_fwd(&self, storage: &mut CpuStorage, layout: &Layout) -> candle_core::Result<()> {
        let CpuStorage::F32(data) = storage else { candle_core::bail!("bias-relu6: f32 input expected") };
        let (start, end) = layout.contiguous_offsets().ok_or_else(|| candle_core::Error::Msg("bias-relu6: contiguous input expected".into()))?;
        self.apply_rows(&mut data[start..end]);
        Ok(())
    }
}
