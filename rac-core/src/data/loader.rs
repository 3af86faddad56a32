//! The image loader that feeds fine-tuning: worker threads decode and augment the images of
//! each mini-batch while the device trains on the previous ones.
//!
//! Batch `b` of an epoch is built by worker `b mod workers`, and every worker sends its
//! batches in order through its own bounded channel (`prefetch` batches deep), so the
//! consumer reads batch `b` from worker `b mod workers` and gets the batches in order without
//! a reordering buffer. Each item's random numbers come from an RNG seeded with (seed, epoch,
//! item), so the batches are the same for any number of workers.
//!
//! A batch carries the augmented images as `u8` RGB planes, once at the base encoder's input
//! size and, when the frozen retrieval encoder E takes another size, once more at E's size:
//! both branches see the same augmented view, and each normalises it on the device.

use std::sync::Arc;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::thread::JoinHandle;

use image::RgbImage;
use image::imageops::FilterType;
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;

use super::augment::Augment;
use super::{Preprocess, Split};
use crate::error::{Error, Result};

/// How a loader's epoch is cut into batches and how many threads build them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoaderConfig {
    /// Items per batch (the last batch may be smaller).
    pub batch_size: usize,
    /// Worker threads (at least 1).
    pub workers: usize,
    /// Batches each worker may have ready ahead of the consumer.
    pub prefetch: usize,
    /// Seed of the shuffling and of the augmentation.
    pub seed: u64,
    /// Shuffle the items each epoch (training) or keep their order (evaluation).
    pub shuffle: bool,
}

/// How the loader turns an image into model input.
#[derive(Debug, Clone)]
pub enum Transform {
    /// The training augmentation.
    Train(Augment),
    /// The evaluation transform: resize the shorter side, centre crop.
    Eval(Preprocess),
}

impl Transform {
    /// The side of the images it produces.
    pub fn size(&self) -> u32 {
        match self {
            Transform::Train(a) => a.eval_preprocess().crop,
            Transform::Eval(p) => p.crop,
        }
    }

    fn image(&self, img: &image::DynamicImage, rng: &mut ChaCha8Rng) -> RgbImage {
        match self {
            Transform::Train(a) => a.augment_image(img, rng),
            Transform::Eval(p) => p.resize_crop(img).to_rgb8(),
        }
    }
}

/// One batch: the items' positions in the split, their labels, and their pixels.
#[derive(Debug, Clone)]
pub struct ImageBatch {
    /// The batch's number within its epoch.
    pub number: usize,
    /// Positions of the items in the split.
    pub items: Vec<usize>,
    /// Class ids.
    pub labels: Vec<u32>,
    /// `[n, 3, size, size]` RGB values, channel-major per image.
    pub pixels: Vec<u8>,
    /// The side of `pixels`.
    pub size: usize,
    /// The same views at the retrieval encoder's size, when it differs (else empty).
    pub retrieval_pixels: Vec<u8>,
    /// The side of `retrieval_pixels` (equal to `size` when they are shared).
    pub retrieval_size: usize,
}

impl ImageBatch {
    /// The number of items.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Whether the batch is empty.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// The retrieval encoder's pixels (shared with the base's when the sizes agree).
    pub fn retrieval(&self) -> (&[u8], usize) {
        if self.retrieval_pixels.is_empty() { (&self.pixels, self.size) } else { (&self.retrieval_pixels, self.retrieval_size) }
    }
}

/// The order of one epoch's items: shuffled with (seed, epoch) when asked.
pub fn epoch_order(n: usize, seed: u64, epoch: usize, shuffle: bool) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    if shuffle {
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ (epoch as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15));
        order.shuffle(&mut rng);
    }
    order
}

/// The RNG of one item in one epoch.
fn item_rng(seed: u64, epoch: usize, item: usize) -> ChaCha8Rng {
    let mut key = [0u8; 32];
    key[..8].copy_from_slice(&seed.to_le_bytes());
    key[8..16].copy_from_slice(&(epoch as u64).to_le_bytes());
    key[16..24].copy_from_slice(&(item as u64).to_le_bytes());
    key[24..].copy_from_slice(b"rac-aug\0");
    ChaCha8Rng::from_seed(key)
}

/// Channel-major planes of an RGB image.
fn planes(img: &RgbImage, out: &mut Vec<u8>) {
    let raw = img.as_raw();
    for ch in 0..3 {
        out.extend(raw.iter().skip(ch).step_by(3));
    }
}

struct Work {
    split: Arc<Split>,
    order: Arc<Vec<usize>>,
    transform: Arc<Transform>,
    retrieval_size: Option<u32>,
    config: LoaderConfig,
    epoch: usize,
}

