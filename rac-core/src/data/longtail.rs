//! Long-tail structure of a training split: per-class counts, shot buckets and the
//! imbalance factor, plus the exponential profile that makes a balanced set long-tailed.
//!
//! Shot buckets follow OLTR and the RAC paper: a class is *many*-shot with more than 100
//! training images, *medium*-shot with 20 to 100 inclusive, *few*-shot with fewer than 20.

use rand::SeedableRng;
use rand::seq::SliceRandom;
use serde::{Deserialize, Serialize};

/// The shot bucket of a class, from its training count.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ShotBucket {
    /// More than 100 training images.
    Many,
    /// 20 to 100 training images, inclusive.
    Medium,
    /// Fewer than 20 training images.
    Few,
}

impl ShotBucket {
    /// All buckets, in reporting order.
    pub const ALL: [ShotBucket; 3] = [ShotBucket::Many, ShotBucket::Medium, ShotBucket::Few];

    /// The bucket of a class with `train_count` training images.
    pub fn of(train_count: usize) -> Self {
        if train_count > 100 {
            ShotBucket::Many
        } else if train_count >= 20 {
            ShotBucket::Medium
        } else {
            ShotBucket::Few
        }
    }

    /// The bucket's name as used in tables: `many`, `medium`, `few`.
    pub fn name(self) -> &'static str {
        match self {
            ShotBucket::Many => "many",
            ShotBucket::Medium => "medium",
            ShotBucket::Few => "few",
        }
    }
}

impl std::fmt::Display for ShotBucket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Per-class counts of the exponential long-tail profile of Cao et al. (LDAM) and OLTR:
/// `n_i = floor(max_per_class * imbalance_factor^(-i / (C - 1)))` for class rank `i`.
pub fn exponential_profile(num_classes: usize, max_per_class: usize, imbalance_factor: f64) -> Vec<usize> {
    if num_classes <= 1 {
        return vec![max_per_class; num_classes];
    }
    (0..num_classes)
        .map(|i| {
            let frac = i as f64 / (num_classes - 1) as f64;
            // The epsilon keeps exact products such as 5000 * 500^-1 = 10 from flooring to 9.
            ((max_per_class as f64) * imbalance_factor.powf(-frac) + 1e-9).floor() as usize
        })
        .collect()
}

/// Items per class of `labels` (class ids below `num_classes`; others are not counted).
pub fn class_counts(labels: &[usize], num_classes: usize) -> Vec<usize> {
    let mut counts = vec![0; num_classes];
    for &l in labels {
        if let Some(c) = counts.get_mut(l) {
            *c += 1;
        }
    }
    counts
}

/// Choose, with a seeded RNG, `counts[c]` items of each class `c` from `labels`.
/// Returns the chosen indices into `labels`, in ascending order.
pub fn subsample_per_class(labels: &[usize], counts: &[usize], seed: u64) -> Vec<usize> {
    let mut by_class: Vec<Vec<usize>> = vec![Vec::new(); counts.len()];
    for (i, &l) in labels.iter().enumerate() {
        if l < counts.len() {
            by_class[l].push(i);
        }
    }
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    // Never more than there are labels: a huge requested count must not size the buffer.
    let mut chosen = Vec::with_capacity(labels.len());
    for (class_items, &n) in by_class.iter_mut().zip(counts) {
        class_items.shuffle(&mut rng);
        chosen.extend(class_items.iter().take(n).copied());
    }
    chosen.sort_unstable();
    chosen
}

/// Long-tail statistics of a data set, computed from its training split.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LongTailStats {
    /// The data set's name.
    pub name: String,
    /// Number of classes.
    pub classes: usize,
    /// Number of training images.
    pub train_images: usize,
    /// Number of test images.
    pub test_images: usize,
    /// Number of validation images, when the data set has a validation split.
    pub val_images: Option<usize>,
    /// Images of the external split (never trained on), per class, when the data set has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_per_class: Option<Vec<usize>>,
    /// The largest training count of a class.
    pub max_per_class: usize,
    /// The smallest training count of a class.
    pub min_per_class: usize,
    /// `max_per_class / min_per_class`.
    pub imbalance_factor: f64,
    /// Number of many-shot classes.
    pub many: usize,
    /// Number of medium-shot classes.
    pub medium: usize,
    /// Number of few-shot classes.
    pub few: usize,
    /// Training images per class, indexed by class id.
    pub per_class: Vec<usize>,
    /// The bucket of each class.
    pub buckets: Vec<ShotBucket>,
    /// The text of each class.
    pub class_texts: Vec<String>,
}

impl LongTailStats {
    /// Compute the statistics from per-class training counts.
    pub fn from_counts(name: &str, per_class: Vec<usize>, class_texts: Vec<String>, test_images: usize, val_images: Option<usize>) -> Self {
        let buckets: Vec<ShotBucket> = per_class.iter().map(|&n| ShotBucket::of(n)).collect();
        let count = |b: ShotBucket| buckets.iter().filter(|&&x| x == b).count();
        let max = per_class.iter().copied().max().unwrap_or(0);
        let min = per_class.iter().copied().min().unwrap_or(0);
        LongTailStats {
            name: name.to_string(),
            classes: per_class.len(),
            train_images: per_class.iter().sum(),
            test_images,
            val_images,
            external_per_class: None,
            max_per_class: max,
            min_per_class: min,
            imbalance_factor: if min == 0 { f64::INFINITY } else { max as f64 / min as f64 },
            many: count(ShotBucket::Many),
            medium: count(ShotBucket::Medium),
            few: count(ShotBucket::Few),
            per_class,
            buckets,
            class_texts,
        }
    }

    /// A human-readable report: the summary, then one line per class.
    pub fn report(&self) -> String {
        use std::fmt::Write;
        let mut s = String::new();
        let _ = writeln!(s, "data set          {}", self.name);
        let _ = writeln!(s, "classes           {}", self.classes);
        let _ = writeln!(s, "train images      {}", self.train_images);
        if let Some(v) = self.val_images {
            let _ = writeln!(s, "val images        {v}");
        }
        if let Some(x) = &self.external_per_class {
            let _ = writeln!(s, "external images   {}", x.iter().sum::<usize>());
        }
        let _ = writeln!(s, "test images       {}", self.test_images);
        let _ = writeln!(s, "max per class     {}", self.max_per_class);
        let _ = writeln!(s, "min per class     {}", self.min_per_class);
        let _ = writeln!(s, "imbalance factor  {:.1}", self.imbalance_factor);
        let _ = writeln!(s, "many/medium/few   {}/{}/{}", self.many, self.medium, self.few);
        let external = |c: usize| self.external_per_class.as_ref().map(|x| format!("{:>8}  ", x[c])).unwrap_or_default();
        let head = if self.external_per_class.is_some() { format!("{:>8}  ", "external") } else { String::new() };
        let _ = writeln!(s, "\n{:>5}  {:>7}  {head}{:<6}  text", "class", "train", "bucket");
        for (c, (&n, b)) in self.per_class.iter().zip(&self.buckets).enumerate() {
            let text = self.class_texts.get(c).map(String::as_str).unwrap_or("");
            let _ = writeln!(s, "{c:>5}  {n:>7}  {}{:<6}  {text}", external(c), b.name());
        }
        s
    }
}
