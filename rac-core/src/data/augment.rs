//! Training-time augmentation for fine-tuning the base branch: the paper's low-magnitude
//! recipe (DESIGN.md §1), as timm writes it (`rand-m1-n3-mstd0.5`, random scale, flip).
//!
//! Per image, in this order:
//! 1. RandAugment: `layers` operations drawn with replacement from timm's list (auto-contrast,
//!    equalise, invert, rotate, posterize, solarize, solarize-add, colour, contrast,
//!    brightness, sharpness, shear x/y, translate x/y), each applied with probability
//!    `prob`, at a magnitude drawn from N(`magnitude`, `magnitude_std`) and clipped to
//!    [0, 10]. Every operation with a magnitude is the identity at 0 (timm's "increasing"
//!    posterize and solarize), so magnitude 1 stays close to the image.
//! 2. Random scale: the shorter side is resized to `crop / crop_pct · s`, with `s` drawn
//!    uniformly from `scale`; a square of side `crop` is cut at a random place (padded with
//!    the fill colour where the resized image is smaller).
//! 3. A horizontal flip with probability `hflip`.
//! 4. Scaling to [0, 1] and per-channel normalisation, as [`Preprocess`] does.
//!
//! The evaluation transform is [`Augment::eval_preprocess`]: shorter side to `crop /
//! crop_pct`, centre crop. Every random choice comes from the RNG passed in, so a loader that
//! seeds it per item gives the same batches for any number of worker threads.

use image::imageops::FilterType;
use image::{DynamicImage, Rgb, RgbImage};
use imageproc::geometric_transformations::{Border, Interpolation, warp_with};
use rand::Rng;
use serde::{Deserialize, Serialize};

use super::Preprocess;
use crate::error::{Error, Result};

/// The augmentation settings (the `[base_encoder.augment]` section of an experiment).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AugmentConfig {
    /// RandAugment operations per image (the paper's 3).
    #[serde(default = "default_layers")]
    pub layers: usize,
    /// RandAugment magnitude on timm's 0–10 scale (the paper's 1).
    #[serde(default = "default_magnitude")]
    pub magnitude: f64,
    /// Standard deviation of the per-operation magnitude (the paper's 0.5).
    #[serde(default = "default_magnitude_std")]
    pub magnitude_std: f64,
    /// Probability that a drawn operation is applied (timm's 0.5).
    #[serde(default = "default_prob")]
    pub prob: f64,
    /// Range of the random scale factor (the paper's 0.75–1.33).
    #[serde(default = "default_scale")]
    pub scale: [f64; 2],
    /// Probability of a horizontal flip (the paper's 0.5).
    #[serde(default = "default_hflip")]
    pub hflip: f64,
    /// The crop's share of the resized shorter side, at train and test (the paper's 0.95).
    #[serde(default = "default_crop_pct")]
    pub crop_pct: f64,
}

fn default_layers() -> usize {
    3
}
fn default_magnitude() -> f64 {
    1.0
}
fn default_magnitude_std() -> f64 {
    0.5
}
fn default_prob() -> f64 {
    0.5
}
fn default_scale() -> [f64; 2] {
    [0.75, 1.33]
}
fn default_hflip() -> f64 {
    0.5
}
fn default_crop_pct() -> f64 {
    0.95
}

impl Default for AugmentConfig {
    fn default() -> Self {
        AugmentConfig {
            layers: default_layers(),
            magnitude: default_magnitude(),
            magnitude_std: default_magnitude_std(),
            prob: default_prob(),
            scale: default_scale(),
            hflip: default_hflip(),
            crop_pct: default_crop_pct(),
        }
    }
}

impl AugmentConfig {
    /// No augmentation at all: the training transform equals the evaluation transform.
    pub fn none() -> Self {
        AugmentConfig { layers: 0, magnitude: 0.0, magnitude_std: 0.0, prob: 0.0, scale: [1.0, 1.0], hflip: 0.0, crop_pct: 0.95 }
    }