impl Work {
    fn batch(&self, number: usize) -> Result<ImageBatch> {
        let start = number * self.config.batch_size;
        let items: Vec<usize> = self.order[start..(start + self.config.batch_size).min(self.order.len())].to_vec();
        let size = self.transform.size() as usize;
        let mut batch = ImageBatch {
            number,
            labels: items.iter().map(|&i| self.split.labels[i] as u32).collect(),
            pixels: Vec::with_capacity(items.len() * 3 * size * size),
            size,
            retrieval_pixels: Vec::new(),
            retrieval_size: self.retrieval_size.map_or(size, |s| s as usize),
            items,
        };
        for &i in &batch.items {
            let img = self.split.image(i)?;
            let mut rng = item_rng(self.config.seed, self.epoch, i);
            let view = self.transform.image(&img, &mut rng);
            planes(&view, &mut batch.pixels);
            if let Some(s) = self.retrieval_size {
                planes(&image::imageops::resize(&view, s, s, FilterType::Triangle), &mut batch.retrieval_pixels);
            }
        }
        Ok(batch)
    }

    fn run(&self, worker: usize, tx: SyncSender<Result<ImageBatch>>) {
        let batches = self.order.len().div_ceil(self.config.batch_size);
        for number in (worker..batches).step_by(self.config.workers) {
            let result = self.batch(number);
            let failed = result.is_err();
            if tx.send(result).is_err() || failed {
                return; // the consumer is gone, or this worker reported its error
            }
        }
    }
}

/// One epoch of batches, built ahead by worker threads; an iterator of `Result<ImageBatch>`.
pub struct EpochLoader {
    receivers: Vec<Receiver<Result<ImageBatch>>>,
    workers: Vec<JoinHandle<()>>,
    next: usize,
    batches: usize,
    failed: bool,
}

impl EpochLoader {
    /// Start the workers for one epoch of `split` (all items, or `items` when given).
    /// `retrieval_size` asks for a second copy of each view at that side.
    pub fn start(
        split: Arc<Split>,
        items: Option<&[usize]>,
        transform: Arc<Transform>,
        retrieval_size: Option<u32>,
        config: LoaderConfig,
        epoch: usize,
    ) -> Result<Self> {
        if config.batch_size == 0 || config.workers == 0 || config.prefetch == 0 {
            return Err(Error::Setting {
                field: "loader".into(),
                message: format!(
                    "the batch size, workers and prefetch must each be at least 1 (got {}, {}, {})",
                    config.batch_size, config.workers, config.prefetch
                ),
            });
        }
        let base: Vec<usize> = match items {
            Some(items) => {
                if let Some(&bad) = items.iter().find(|&&i| i >= split.len()) {
                    return Err(Error::OutOfRange { what: format!("item of the {} split", split.kind.name()), index: bad, len: split.len() });
                }
                items.to_vec()
            }
            None => (0..split.len()).collect(),
        };
        let order: Vec<usize> = epoch_order(base.len(), config.seed, epoch, config.shuffle).into_iter().map(|i| base[i]).collect();
        let retrieval_size = retrieval_size.filter(|&s| s != transform.size());
        let batches = order.len().div_ceil(config.batch_size);
        let work = Arc::new(Work { split, order: Arc::new(order), transform, retrieval_size, config, epoch });
        let (mut receivers, mut workers) = (Vec::new(), Vec::new());
        for w in 0..config.workers.min(batches.max(1)) {
            let (tx, rx) = sync_channel(config.prefetch);
            let work = Arc::clone(&work);
            let handle = std::thread::Builder::new().name(format!("rac-loader-{w}")).spawn(move || work.run(w, tx)).map_err(|e| Error::Setting {
                field: "base_encoder.workers".into(),
                message: format!("could not start image-loader thread {w} ({e}); use fewer workers"),
            })?;
            receivers.push(rx);
            workers.push(handle);
        }
        Ok(EpochLoader { receivers, workers, next: 0, batches, failed: false })
    }

    /// The number of batches in the epoch.
    pub fn batches(&self) -> usize {
        self.batches
    }
}

impl Iterator for EpochLoader {
    type Item = Result<ImageBatch>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.next >= self.batches {
            return None;
        }
        let rx = &self.receivers[self.next % self.receivers.len()];
        let item = rx.recv().unwrap_or_else(|_| Err(Error::Internal("an image-loader thread stopped without a batch".into())));
        self.failed = item.is_err();
        self.next += 1;
        Some(item)
    }
}

impl Drop for EpochLoader {
    fn drop(&mut self) {
        // Dropping the receivers makes the workers' next send fail, so they stop.
        self.receivers.clear();
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}
