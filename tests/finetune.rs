//! Fine-tuning the base branch: the paper's augmentation, the worker-thread loader, and a
//! whole RAC fine-tuning run on the CPU with a small ViT, on images cut from the real
//! Fashion-MNIST-LT (real EfficientNet-Lite0 as E, a real LMDB index queried with the
//! augmented views).

use std::path::Path;
use std::sync::Arc;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarMap;
use image::{DynamicImage, RgbImage};
use rac_core::data::augment::{Op, RAND_AUGMENT_OPS, apply_op};
use rac_core::data::{Augment, AugmentConfig, DataOverrides, Dataset, EpochLoader, LoaderConfig, Preprocess, Split, SplitKind, Transform};
use rac_core::encoders::{VitConfig, VitEncoder, Weights};
use rac_core::experiment::finetune::run_finetune_with;
use rac_core::experiment::{Experiment, Prepared, RunEnv, RunRecord};
use rac_core::train::{Precision, TrainableVit};
use rac_tests::{cache, tiny_fashion_set};
use rand::SeedableRng;

fn fashion_train() -> Split {
    let ds = Dataset::load(&rac_tests::manifest("fashion-mnist-lt.toml"), &DataOverrides::default(), &cache()).unwrap();
    ds.train
}

/// A Fashion-MNIST image as RGB (grey repeated).
fn fashion_rgb(i: usize) -> RgbImage {
    fashion_train().image(i).unwrap().to_rgb8()
}

fn rng(seed: u64) -> rand_chacha::ChaCha8Rng {
    rand_chacha::ChaCha8Rng::seed_from_u64(seed)
}

#[test]
fn every_operation_is_the_identity_at_magnitude_zero() {
    let img = fashion_rgb(3);
    for op in RAND_AUGMENT_OPS {
        if matches!(op, Op::AutoContrast | Op::Equalize | Op::Invert) {
            continue; // no magnitude
        }
        for sign in [1.0, -1.0] {
            assert_eq!(apply_op(op, &img, 0.0, sign), img, "{op:?} at magnitude 0");
        }
    }
}

#[test]
fn operations_match_hand_computed_pixels() {
    let img = fashion_rgb(5);
    let at = |im: &RgbImage, x: u32, y: u32| im.get_pixel(x, y)[0];
    // Invert, and solarize at full magnitude (threshold 0), map v to 255 - v.
    let inv = apply_op(Op::Invert, &img, 0.0, 1.0);
    assert_eq!(apply_op(Op::Solarize, &img, 10.0, 1.0), inv);
    assert_eq!(apply_op(Op::Invert, &inv, 0.0, 1.0), img);
    for (x, y) in [(0, 0), (14, 14), (20, 7)] {
        assert_eq!(at(&inv, x, y), 255 - at(&img, x, y));
        // Posterize at magnitude 10 keeps 4 bits.
        assert_eq!(at(&apply_op(Op::Posterize, &img, 10.0, 1.0), x, y), at(&img, x, y) & 0xF0);
        // Brightness at magnitude 10, downwards: factor 1 - 0.9 = 0.1.
        let dim = (at(&img, x, y) as f64 * 0.1).round() as u8;
        assert_eq!(at(&apply_op(Op::Brightness, &img, 10.0, -1.0), x, y), dim);
        // Solarize-add at magnitude 5 adds 55 below 128.
        let v = at(&img, x, y);
        let expect = if v < 128 { (v as u16 + 55).min(255) as u8 } else { v };
        assert_eq!(at(&apply_op(Op::SolarizeAdd, &img, 5.0, 1.0), x, y), expect);
    }
    // Translate x by 0.45 · 28 = 12.6 px at magnitude 10: output x reads input x + 12.6, and
    // the right edge fills with grey 128.
    let moved = apply_op(Op::TranslateX, &img, 10.0, 1.0);
    assert_eq!(at(&moved, 27, 14), 128);
    let (a, b) = (at(&img, 14, 10) as f64, at(&img, 15, 10) as f64);
    let expect = a + 0.6 * (b - a);
    assert!((at(&moved, 1, 10) as f64 - expect).abs() <= 1.0, "{} vs {expect}", at(&moved, 1, 10));
    // Auto-contrast stretches each channel to 0..255.
    let ac = apply_op(Op::AutoContrast, &apply_op(Op::Brightness, &img, 5.0, -1.0), 0.0, 1.0);
    assert_eq!(ac.pixels().map(|p| p[0]).max(), Some(255));
    assert_eq!(ac.pixels().map(|p| p[0]).min(), Some(0));
}