    /// Check the ranges; an error names the field.
    pub fn validate(&self) -> Result<()> {
        let bad = |field: &str, message: String| Err(Error::Setting { field: format!("augment.{field}"), message });
        if !(0.0..=10.0).contains(&self.magnitude) {
            return bad("magnitude", format!("must be in [0, 10] (timm's scale), got {}", self.magnitude));
        }
        if !(self.magnitude_std >= 0.0 && self.magnitude_std.is_finite()) {
            return bad("magnitude_std", format!("must be at least 0, got {}", self.magnitude_std));
        }
        for (field, p) in [("prob", self.prob), ("hflip", self.hflip)] {
            if !(0.0..=1.0).contains(&p) {
                return bad(field, format!("is a probability, got {p}"));
            }
        }
        let [lo, hi] = self.scale;
        if !(lo > 0.0 && lo <= hi && hi.is_finite()) {
            return bad("scale", format!("must be [low, high] with 0 < low <= high, got [{lo}, {hi}]"));
        }
        if !(self.crop_pct > 0.0 && self.crop_pct <= 1.0) {
            return bad("crop_pct", format!("must be in (0, 1], got {}", self.crop_pct));
        }
        Ok(())
    }
}

/// One RandAugment operation (timm's names).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// Stretch each channel to the full range.
    AutoContrast,
    /// Equalise each channel's histogram.
    Equalize,
    /// 255 − v.
    Invert,
    /// Rotate by up to 30° at magnitude 10.
    Rotate,
    /// Keep fewer bits (8 at magnitude 0, 4 at 10).
    Posterize,
    /// Invert values above a threshold (256 at magnitude 0, 0 at 10).
    Solarize,
    /// Add up to 110 to values below 128.
    SolarizeAdd,
    /// Saturation factor 1 ± 0.9.
    Color,
    /// Contrast factor 1 ± 0.9.
    Contrast,
    /// Brightness factor 1 ± 0.9.
    Brightness,
    /// Sharpness factor 1 ± 0.9.
    Sharpness,
    /// Shear along x by up to 0.3.
    ShearX,
    /// Shear along y by up to 0.3.
    ShearY,
    /// Translate along x by up to 45% of the width.
    TranslateX,
    /// Translate along y by up to 45% of the height.
    TranslateY,
}

/// timm's RandAugment list.
pub const RAND_AUGMENT_OPS: [Op; 15] = [
    Op::AutoContrast,
    Op::Equalize,
    Op::Invert,
    Op::Rotate,
    Op::Posterize,
    Op::Solarize,
    Op::SolarizeAdd,
    Op::Color,
    Op::Contrast,
    Op::Brightness,
    Op::Sharpness,
    Op::ShearX,
    Op::ShearY,
    Op::TranslateX,
    Op::TranslateY,
];

/// The grey value geometric operations and padding fill with (the normalisation's mean).
const FILL: Rgb<u8> = Rgb([128, 128, 128]);

/// The training transform and its evaluation counterpart.
#[derive(Debug, Clone)]
pub struct Augment {
    config: AugmentConfig,
    /// The normalisation and input size (its `resize` is ignored: `crop_pct` sets it).
    preprocess: Preprocess,
}

impl Augment {
    /// An augmentation producing inputs for an encoder that expects `preprocess`.
    pub fn new(config: AugmentConfig, preprocess: Preprocess) -> Result<Self> {
        config.validate()?;
        Ok(Augment { config, preprocess })
    }

    /// The settings.
    pub fn config(&self) -> &AugmentConfig {
        &self.config
    }

    /// The evaluation transform: shorter side to `crop / crop_pct`, centre crop, normalise.
    pub fn eval_preprocess(&self) -> Preprocess {
        let crop = self.preprocess.crop;
        Preprocess { resize: (crop as f64 / self.config.crop_pct).round() as u32, grey_to_rgb: true, ..self.preprocess.clone() }
    }

