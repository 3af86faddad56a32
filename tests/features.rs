//! The feature store on a small data set cut from the real Fashion-MNIST-LT, encoded with the
//! real EfficientNet-Lite0 at a small input size: a second call is a hit, a damaged entry is
//! re-encoded with a warning, an interrupted write is never trusted; and the exact 1-NN
//! accuracy, from the library and from `rac encode knn`.

use std::path::Path;

use candle_core::{Device, Tensor};
use rac_core::data::{DataOverrides, Dataset, SplitKind};
use rac_core::encoders::{ImageEncoder, ImageEncoderSpec};
use rac_core::features::{CacheOutcome, EncodeOptions, EncodeProgress, FeatureKey, FeatureStore, Lookup};
use rac_core::knn::one_nn_accuracy;
use rac_tests::{cache, rac, tiny_fashion_set};

/// EfficientNet-Lite0 at 64 px: the real weights, at a size a debug build encodes quickly.
fn encoder() -> Box<dyn ImageEncoder> {
    ImageEncoderSpec::EfficientnetLite0 { weights: None, input_size: Some(64) }.load(&cache(), &Device::Cpu).unwrap()
}

fn tiny(dir: &Path) -> Dataset {
    let manifest = tiny_fashion_set(dir, 2, 1);
    Dataset::load(&manifest, &DataOverrides::default(), &cache()).unwrap()
}

#[derive(Default)]
struct Recorder {
    warnings: Vec<String>,
    total: usize,
    last: usize,
}

impl EncodeProgress for Recorder {
    fn start(&mut self, total: usize, _what: &str) {
        self.total = total;
    }
    fn advance(&mut self, done: usize) {
        assert!(done > self.last, "progress moves forward");
        self.last = done;
    }
    fn warn(&mut self, message: &str) {
        self.warnings.push(message.to_string());
    }
}

fn rows(t: &Tensor) -> Vec<Vec<f32>> {
    t.to_vec2::<f32>().unwrap()
}

#[test]
fn a_second_call_is_a_cache_hit_with_the_same_features() {
    let data = tempfile::tempdir().unwrap();
    let store_dir = tempfile::tempdir().unwrap();
    let (ds, enc) = (tiny(data.path()), encoder());
    let store = FeatureStore::new(store_dir.path());
    let opts = EncodeOptions { batch_size: 8 };

    let mut rec = Recorder::default();
    let (first, outcome) = store.get_or_encode(&ds, SplitKind::Train, enc.as_ref(), &opts, &mut rec).unwrap();
    assert_eq!(outcome, CacheOutcome::Computed);
    assert_eq!((rec.total, rec.last), (20, 20));
    assert_eq!(first.vectors.dims(), [20, 1280]);
    assert_eq!(first.labels, ds.train.labels);
    assert_eq!(first.ids[0], ds.train.item_id(0));
    assert_eq!(first.meta.key.preprocess.crop, 64);
    assert!(first.meta.images_per_second > 0.0);

    let mut rec = Recorder::default();
    let (second, outcome) = store.get_or_encode(&ds, SplitKind::Train, enc.as_ref(), &opts, &mut rec).unwrap();
    assert_eq!(outcome, CacheOutcome::Hit);
    assert_eq!(rec.total, 0, "a hit encodes nothing");
    assert_eq!(rows(&first.vectors), rows(&second.vectors));
    assert_eq!((first.ids, first.labels), (second.ids, second.labels));

    // The stored rows are the encoder's features of those images, in split order.
    let imgs: Vec<_> = [0, 13].iter().map(|&i| ds.train.image(i).unwrap()).collect();
    let direct = enc.encode_with(&imgs, &second.meta.key.preprocess).unwrap();
    let stored = Tensor::cat(&[second.vectors.narrow(0, 0, 1).unwrap(), second.vectors.narrow(0, 13, 1).unwrap()], 0).unwrap();
    let diff = (direct - stored).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap();
    assert!(diff < 1e-4, "{diff}");
}