#[test]
fn augmentation_is_seeded_and_reduces_to_the_eval_transform_when_off() {
    let pre = Preprocess { resize: 32, crop: 32, mean: [0.5; 3], std: [0.5; 3], grey_to_rgb: true };
    let img = DynamicImage::ImageRgb8(fashion_rgb(7));
    let off = Augment::new(AugmentConfig { crop_pct: 1.0, ..AugmentConfig::none() }, pre.clone()).unwrap();
    assert_eq!(off.apply(&img, &mut rng(1)), off.eval_preprocess().apply(&img), "no augmentation: the eval transform");
    let aug = Augment::new(AugmentConfig::default(), pre).unwrap();
    assert_eq!(aug.eval_preprocess().resize, 34, "crop 0.95: 32 / 0.95 rounds to 34");
    assert_eq!(aug.apply(&img, &mut rng(1)), aug.apply(&img, &mut rng(1)), "same seed, same view");
    let views: Vec<Vec<f32>> = (0..8).map(|s| aug.apply(&img, &mut rng(s))).collect();
    assert!(views.iter().skip(1).any(|v| v != &views[0]), "different seeds give different views");
    assert!(views.iter().all(|v| v.len() == 3 * 32 * 32));
}

#[test]
fn bad_augmentation_and_fine_tuning_settings_name_the_field() {
    let msg = Augment::new(AugmentConfig { magnitude: 11.0, ..AugmentConfig::default() }, Preprocess::default()).unwrap_err().to_string();
    assert!(msg.contains("field `augment.magnitude`"), "{msg}");
    let msg = Augment::new(AugmentConfig { scale: [1.2, 0.8], ..AugmentConfig::default() }, Preprocess::default()).unwrap_err().to_string();
    assert!(msg.contains("field `augment.scale`"), "{msg}");
    let parse = |extra: &str| Experiment::parse(Path::new("ft.toml"), &format!("name = \"ft\"\n{extra}")).unwrap_err().to_string();
    // Loaded from a file, the field is named once, in full, after the file.
    let msg = parse("[base_encoder]\nimage = \"vit:some/folder\"\n[base_encoder.augment]\nmagnitude = 11\n");
    assert!(msg.starts_with("ft.toml: field `base_encoder.augment.magnitude`: must be in [0, 10]"), "{msg}");
    assert_eq!(msg.matches("field").count(), 1, "{msg}");
    let msg = parse("[index.arroy]\nn_trees = 0\n");
    assert_eq!(msg, "ft.toml: field `index.arroy.n_trees`: must be at least 1");
    let msg = parse("[base_encoder]\nimage = \"vit:some/folder\"\n[base_encoder.augment]\nmagnitud = 2\n");
    assert!(msg.contains("unknown field `magnitud`"), "{msg}");
    let msg = parse("[base_encoder]\nimage = \"efficientnet-lite0\"\n");
    assert!(msg.contains("base_encoder") && msg.contains("vit:<folder>"), "{msg}");
    let msg = parse("[model]\nmode = \"retrieval\"\n[base_encoder]\nimage = \"vit:some/folder\"\n");
    assert!(msg.contains("`base_encoder`") && msg.contains("model.mode"), "{msg}");
    let msg = parse("[base_encoder]\nimage = \"vit:some/folder\"\nprecision = \"fp8\"\n");
    assert!(msg.contains("fp8"), "{msg}");
    let msg = parse("[base_encoder]\nimage = \"vit:some/folder\"\nworkers = 0\n");
    assert!(msg.contains("base_encoder.workers"), "{msg}");
    let ok = Experiment::parse(Path::new("ft.toml"), "name = \"ft\"\n[base_encoder]\nimage = \"vit:some/folder\"\n").unwrap();
    // A run whose encoder folder is missing stops at once, naming the file, with no record.
    let runs = tempfile::tempdir().unwrap();
    let env = RunEnv { runs_dir: runs.path().to_path_buf(), cache: cache(), ..RunEnv::from_env() };
    let msg = rac_core::experiment::run(&ok, &env).unwrap_err().to_string();
    assert!(msg.contains("some/folder/config.json") && msg.contains("base_encoder.image"), "{msg}");
    assert!(std::fs::read_dir(runs.path()).map_or(true, |mut d| d.next().is_none()), "no record left behind");
    let b = ok.base_encoder.as_ref().unwrap();
    assert_eq!((b.augment.layers, b.augment.magnitude, b.augment.magnitude_std, b.augment.scale, b.augment.hflip), (3, 1.0, 0.5, [0.75, 1.33], 0.5));
    assert_eq!(Experiment::named("x").config_hash(), Experiment::parse(Path::new("x.toml"), "name = \"x\"\n").unwrap().config_hash());
}