    /// The augmented image, before normalisation (RGB, `crop × crop`).
    pub fn augment_image(&self, img: &DynamicImage, rng: &mut impl Rng) -> RgbImage {
        let mut rgb = img.to_rgb8();
        for _ in 0..self.config.layers {
            let op = RAND_AUGMENT_OPS[rng.random_range(0..RAND_AUGMENT_OPS.len())];
            // Draw the magnitude even when the operation is skipped, so that the stream of
            // random numbers does not depend on which operations applied.
            let m = self.magnitude(rng);
            let sign = if rng.random_bool(0.5) { 1.0 } else { -1.0 };
            if rng.random::<f64>() < self.config.prob {
                rgb = apply_op(op, &rgb, m, sign);
            }
        }
        let crop = self.preprocess.crop;
        let [lo, hi] = self.config.scale;
        let s = if hi > lo { rng.random_range(lo..=hi) } else { lo };
        let short = ((crop as f64 / self.config.crop_pct) * s).round().max(1.0) as u32;
        let (w, h) = rgb.dimensions();
        let k = short as f64 / w.min(h).max(1) as f64;
        let (nw, nh) = (((w as f64 * k).round() as u32).max(1), ((h as f64 * k).round() as u32).max(1));
        let resized = image::imageops::resize(&rgb, nw, nh, FilterType::Triangle);
        let x0 = if nw > crop { rng.random_range(0..=nw - crop) as i64 } else { -(((crop - nw) / 2) as i64) };
        let y0 = if nh > crop { rng.random_range(0..=nh - crop) as i64 } else { -(((crop - nh) / 2) as i64) };
        let flip = rng.random::<f64>() < self.config.hflip;
        RgbImage::from_fn(crop, crop, |x, y| {
            let sx = if flip { crop - 1 - x } else { x } as i64 + x0;
            let sy = y as i64 + y0;
            if sx >= 0 && sy >= 0 && (sx as u32) < nw && (sy as u32) < nh { *resized.get_pixel(sx as u32, sy as u32) } else { FILL }
        })
    }

    /// The augmented, normalised `[3, crop, crop]` values of one image.
    pub fn apply(&self, img: &DynamicImage, rng: &mut impl Rng) -> Vec<f32> {
        let view = DynamicImage::ImageRgb8(self.augment_image(img, rng));
        Preprocess { grey_to_rgb: true, ..self.preprocess.clone() }.normalise(&view)
    }

    fn magnitude(&self, rng: &mut impl Rng) -> f64 {
        let c = &self.config;
        let m = if c.magnitude_std > 0.0 {
            // Box–Muller: one normal draw from two uniforms.
            let (u1, u2): (f64, f64) = (rng.random::<f64>().max(f64::MIN_POSITIVE), rng.random());
            c.magnitude + c.magnitude_std * crate::vectors::box_muller(u1, u2).0
        } else {
            c.magnitude
        };
        m.clamp(0.0, 10.0)
    }
}

/// Apply one operation at magnitude `m` (0–10), with `sign` choosing the direction of the
/// signed ones.
pub fn apply_op(op: Op, img: &RgbImage, m: f64, sign: f64) -> RgbImage {
    let level = m / 10.0;
    let factor = 1.0 + sign * 0.9 * level;
    match op {
        Op::AutoContrast => per_channel_lut(img, |hist| {
            let lo = hist.iter().position(|&c| c > 0).unwrap_or(0);
            let hi = hist.iter().rposition(|&c| c > 0).unwrap_or(255);
            let mut lut = [0u8; 256];
            for (v, out) in lut.iter_mut().enumerate() {
                *out = if hi > lo { (((v as f64 - lo as f64) * 255.0 / (hi - lo) as f64).round()).clamp(0.0, 255.0) as u8 } else { v as u8 };
            }
            lut
        }),
        Op::Equalize => per_channel_lut(img, |hist| {
            // PIL's ImageOps.equalize: spread the cumulative histogram, ignoring the last level.
            let total: u64 = hist.iter().sum();
            let last = hist.iter().rev().find(|&&c| c > 0).copied().unwrap_or(0);
            let step = (total - last) / 255;
            let mut lut = [0u8; 256];
            if step == 0 {
                lut.iter_mut().enumerate().for_each(|(v, o)| *o = v as u8);
            } else {
                let mut n = step / 2;
                for (v, out) in lut.iter_mut().enumerate() {
                    *out = (n / step).min(255) as u8;
                    n += hist[v];
                }
            }
            lut
        }),
        Op::Invert => map_values(img, |v| 255 - v),
        Op::Posterize => {
            let bits = 8 - (level * 4.0) as u32;
            let mask = if bits >= 8 { 0xFF } else { !((1u16 << (8 - bits)) - 1) as u8 };
            map_values(img, |v| v & mask)
        }
        Op::Solarize => {
            let threshold = 256.0 - level * 256.0;
            map_values(img, |v| if v as f64 >= threshold { 255 - v } else { v })
        }
        Op::SolarizeAdd => {
            let add = (level * 110.0) as u16;
            map_values(img, |v| if v < 128 { (v as u16 + add).min(255) as u8 } else { v })
        }
        Op::Color => {
            let grey = luminance(img);
            blend_with(img, factor, |i, _| grey[i])
        }
        Op::Contrast => {
            let grey = luminance(img);
            let mean = (grey.iter().copied().sum::<f64>() / grey.len().max(1) as f64).round();
            blend_with(img, factor, |_, _| mean)
        }
        Op::Brightness => blend_with(img, factor, |_, _| 0.0),
        Op::Sharpness => {
            let smooth = smoothed(img);
            blend_with(img, factor, |i, ch| smooth[i * 3 + ch])
        }
        Op::Rotate => {
            let (w, h) = img.dimensions();
            let (cx, cy) = (w as f32 / 2.0, h as f32 / 2.0);
            let theta = (sign * level * 30.0).to_radians() as f32;
            let (s, c) = theta.sin_cos();
            warp_with(
                img,
                move |x, y| (c * (x - cx) + s * (y - cy) + cx, -s * (x - cx) + c * (y - cy) + cy),
                Interpolation::Bilinear,
                Border::Constant(FILL),
            )
        }
        Op::ShearX => {
            let k = (sign * level * 0.3) as f32;
            warp_with(img, move |x, y| (x + k * y, y), Interpolation::Bilinear, Border::Constant(FILL))
        }
        Op::ShearY => {
            let k = (sign * level * 0.3) as f32;
            warp_with(img, move |x, y| (x, y + k * x), Interpolation::Bilinear, Border::Constant(FILL))
        }
        Op::TranslateX => {
            let dx = (sign * level * 0.45 * img.width() as f64) as f32;
            warp_with(img, move |x, y| (x + dx, y), Interpolation::Bilinear, Border::Constant(FILL))
        }
        Op::TranslateY => {
            let dy = (sign * level * 0.45 * img.height() as f64) as f32;
            warp_with(img, move |x, y| (x, y + dy), Interpolation::Bilinear, Border::Constant(FILL))
        }
    }
}

