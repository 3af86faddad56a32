//! Thinning a labelled split before it goes into an index: the three axes of the paper's
//! Fig 5 (index size, samples per class, number of classes), each a seeded choice of rows.

use rand::SeedableRng;
use rand::seq::SliceRandom;
use serde::{Deserialize, Serialize};

use super::longtail::{class_counts, subsample_per_class};
use crate::error::{Error, Result};

/// Which rows of a source an index keeps. Applied in order: `classes` (a seeded choice of
/// that many classes), `per_class` (that many items of each kept class), then `fraction`
/// (of what is left). The defaults keep everything.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Thinning {
    /// Keep this fraction of the items, in (0, 1] (Fig 5a, index size).
    #[serde(default = "default_fraction")]
    pub fraction: f64,
    /// Keep exactly this many items of every kept class; 0 keeps them all (Fig 5b).
    #[serde(default)]
    pub per_class: usize,
    /// Keep the items of this many classes, chosen at random; 0 keeps every class (Fig 5c).
    #[serde(default)]
    pub classes: usize,
    /// The seed of every choice.
    #[serde(default)]
    pub seed: u64,
}

fn default_fraction() -> f64 {
    1.0
}

impl Default for Thinning {
    fn default() -> Self {
        Thinning { fraction: 1.0, per_class: 0, classes: 0, seed: 0 }
    }
}

/// The class stream is the seed XOR this, so that the classes kept do not move with the
/// rows chosen inside them.
const CLASS_STREAM: u64 = 0x0c1a_55e5;

impl Thinning {
    /// The checks that need no data: `fraction` in (0, 1]. Errors are
    /// [`Error::Setting`]s naming the field.
    pub fn validate(&self) -> Result<()> {
        if !(self.fraction > 0.0 && self.fraction <= 1.0) {
            return Err(Error::Setting { field: "fraction".into(), message: format!("must lie in (0, 1], found {}", self.fraction) });
        }
        Ok(())
    }

    /// The rows of a split with these `labels` that are kept, in split order. More classes
    /// or more items per class than the split `source` has are [`Error::Setting`]s that
    /// name the field, the class and its count.
    pub fn rows(&self, labels: &[usize], num_classes: usize, source: &str) -> Result<Vec<usize>> {
        self.validate()?;
        let counts = class_counts(labels, num_classes);
        let present: Vec<usize> = (0..num_classes).filter(|&c| counts[c] > 0).collect();
        let mut kept_classes = present.clone();
        if self.classes > 0 {
            if self.classes > present.len() {
                return Err(Error::Setting {
                    field: "classes".into(),
                    message: format!("{} classes asked for, but source `{source}` has items of {} classes", self.classes, present.len()),
                });
            }
            kept_classes.shuffle(&mut rand_chacha::ChaCha8Rng::seed_from_u64(self.seed ^ CLASS_STREAM));
            kept_classes.truncate(self.classes);
        }
        let mut quota = vec![0usize; num_classes];
        for &c in &kept_classes {
            quota[c] = counts[c];
        }
        if self.per_class > 0 {
            if let Some(&c) = kept_classes.iter().filter(|&&c| counts[c] < self.per_class).min_by_key(|&&c| counts[c]) {
                return Err(Error::Setting {
                    field: "per_class".into(),
                    message: format!("{} items per class asked for, but class {c} has only {} in source `{source}`", self.per_class, counts[c]),
                });
            }
            kept_classes.iter().for_each(|&c| quota[c] = self.per_class);
        }
        let mut rows = subsample_per_class(labels, &quota, self.seed);
        if self.fraction < 1.0 {
            let n = ((rows.len() as f64 * self.fraction).round() as usize).max(1);
            rows.shuffle(&mut rand_chacha::ChaCha8Rng::seed_from_u64(self.seed));
            rows.truncate(n);
            rows.sort_unstable();
        }
        Ok(rows)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels() -> Vec<usize> {
        // 40 of class 0, 20 of class 1, 10 of class 2, none of class 3.
        (0..70)
            .map(|i| {
                if i < 40 {
                    0
                } else if i < 60 {
                    1
                } else {
                    2
                }
            })
            .collect()
    }

    #[test]
    fn each_axis_keeps_what_it_says() {
        let l = labels();
        let all = Thinning::default().rows(&l, 4, "s").unwrap();
        assert_eq!(all, (0..70).collect::<Vec<_>>());
        let per = Thinning { per_class: 10, ..Default::default() }.rows(&l, 4, "s").unwrap();
        assert_eq!(class_counts(&per.iter().map(|&r| l[r]).collect::<Vec<_>>(), 4), vec![10, 10, 10, 0]);
        let two = Thinning { classes: 2, ..Default::default() }.rows(&l, 4, "s").unwrap();
        let kept = class_counts(&two.iter().map(|&r| l[r]).collect::<Vec<_>>(), 4);
        assert_eq!(kept.iter().filter(|&&n| n > 0).count(), 2);
        assert!(kept.iter().zip(class_counts(&l, 4)).all(|(&k, n)| k == 0 || k == n), "a kept class keeps all its items: {kept:?}");
        let tenth = Thinning { fraction: 0.1, ..Default::default() }.rows(&l, 4, "s").unwrap();
        assert_eq!(tenth.len(), 7);
        assert!(tenth.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(tenth, Thinning { fraction: 0.1, ..Default::default() }.rows(&l, 4, "s").unwrap(), "seeded");
        assert_ne!(tenth, Thinning { fraction: 0.1, seed: 1, ..Default::default() }.rows(&l, 4, "s").unwrap());
    }

    #[test]
    fn asking_for_more_than_the_source_has_names_the_field() {
        let l = labels();
        let e = Thinning { per_class: 11, ..Default::default() }.rows(&l, 4, "external").unwrap_err().to_string();
        assert!(e.contains("per_class") && e.contains("class 2 has only 10") && e.contains("external"), "{e}");
        let e = Thinning { classes: 4, ..Default::default() }.rows(&l, 4, "external").unwrap_err().to_string();
        assert!(e.contains("classes") && e.contains("3 classes"), "{e}");
        for f in [0.0, -0.5, 1.5, f64::NAN] {
            let e = Thinning { fraction: f, ..Default::default() }.validate().unwrap_err().to_string();
            assert!(e.contains("fraction") && e.contains("(0, 1]"), "{e}");
        }
    }
}