#[test]
fn keys_differ_by_split_encoder_and_preprocessing() {
    let data = tempfile::tempdir().unwrap();
    let ds = tiny(data.path());
    let enc = encoder();
    let train = FeatureKey::new(enc.as_ref(), &ds, SplitKind::Train);
    let test = FeatureKey::new(enc.as_ref(), &ds, SplitKind::Test);
    assert_ne!(train.hash(), test.hash());
    let big = ImageEncoderSpec::EfficientnetLite0 { weights: None, input_size: Some(96) }.load(&cache(), &Device::Cpu).unwrap();
    let other = FeatureKey::new(big.as_ref(), &ds, SplitKind::Train);
    assert_ne!(train.encoder_fingerprint, other.encoder_fingerprint);
    assert_ne!(train.hash(), other.hash());
    assert_eq!(train.manifest_fingerprint, ds.manifest.fingerprint());
    // The data set's resize/crop ratio carries over to the encoder's input size.
    assert_eq!((train.preprocess.resize, train.preprocess.crop), (64, 64));
    assert_eq!(train.preprocess.mean, enc.preprocess().mean);
    assert_eq!(train, FeatureKey::new(encoder().as_ref(), &ds, SplitKind::Train), "keys are stable");
}

#[test]
fn a_damaged_entry_is_re_encoded_with_a_warning() {
    let data = tempfile::tempdir().unwrap();
    let store_dir = tempfile::tempdir().unwrap();
    let (ds, enc) = (tiny(data.path()), encoder());
    let store = FeatureStore::new(store_dir.path());
    let opts = EncodeOptions { batch_size: 16 };
    let (good, _) = store.get_or_encode(&ds, SplitKind::Test, enc.as_ref(), &opts, &mut ()).unwrap();
    let key = FeatureKey::new(enc.as_ref(), &ds, SplitKind::Test);
    let file = store.entry_dir(&key).join("features.safetensors");
    let bytes = std::fs::read(&file).unwrap();

    // Truncated: the length check catches it.
    std::fs::write(&file, &bytes[..bytes.len() / 2]).unwrap();
    assert!(matches!(store.lookup(&key).unwrap(), Lookup::Corrupt(r) if r.contains("truncated")));
    let mut rec = Recorder::default();
    let (again, outcome) = store.get_or_encode(&ds, SplitKind::Test, enc.as_ref(), &opts, &mut rec).unwrap();
    assert!(matches!(&outcome, CacheOutcome::Recomputed { reason } if reason.contains("bytes")), "{outcome:?}");
    assert_eq!(rec.warnings.len(), 1);
    assert!(rec.warnings[0].contains("damaged") && rec.warnings[0].contains("features.safetensors"), "{:?}", rec.warnings);
    assert_eq!(rows(&again.vectors), rows(&good.vectors));
    assert!(matches!(store.lookup(&key).unwrap(), Lookup::Hit(_)));

    // Same length, one byte flipped inside the values: the checksum catches it.
    let mut flipped = std::fs::read(&file).unwrap();
    let at = flipped.len() - 100;
    flipped[at] ^= 0x40;
    std::fs::write(&file, &flipped).unwrap();
    let (_, outcome) = store.get_or_encode(&ds, SplitKind::Test, enc.as_ref(), &opts, &mut ()).unwrap();
    assert!(matches!(&outcome, CacheOutcome::Recomputed { reason } if reason.contains("sha256")), "{outcome:?}");

    // ids.txt edited, meta.json gone: both are caught too.
    let ids = store.entry_dir(&key).join("ids.txt");
    std::fs::write(&ids, std::fs::read_to_string(&ids).unwrap().replacen('0', "1", 1)).unwrap();
    assert!(matches!(store.lookup(&key).unwrap(), Lookup::Corrupt(r) if r.contains("ids.txt")));
    std::fs::remove_file(store.entry_dir(&key).join("meta.json")).unwrap();
    assert!(matches!(store.lookup(&key).unwrap(), Lookup::Corrupt(r) if r.contains("meta.json")));
    let (_, outcome) = store.get_or_encode(&ds, SplitKind::Test, enc.as_ref(), &opts, &mut ()).unwrap();
    assert!(matches!(outcome, CacheOutcome::Recomputed { .. }));
    assert!(matches!(store.lookup(&key).unwrap(), Lookup::Hit(_)));
}