fn map_values(img: &RgbImage, f: impl Fn(u8) -> u8) -> RgbImage {
    let mut out = img.clone();
    out.iter_mut().for_each(|v| *v = f(*v));
    out
}

fn per_channel_lut(img: &RgbImage, lut_of: impl Fn(&[u64; 256]) -> [u8; 256]) -> RgbImage {
    let mut luts = Vec::with_capacity(3);
    for ch in 0..3 {
        let mut hist = [0u64; 256];
        img.pixels().for_each(|p| hist[p[ch] as usize] += 1);
        luts.push(lut_of(&hist));
    }
    let mut out = img.clone();
    out.pixels_mut().for_each(|p| (0..3).for_each(|ch| p[ch] = luts[ch][p[ch] as usize]));
    out
}

/// ITU-R 601-2 luma, PIL's `convert("L")`.
fn luminance(img: &RgbImage) -> Vec<f64> {
    img.pixels().map(|p| ((p[0] as f64 * 299.0 + p[1] as f64 * 587.0 + p[2] as f64 * 114.0) / 1000.0).round()).collect()
}

/// PIL's SMOOTH filter ([[1,1,1],[1,5,1],[1,1,1]] / 13), the border left as it is.
fn smoothed(img: &RgbImage) -> Vec<f64> {
    let (w, h) = img.dimensions();
    let mut out: Vec<f64> = img.as_raw().iter().map(|&v| v as f64).collect();
    for y in 1..h.saturating_sub(1) {
        for x in 1..w.saturating_sub(1) {
            for ch in 0..3 {
                let mut acc = 0.0;
                for dy in 0..3 {
                    for dx in 0..3 {
                        let weight = if dx == 1 && dy == 1 { 5.0 } else { 1.0 };
                        acc += weight * img.get_pixel(x + dx - 1, y + dy - 1)[ch] as f64;
                    }
                }
                out[((y * w + x) * 3) as usize + ch] = (acc / 13.0).round();
            }
        }
    }
    out
}

/// PIL's `ImageEnhance`: `degenerate + factor · (image − degenerate)`, clipped.
fn blend_with(img: &RgbImage, factor: f64, degenerate: impl Fn(usize, usize) -> f64) -> RgbImage {
    let mut out = img.clone();
    for (i, p) in out.pixels_mut().enumerate() {
        for ch in 0..3 {
            let d = degenerate(i, ch);
            p[ch] = (d + factor * (p[ch] as f64 - d)).round().clamp(0.0, 255.0) as u8;
        }
    }
    out
}