fn collect(
    split: &Arc<Split>,
    items: Option<&[usize]>,
    transform: &Arc<Transform>,
    workers: usize,
    epoch: usize,
    rsize: Option<u32>,
) -> Vec<rac_core::data::ImageBatch> {
    let config = LoaderConfig { batch_size: 7, workers, prefetch: 2, seed: 42, shuffle: true };
    EpochLoader::start(split.clone(), items, transform.clone(), rsize, config, epoch).unwrap().map(|b| b.unwrap()).collect()
}

#[test]
fn the_loader_gives_the_same_ordered_batches_for_any_number_of_workers() {
    let full = fashion_train();
    let items: Vec<usize> = (0..40).map(|i| i * 97).collect();
    let split = Arc::new(full);
    let pre = Preprocess { resize: 32, crop: 32, mean: [0.5; 3], std: [0.5; 3], grey_to_rgb: true };
    let transform = Arc::new(Transform::Train(Augment::new(AugmentConfig::default(), pre.clone()).unwrap()));
    let one = collect(&split, Some(&items), &transform, 1, 0, Some(48));
    let three = collect(&split, Some(&items), &transform, 3, 0, Some(48));
    assert_eq!(one.len(), 6, "40 items in batches of 7");
    for (a, b) in one.iter().zip(&three) {
        assert_eq!((a.number, &a.items, &a.labels), (b.number, &b.items, &b.labels));
        assert_eq!(a.pixels, b.pixels, "batch {}: the views do not depend on the workers", a.number);
        assert_eq!(a.retrieval_pixels, b.retrieval_pixels);
        assert_eq!(a.pixels.len(), a.len() * 3 * 32 * 32);
        assert_eq!(a.retrieval().1, 48);
        assert_eq!(a.retrieval_pixels.len(), a.len() * 3 * 48 * 48);
        assert_eq!(a.labels, a.items.iter().map(|&i| split.labels[i] as u32).collect::<Vec<_>>());
    }
    let mut seen: Vec<usize> = one.iter().flat_map(|b| b.items.clone()).collect();
    assert_ne!(seen, items, "training batches are shuffled");
    seen.sort_unstable();
    assert_eq!(seen, items, "an epoch covers every item once");
    let next = collect(&split, Some(&items), &transform, 2, 1, None);
    assert_ne!(next[0].items, one[0].items, "each epoch has its own order");
    assert!(next[0].retrieval_pixels.is_empty() && next[0].retrieval().1 == 32);

    // The eval transform keeps the order and equals the preprocessing of each image.
    let eval = Arc::new(Transform::Eval(pre.clone()));
    let config = LoaderConfig { batch_size: 7, workers: 2, prefetch: 1, seed: 0, shuffle: false };
    let batches: Vec<_> = EpochLoader::start(split.clone(), Some(&items), eval, None, config, 0).unwrap().map(|b| b.unwrap()).collect();
    assert_eq!(batches.iter().flat_map(|b| b.items.clone()).collect::<Vec<_>>(), items);
    let first = pre.apply(&split.image(items[0]).unwrap());
    let from_loader: Vec<f32> = (0..3 * 32 * 32).map(|j| (batches[0].pixels[j] as f32 / 255.0 - 0.5) / 0.5).collect();
    assert_eq!(from_loader, first);

    // An item out of range is refused before any thread starts.
    let err = EpochLoader::start(split, Some(&[usize::MAX]), transform, None, config, 0).err().unwrap().to_string();
    assert!(err.contains("out of range"), "{err}");
}

