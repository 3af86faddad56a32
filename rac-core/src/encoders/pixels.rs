//! Decoded images → a normalised `[n, 3, s, s]` pixel tensor, in parallel.
//!
//! Every image encoder goes through here, so every one rejects the same bad input with the
//! same clear error: an empty batch, an empty image, or a pixel tensor of the wrong size.

use candle_core::{Device, Tensor};
use image::DynamicImage;
use rayon::prelude::*;

use crate::data::Preprocess;
use crate::error::{Error, Result};

/// Preprocess a batch of images into a `[n, 3, crop, crop]` f32 tensor on `device`.
/// Images are resized and normalised in parallel (rayon); grey images are repeated over
/// the three channels whatever `grey_to_rgb` says, since the encoders take RGB.
pub fn images_to_pixels(images: &[DynamicImage], pre: &Preprocess, device: &Device) -> Result<Tensor> {
    if images.is_empty() {
        return Err(Error::Empty { what: "the batch of images".into(), hint: "give at least one image".into() });
    }
    if let Some((i, img)) = images.iter().enumerate().find(|(_, im)| im.width() == 0 || im.height() == 0) {
        return Err(Error::Empty {
            what: format!("image {i} of the batch ({}x{} pixels)", img.width(), img.height()),
            hint: "drop it or give its pixels".into(),
        });
    }
    let rgb = Preprocess { grey_to_rgb: true, ..pre.clone() };
    let s = pre.crop as usize;
    let per_image: Vec<Vec<f32>> = images.par_iter().map(|img| rgb.apply(img)).collect();
    let mut flat = Vec::with_capacity(images.len() * 3 * s * s);
    for v in per_image {
        flat.extend_from_slice(&v);
    }
    Ok(Tensor::from_vec(flat, (images.len(), 3, s, s), device)?)
}

/// Check that `pixels` is `[n, 3, size, size]` with `n >= 1`; `who` names the encoder.
pub fn check_pixels(pixels: &Tensor, size: usize, who: &str) -> Result<usize> {
    let dims = pixels.dims();
    match dims {
        [0, ..] => Err(Error::Empty { what: format!("{who}: the batch (pixel tensor of shape {dims:?})"), hint: "give at least one image".into() }),
        [n, 3, h, w] if *h == size && *w == size => Ok(*n),
        _ => Err(Error::Shape {
            what: format!("{who}: the pixels"),
            expected: format!("shape [n, 3, {size}, {size}] (preprocess to the encoder's input size)"),
            found: format!("{dims:?}"),
        }),
    }
}
