//! Image preprocessing: decoded image → normalised `[3, crop, crop]` f32 values.
//!
//! The steps are those of timm's eval transform: resize the shorter side (bilinear), centre
//! crop, scale to [0, 1], subtract the mean and divide by the std per channel. Grey images
//! (Fashion-MNIST) are repeated over the three channels.

use image::DynamicImage;
use image::imageops::FilterType;
use serde::{Deserialize, Serialize};

/// How an image becomes a tensor: resize the shorter side, centre-crop, scale to [0, 1],
/// normalise per channel. Grey images are repeated over three channels when asked.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Preprocess {
    /// Target length of the shorter side before cropping.
    #[serde(default = "default_size")]
    pub resize: u32,
    /// Side of the centre crop.
    #[serde(default = "default_size")]
    pub crop: u32,
    /// Per-channel mean, subtracted after scaling to [0, 1].
    #[serde(default = "default_half")]
    pub mean: [f32; 3],
    /// Per-channel standard deviation.
    #[serde(default = "default_half")]
    pub std: [f32; 3],
    /// Repeat grey images over three channels.
    #[serde(default = "default_true")]
    pub grey_to_rgb: bool,
}

fn default_size() -> u32 {
    224
}
fn default_half() -> [f32; 3] {
    [0.5, 0.5, 0.5]
}
fn default_true() -> bool {
    true
}

impl Default for Preprocess {
    fn default() -> Self {
        Preprocess { resize: 224, crop: 224, mean: [0.5; 3], std: [0.5; 3], grey_to_rgb: true }
    }
}

impl Preprocess {
    /// The number of channels [`Preprocess::apply`] produces for an image.
    pub fn channels(&self, img: &DynamicImage) -> usize {
        if img.color().has_color() || self.grey_to_rgb { 3 } else { 1 }
    }

    /// Preprocess one image into channel-major (`[channels, crop, crop]`) values.
    pub fn apply(&self, img: &DynamicImage) -> Vec<f32> {
        self.normalise(&self.resize_crop(img))
    }

    /// The shorter side resized to `resize` (bilinear), then the centre `crop` square; the
    /// image keeps its colour type.
    pub fn resize_crop(&self, img: &DynamicImage) -> DynamicImage {
        let (w, h) = (img.width().max(1), img.height().max(1));
        let scale = self.resize as f64 / w.min(h) as f64;
        let nw = ((w as f64 * scale).round() as u32).max(self.crop);
        let nh = ((h as f64 * scale).round() as u32).max(self.crop);
        img.resize_exact(nw, nh, FilterType::Triangle).crop_imm((nw - self.crop) / 2, (nh - self.crop) / 2, self.crop, self.crop)
    }

    /// Channel-major values of an image already at its final size: scaled to [0, 1], minus
    /// the mean, over the std, per channel.
    pub fn normalise(&self, img: &DynamicImage) -> Vec<f32> {
        let channels = self.channels(img);
        let pixels: Vec<u8> = if channels == 3 { img.to_rgb8().into_raw() } else { img.to_luma8().into_raw() };
        let plane = (img.width() * img.height()) as usize;
        let mut out = vec![0f32; channels * plane];
        for (i, px) in pixels.chunks_exact(channels).enumerate() {
            for (ch, &v) in px.iter().enumerate() {
                out[ch * plane + i] = (v as f32 / 255.0 - self.mean[ch]) / self.std[ch];
            }
        }
        out
    }
}