/// A 2-layer, 32-wide ViT on 32x32 images with 8x8 patches, random weights of that shape,
/// written as a Hugging Face folder.
fn small_vit_folder(dir: &Path) -> VitConfig {
    let config = VitConfig {
        hidden_size: 32,
        num_hidden_layers: 2,
        num_attention_heads: 4,
        intermediate_size: 64,
        image_size: 32,
        patch_size: 8,
        ..VitConfig::base_patch16_224()
    };
    std::fs::write(dir.join("config.json"), serde_json::to_string(&config).unwrap()).unwrap();
    let varmap = VarMap::new();
    let pre = Preprocess { resize: 32, crop: 32, mean: [0.5; 3], std: [0.5; 3], grey_to_rgb: true };
    VitEncoder::trainable(&Weights::synthetic(3, &Device::Cpu), config.clone(), pre, &varmap, DType::F32).unwrap();
    varmap.save(dir.join("model.safetensors")).unwrap();
    config
}

/// A RAC fine-tuning experiment on the tiny Fashion-MNIST set (6 + 3 images a class) with a
/// small ViT; the folders live as long as the returned guards.
fn small_fine_tuning(name: &str, epochs: usize, workers: usize) -> (tempfile::TempDir, tempfile::TempDir, Experiment) {
    let data = tempfile::tempdir().unwrap();
    let manifest = tiny_fashion_set(data.path(), 6, 3);
    let vit_dir = tempfile::tempdir().unwrap();
    small_vit_folder(vit_dir.path());
    let text = format!(
        "name = \"{name}\"\n[data]\nmanifest = \"{}\"\n[index]\nbackend = \"exact\"\n[retrieval]\nk = 3\nk_max = 8\ntext_encoder = \"bow-random\"\n\
         [optim]\nlr = 0.001\n[train]\nepochs = {epochs}\nbatch_size = 16\nwarmup_epochs = 1\n\
         [base_encoder]\nimage = \"vit:{}\"\nworkers = {workers}\n",
        manifest.display(),
        vit_dir.path().display()
    );
    let exp = Experiment::parse(Path::new(&format!("{name}.toml")), &text).unwrap();
    (data, vit_dir, exp)
}

/// heed opens an LMDB folder once per process: the runs below share the small set's index.
static SHARED_INDEX: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[test]
fn fine_tuning_a_small_vit_trains_rac_end_to_end_and_is_reproducible() {
    let _one_at_a_time = SHARED_INDEX.lock().unwrap_or_else(|e| e.into_inner());
    let (_data, _vit_dir, exp) = small_fine_tuning("ft", 2, 3);
    let runs = tempfile::tempdir().unwrap();
    let env = RunEnv { runs_dir: runs.path().to_path_buf(), cache: cache(), ..RunEnv::from_env() };
    let mut prep = Prepared::new(&exp, &env).unwrap();
    let cfg = exp.base_encoder.as_ref().unwrap();
    let vit = TrainableVit::load(cfg, &Device::Cpu).unwrap();
    let before: Vec<f32> = vit.vars()[0].1.as_tensor().flatten_all().unwrap().to_vec1().unwrap();
    let a = run_finetune_with(&exp, &mut prep, &env, &vit).unwrap();
    let after: Vec<f32> = vit.vars()[0].1.as_tensor().flatten_all().unwrap().to_vec1().unwrap();
    assert_ne!(before, after, "the encoder's own weights were fine-tuned");
    assert_eq!(a.metrics.height(), 3, "base, retrieval and fused rows");
    assert_eq!(a.epochs.height(), 2);
    let losses: Vec<f64> = a.epochs.column("loss").unwrap().f64().unwrap().into_no_null_iter().collect();
    assert!(losses.iter().all(|l| l.is_finite() && *l > 0.0), "{losses:?}");
    let top1: Vec<f64> = a.metrics.column("top1").unwrap().f64().unwrap().into_no_null_iter().collect();
    assert!(top1.iter().all(|t| (0.0..=100.0).contains(t)), "{top1:?}");
    // With the neighbours' texts from the index, the fused output beats chance (10%) by far
    // after two short epochs (a random small ViT alone cannot).
    assert!(top1[2] > 25.0, "top-1 of base, retrieval, fused: {top1:?}");
    let loaded = RunRecord::load(&a.dir).unwrap();
    assert_eq!(loaded.meta.experiment.base_encoder, exp.base_encoder);

    // The same seed with one loader thread: identical weights' path, identical metrics.
    let mut one = exp.clone();
    one.base_encoder.as_mut().unwrap().workers = 1;
    let vit = TrainableVit::load(one.base_encoder.as_ref().unwrap(), &Device::Cpu).unwrap();
    let b = run_finetune_with(&one, &mut prep, &RunEnv { force: true, ..env.clone() }, &vit).unwrap();
    assert_eq!(a.metrics, b.metrics, "same seed, any number of loader threads: the same run");
    assert_eq!(a.epochs.column("loss").unwrap(), b.epochs.column("loss").unwrap());

    // bf16 on the CPU is refused with the field named.
    let mut bf16 = cfg.clone();
    bf16.precision = Precision::Bf16;
    let msg = TrainableVit::load(&bf16, &Device::Cpu).err().unwrap().to_string();
    assert!(msg.contains("base_encoder.precision") && msg.contains("CUDA"), "{msg}");
}

