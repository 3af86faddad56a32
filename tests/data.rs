//! Data manifests, long-tail splits and statistics, on the real packaged Fashion-MNIST and
//! the real Places365-LT split lists.

use std::io::Read;

use rac_core::data::longtail::{ShotBucket, exponential_profile};
use rac_core::data::{DataOverrides, Dataset};
use rac_tests::{asset, cache, manifest, places_split_dir, rac_ok};

/// The exact per-class training counts of Fashion-MNIST-LT at IF = 500.
const FMNIST_LT_COUNTS: [usize; 10] = [5000, 2506, 1256, 629, 315, 158, 79, 39, 19, 10];

fn fmnist_lt() -> Dataset {
    Dataset::load(&manifest("fashion-mnist-lt.toml"), &DataOverrides::default(), &cache()).expect("Fashion-MNIST-LT loads")
}

#[test]
fn fashion_mnist_lt_has_the_documented_long_tail() {
    let ds = fmnist_lt();
    let s = ds.stats();
    assert_eq!(s.classes, 10);
    assert_eq!(s.per_class, FMNIST_LT_COUNTS);
    assert_eq!(s.train_images, 10_011);
    assert_eq!(s.test_images, 10_000);
    assert_eq!((s.max_per_class, s.min_per_class), (5000, 10));
    assert_eq!((s.many, s.medium, s.few), (6, 2, 2));
    assert!((s.imbalance_factor - 500.0).abs() < 1e-9);
    assert_eq!(s.class_texts[0], "T-shirt/top");
    assert_eq!(s.class_texts[9], "Ankle boot");
    // The test split stays balanced and whole.
    let mut test_counts = [0usize; 10];
    for &l in &ds.test.labels {
        test_counts[l] += 1;
    }
    assert_eq!(test_counts, [1000; 10]);
}

#[test]
fn the_quick_manifest_is_a_short_tail_with_a_balanced_test_subset() {
    let ds = Dataset::load(&manifest("fashion-mnist-lt-quick.toml"), &DataOverrides::default(), &cache()).expect("the quick manifest loads");
    let s = ds.stats();
    assert_eq!(s.per_class, exponential_profile(10, 300, 30.0));
    assert_eq!(s.per_class, [300, 205, 140, 96, 66, 45, 31, 21, 14, 10]);
    assert_eq!((s.many, s.medium, s.few), (3, 5, 2), "every shot bucket exists");
    assert_eq!(s.test_images, 500);
    let mut test_counts = [0usize; 10];
    for &l in &ds.test.labels {
        test_counts[l] += 1;
    }
    assert_eq!(test_counts, [50; 10]);
    // The subset is drawn from the whole test split (seeded), not its first 500 images.
    let full = fmnist_lt();
    let ids = |split: &rac_core::data::Split| (0..split.len()).map(|i| split.item_id(i)).collect::<Vec<_>>();
    let (quick, all) = (ids(&ds.test), ids(&full.test));
    assert!(quick.iter().all(|id| all.contains(id)));
    assert_ne!(quick, all[..500].to_vec());
    // A subset no smaller than a class keeps the whole split, in its order.
    let mut m = full.manifest.clone();
    m.test_subset = Some(rac_core::data::manifest::TestSubsetSpec { per_class: 1000, seed: 3 });
    let whole = Dataset::from_manifest(m, &full.manifest_path, &DataOverrides::default(), &cache()).unwrap();
    assert_eq!(ids(&whole.test), all);
    // An empty subset is a named error at load.
    let path = manifest("fashion-mnist-lt-quick.toml");
    let text = std::fs::read_to_string(&path).unwrap().replace("per_class = 50", "per_class = 0");
    let err = rac_core::data::DataManifest::parse(&path, &text).unwrap_err().to_string();
    assert!(err.contains("test_subset.per_class") && err.contains("at least 1"), "{err}");
}

#[test]
fn the_exponential_profile_is_the_ldam_one() {
    assert_eq!(exponential_profile(10, 5000, 500.0), FMNIST_LT_COUNTS);
    assert_eq!(exponential_profile(10, 5000, 1.0), [5000; 10]);
    // CIFAR-10-LT at IF = 100, as in LDAM's get_img_num_per_cls.
    assert_eq!(exponential_profile(10, 5000, 100.0), [5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50]);
}

#[test]
fn the_long_tail_choice_is_seeded() {
    let a = fmnist_lt();
    let b = fmnist_lt();
    let ids = |d: &Dataset| (0..d.train.len()).map(|i| d.train.item_id(i)).collect::<Vec<_>>();
    assert_eq!(ids(&a), ids(&b), "same seed, same images");

    let mut m = a.manifest.clone();
    m.long_tail.as_mut().unwrap().seed = 1;
    let c = Dataset::from_manifest(m, &a.manifest_path, &DataOverrides::default(), &cache()).unwrap();
    assert_eq!(c.stats().per_class, FMNIST_LT_COUNTS, "the seed changes which images, not how many");
    assert_ne!(ids(&a), ids(&c));
    // Every kept item has the label its IDX index says.
    let labels = read_gz(&asset("fashion-mnist").join("train-labels-idx1-ubyte.gz"));
    for i in 0..a.train.len() {
        assert_eq!(a.train.labels[i], labels[8 + a.train.idx_index(i).unwrap()] as usize);
    }
}