#[test]
fn an_interrupted_write_leaves_nothing_a_later_call_trusts() {
    let data = tempfile::tempdir().unwrap();
    let store_dir = tempfile::tempdir().unwrap();
    let (ds, enc) = (tiny(data.path()), encoder());
    let store = FeatureStore::new(store_dir.path());
    let key = FeatureKey::new(enc.as_ref(), &ds, SplitKind::Test);
    // What a killed writer leaves: a half-written temporary folder beside the entry.
    let dir = store.entry_dir(&key);
    let tmp = dir.with_file_name(format!(".{}.12345.tmp", dir.file_name().unwrap().to_string_lossy()));
    std::fs::create_dir_all(&tmp).unwrap();
    std::fs::write(tmp.join("features.safetensors"), b"half").unwrap();
    assert!(matches!(store.lookup(&key).unwrap(), Lookup::Absent));
    let (_, outcome) = store.get_or_encode(&ds, SplitKind::Test, enc.as_ref(), &EncodeOptions::default(), &mut ()).unwrap();
    assert_eq!(outcome, CacheOutcome::Computed);
    // The writer's own temporary folder is gone after the rename.
    let leftovers: Vec<_> = std::fs::read_dir(store.root())
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(&format!(".{}.tmp", std::process::id())))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn one_nn_accuracy_counts_per_class_and_per_bucket() {
    let d = Device::Cpu;
    // References: class 0 along x, class 1 along y, class 2 along z (and -x for a wrong one).
    let refs = Tensor::new(&[[1f32, 0., 0.], [0., 1., 0.], [0., 0., 1.], [-1., 0.1, 0.]], &d).unwrap();
    let ref_labels = [0, 1, 2, 2];
    let queries = Tensor::new(&[[2f32, 0.1, 0.], [0.1, 3., 0.], [0., 0.2, 5.], [-3., 0., 0.], [0.9, 0., 0.1]], &d).unwrap();
    let query_labels = [0, 1, 2, 0, 2];
    // Train counts put class 0 in "many", 1 in "medium", 2 in "few".
    let r = one_nn_accuracy(&queries, &query_labels, &refs, &ref_labels, &[500, 50, 5]).unwrap();
    assert_eq!((r.queries, r.references), (5, 4));
    // In percent, as every accuracy of the project.
    assert!((r.top1 - 60.0).abs() < 1e-9);
    assert_eq!(r.per_class, [50.0, 100.0, 50.0]);
    assert!((r.balanced - 200.0 / 3.0).abs() < 1e-9);
    assert_eq!((r.many, r.medium, r.few), (Some(50.0), Some(100.0), Some(50.0)));
    // A query label outside the classes is an error, not a panic.
    let bad = one_nn_accuracy(&queries, &[0, 1, 2, 0, 7], &refs, &ref_labels, &[500, 50, 5]).unwrap_err().to_string();
    assert!(bad.contains("label 7 is out of range"), "{bad}");
    // Cosine ignores the scale of a vector.
    let scaled = (queries * 7.0).unwrap();
    assert_eq!(one_nn_accuracy(&scaled, &query_labels, &refs, &ref_labels, &[500, 50, 5]).unwrap().per_class, r.per_class);
}

#[test]
fn rac_encode_twice_is_a_hit_and_knn_reads_the_cached_features() {
    let data = tempfile::tempdir().unwrap();
    let store = tempfile::tempdir().unwrap();
    let manifest = tiny_fashion_set(data.path(), 2, 1);
    let m = manifest.to_str().unwrap();
    let s = store.path().to_str().unwrap();
    let args = ["encode", m, "--input-size", "64", "--store", s, "--json"];
    let run = |args: &[&str]| {
        let out = rac(args, &[]);
        assert!(out.status.success(), "rac {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()
    };
    let first = run(&args);
    let outcomes = |v: &serde_json::Value| -> Vec<String> {
        v["splits"].as_array().unwrap().iter().map(|s| s["outcome"].as_str().unwrap().to_string()).collect()
    };
    assert_eq!(outcomes(&first), ["encoded", "encoded"]);
    assert_eq!(first["splits"][0]["images"], 20);
    assert_eq!(first["splits"][1]["images"], 10);
    assert_eq!(first["input_size"], 64);
    let second = run(&args);
    assert_eq!(outcomes(&second), ["cache hit", "cache hit"]);

    let knn = run(&["encode", "knn", m, "--input-size", "64", "--store", s, "--json"]);
    let report = &knn["report"];
    assert_eq!((report["queries"].as_u64(), report["references"].as_u64()), (Some(10), Some(20)));
    let top1 = report["top1"].as_f64().unwrap();
    eprintln!("tiny set 1-NN top-1: {top1}");
    // Two references per class: chance is 10 %; ImageNet features do far better.
    assert!(top1 >= 0.4, "{top1}");

    // Bad arguments are refused with the reason.
    let out = rac(&["encode", m, "--encoder", "vit", "--store", s], &[]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("needs a folder"));
}