#[test]
fn a_fine_tuning_run_killed_after_an_epoch_resumes_to_the_uninterrupted_result() {
    let _one_at_a_time = SHARED_INDEX.lock().unwrap_or_else(|e| e.into_inner());
    let (_data, _vit_dir, exp) = small_fine_tuning("ft-resume", 3, 2);
    let cfg = exp.base_encoder.clone().unwrap();
    let (whole_runs, cut_runs) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let env = |dir: &Path| RunEnv { runs_dir: dir.to_path_buf(), cache: cache(), ..RunEnv::from_env() };
    let mut prep = Prepared::new(&exp, &env(whole_runs.path())).unwrap();

    let whole = run_finetune_with(&exp, &mut prep, &env(whole_runs.path()), &TrainableVit::load(&cfg, &Device::Cpu).unwrap()).unwrap();

    // Killed after epoch 1 of 3 (the hook fails the run right after that epoch's checkpoint).
    let stopping = RunEnv {
        hooks: rac_core::train::TrainHooks { stop_after_epoch: Some(1), progress: rac_core::progress::Progress::Hidden },
        ..env(cut_runs.path())
    };
    let err = run_finetune_with(&exp, &mut prep, &stopping, &TrainableVit::load(&cfg, &Device::Cpu).unwrap()).unwrap_err();
    assert!(matches!(err, rac_core::Error::TrainingStopped { epoch: 1 }), "{err}");
    let checkpoint = rac_core::train::trainer::checkpoint_path(&env(cut_runs.path()).checkpoint_dir(&exp));
    assert!(checkpoint.is_file(), "the epoch-1 checkpoint is kept");
    assert!(RunRecord::load(&rac_core::experiment::record::record_dir(cut_runs.path(), &exp)).is_err(), "no record yet");

    // A fresh process would load fresh weights: the checkpoint restores the encoder's and the heads'.
    let resumed = run_finetune_with(&exp, &mut prep, &env(cut_runs.path()), &TrainableVit::load(&cfg, &Device::Cpu).unwrap()).unwrap();
    assert_eq!(resumed.epochs.height(), 3, "the log keeps epoch 1 from the checkpoint");
    assert_eq!(whole.epochs.column("loss").unwrap(), resumed.epochs.column("loss").unwrap(), "the same losses, epoch by epoch");
    assert_eq!(whole.epochs.column("lr").unwrap(), resumed.epochs.column("lr").unwrap());
    assert_eq!(whole.metrics, resumed.metrics, "the same metrics on every branch");
    assert!(!checkpoint.exists(), "the checkpoint goes once the record is saved");
}