fn read_gz(path: &std::path::Path) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(std::fs::File::open(path).unwrap()).read_to_end(&mut out).unwrap();
    out
}

#[test]
fn sampled_images_decode_to_the_idx_pixels() {
    let ds = fmnist_lt();
    // Independent reading of the IDX bytes: 16-byte header, then 28x28 bytes per image.
    let train_raw = read_gz(&asset("fashion-mnist").join("train-images-idx3-ubyte.gz"));
    let test_raw = read_gz(&asset("fashion-mnist").join("t10k-images-idx3-ubyte.gz"));
    assert_eq!(&train_raw[..4], &[0, 0, 8, 3]);
    let pixel_sum = |raw: &[u8], idx: usize| raw[16 + idx * 784..16 + (idx + 1) * 784].iter().map(|&v| v as u64).sum::<u64>();

    for i in [0, 1, 4242, ds.train.len() - 1] {
        let img = ds.train.image(i).unwrap();
        assert_eq!((img.width(), img.height()), (28, 28));
        let sum: u64 = img.to_luma8().pixels().map(|p| p[0] as u64).sum();
        assert_eq!(sum, pixel_sum(&train_raw, ds.train.idx_index(i).unwrap()), "train item {i}");
        assert!(sum > 0);
    }
    for i in [0, 9999] {
        let img = ds.test.image(i).unwrap();
        let sum: u64 = img.to_luma8().pixels().map(|p| p[0] as u64).sum();
        assert_eq!(sum, pixel_sum(&test_raw, i), "test item {i}");
    }
    // One pixel exactly, row-major: (row 14, column 10) of test image 0.
    let img = ds.test.image(0).unwrap().to_luma8();
    assert_eq!(img.get_pixel(10, 14)[0], test_raw[16 + 14 * 28 + 10]);
}

#[test]
fn grey_images_preprocess_to_three_equal_channels() {
    let ds = fmnist_lt();
    let img = ds.test.image(0).unwrap();
    let p = &ds.manifest.preprocess;
    let x = p.apply(&img);
    let n = (p.crop * p.crop) as usize;
    assert_eq!(x.len(), 3 * n);
    assert_eq!(&x[..n], &x[n..2 * n]);
    assert!(x.iter().all(|v| (-1.0..=1.0).contains(v)), "mean 0.5 / std 0.5 maps [0, 1] to [-1, 1]");
}

#[test]
fn places365_lt_statistics_from_the_real_split_lists() {
    let overrides = DataOverrides { split_dir: Some(places_split_dir()), image_root: None };
    let ds = Dataset::load(&manifest("places365-lt.toml"), &overrides, &cache()).unwrap();
    let s = ds.stats();
    assert_eq!(s.classes, 365);
    assert_eq!(s.train_images, 62_500);
    assert_eq!(s.test_images, 36_500);
    assert_eq!(s.val_images, Some(7_300));
    assert_eq!((s.max_per_class, s.min_per_class), (4_980, 5));
    assert_eq!((s.many, s.medium, s.few), (131, 163, 71));
    assert_eq!(s.class_texts[0], "airfield");
    assert_eq!(s.buckets.iter().filter(|&&b| b == ShotBucket::Few).count(), 71);
    let apartment = s.class_texts.iter().position(|t| t == "apartment building outdoor");
    assert!(apartment.is_some(), "`apartment_building-outdoor` becomes a readable text");
}

#[test]
fn cli_stats_json_for_places_and_fashion_mnist() {
    let split_dir = places_split_dir();
    let out = rac_ok(&["data", "stats", "data-manifests/places365-lt.toml", "--json", "--split-dir", split_dir.to_str().unwrap()], &[]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    for (k, want) in [
        ("classes", 365),
        ("train_images", 62_500),
        ("test_images", 36_500),
        ("max_per_class", 4_980),
        ("min_per_class", 5),
        ("many", 131),
        ("medium", 163),
        ("few", 71),
    ] {
        assert_eq!(v[k], want, "{k}");
    }
    // The environment variable works as the flag does.
    let out = rac_ok(&["data", "stats", "data-manifests/places365-lt.toml", "--json"], &[("RAC_SPLIT_DIR", split_dir.to_str().unwrap())]);
    assert_eq!(serde_json::from_str::<serde_json::Value>(&out).unwrap()["classes"], 365);

    let out = rac_ok(&["data", "stats", "data-manifests/fashion-mnist-lt.toml"], &[]);
    assert!(out.contains("many/medium/few   6/2/2"), "{out}");
    assert!(out.contains("train images      10011"), "{out}");
}