#[test]
fn in_memory_splits_check_their_labels() {
    let img = DynamicImage::ImageRgb8(fashion_rgb(1));
    let split = Split::in_memory(SplitKind::Train, vec![img.clone(), img], vec![0, 1]).unwrap();
    assert_eq!((split.len(), split.item_id(1)), (2, "1".to_string()));
    let err = Split::in_memory(SplitKind::Train, vec![], vec![0]).unwrap_err();
    assert!(matches!(&err, rac_core::Error::Shape { expected, found, .. } if expected == "0, one per image" && found == "1"), "{err}");
}

#[test]
fn online_retrieval_drops_a_views_own_item_only_when_drop_self_says_so() {
    // Real Fashion-MNIST images through the real EfficientNet-Lite0, un-augmented: a view is
    // its item's image, so its own item is its nearest neighbour unless it is dropped.
    use rac_core::encoders::{ImageEncoderSpec, RandomBow};
    use rac_core::experiment::RetrievalRequest;
    use rac_core::experiment::finetune::OnlineRetrieval;
    use rac_core::experiment::texts::FrozenText;
    use rac_core::index::{IndexConfig, ItemId, RetrievalIndex, SearchRequest, Source};
    use rac_core::model::InputNorm;
    use rac_core::train::pixels_to_device;

    let cpu = Device::Cpu;
    let spec = ImageEncoderSpec::parse("efficientnet-lite0").unwrap();
    let e = spec.load(&cache(), &cpu).unwrap();
    let split = Arc::new(fashion_train());
    let rows: Vec<usize> = (0..24).map(|i| i * 131).collect();
    let eval = Arc::new(Transform::Eval(e.preprocess().clone()));
    let config = LoaderConfig { batch_size: 8, workers: 2, prefetch: 1, seed: 0, shuffle: false };
    let batches: Vec<_> = EpochLoader::start(split.clone(), Some(&rows), eval, None, config, 0).unwrap().map(|b| b.unwrap()).collect();
    let mut vectors = Vec::new();
    for b in &batches {
        let (pixels, size) = b.retrieval();
        let x = pixels_to_device(pixels, size, e.preprocess(), &cpu, DType::F32).unwrap();
        vectors.extend(e.forward(&x).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap());
    }
    let labels: Vec<u32> = rows.iter().map(|&r| split.labels[r] as u32).collect();
    let texts: Vec<String> = labels.iter().map(|l| format!("class {l}")).collect();
    let dir = tempfile::tempdir().unwrap();
    let cfg = IndexConfig { deterministic: true, ..IndexConfig::default() };
    let index = RetrievalIndex::build(dir.path(), &cfg, &[Source::from_vecs("train", vectors, e.dim(), texts, labels).unwrap()]).unwrap();
    let first = index.source_ids("train").unwrap().start;
    let item_of = |row: usize| first + rows.iter().position(|&r| r == row).unwrap() as ItemId;

    let online = |drop_self: bool| {
        let request = RetrievalRequest { search: SearchRequest::new(5, 5, drop_self).unwrap(), separator: ", ".into() };
        let t = RandomBow::new(64, 0, 76, &cpu).unwrap();
        let scaler = InputNorm::None.fit(&Tensor::zeros((1, 64), DType::F32, &cpu).unwrap()).unwrap();
        let item_of_row = rows.iter().map(|&r| (r, item_of(r))).collect();
        OnlineRetrieval::new(spec.load(&cache(), &cpu).unwrap(), FrozenText::new(Box::new(t), scaler, request), item_of_row)
    };
    let (kept, dropped) = (online(false), online(true));
    for b in &batches {
        let with_self = kept.neighbours(b, &index).unwrap();
        let without = dropped.neighbours(b, &index).unwrap();
        for ((row, k), d) in b.items.iter().zip(&with_self).zip(&without) {
            let me = item_of(*row);
            assert_eq!(k.ids.len(), 5);
            assert_eq!(k.ids[0], me, "row {row}: with drop_self = false a view's own item comes back first");
            assert_eq!(d.ids.len(), 5);
            assert!(!d.ids.contains(&me), "row {row}: with drop_self its own item never comes back");
            assert_eq!(d.ids[..4], k.ids[1..], "row {row}: and no other item is dropped");
        }
    }
}
