//! Encoder throughput on the real weights, at batch sizes 1, 32 and 128:
//! - EfficientNet-Lite0 at 224 px, images/s of the forward pass on preprocessed pixels;
//! - EfficientNet-Lite0 end to end on Fashion-MNIST (decode, 28 → 224 px, forward), batch 32;
//! - all-MiniLM-L6-v2, tokens/s on RAC-style texts: the labels of 30 neighbours,
//!   concatenated and cut at 76 tokens.
//! - the learned bag-of-words T in training: one step's pooling, forward and backward, of
//!   200 such texts (the demo's batch) at its 300 dimensions, by its bag of words
//!   (`LearnedBow::pool`, `bow::bag_mean`) beside the reference, the masked mean of the
//!   gathered `[200, 76, 300]` word rows.
//!
//! Run with `cargo bench -p rac-benches --bench encoders`; the assets must be fetched
//! (`rac assets fetch`). Sample counts are small so that it finishes in minutes on 2 cores.

use std::time::Duration;

use candle_core::{Device, Tensor};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use rac_core::assets::AssetCache;
use rac_core::data::{DataOverrides, Dataset};
use rac_core::encoders::pixels::images_to_pixels;
use rac_core::encoders::{EfficientNet, EfficientNetConfig, ImageEncoder, LearnedBow, MiniLm, TextEncoder, masked_mean};

const BATCHES: [usize; 3] = [1, 32, 128];

fn cache() -> AssetCache {
    AssetCache::from_env()
}

fn fashion() -> Dataset {
    let manifest = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../data-manifests/fashion-mnist-lt.toml");
    Dataset::load(&manifest, &DataOverrides::default(), &cache()).expect("Fashion-MNIST-LT loads (run `rac assets fetch`)")
}

fn efficientnet(c: &mut Criterion) {
    let path = cache().require("efficientnet-lite0").expect("run `rac assets fetch`").join("model.safetensors");
    let net = EfficientNet::load(&path, EfficientNetConfig::lite0(), &Device::Cpu).unwrap();
    let ds = fashion();
    let images: Vec<_> = (0..128).map(|i| ds.test.image(i).unwrap()).collect();
    let pre = net.preprocess_for(&ds.manifest.preprocess);
    let pixels = images_to_pixels(&images, &pre, &Device::Cpu).unwrap();

    let mut g = c.benchmark_group("efficientnet-lite0 forward 224px");
    g.sample_size(10).warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(5));
    for bs in BATCHES {
        g.throughput(Throughput::Elements(bs as u64));
        let x = pixels.narrow(0, 0, bs).unwrap();
        g.bench_with_input(BenchmarkId::from_parameter(bs), &x, |b, x| b.iter(|| net.forward(x).unwrap()));
    }
    g.finish();

    let mut g = c.benchmark_group("efficientnet-lite0 encode fashion-mnist 224px");
    g.sample_size(10).warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(5));
    g.throughput(Throughput::Elements(32));
    g.bench_function(BenchmarkId::from_parameter(32), |b| {
        b.iter(|| {
            let imgs: Vec<_> = (0..32).map(|i| ds.test.image(i).unwrap()).collect();
            net.encode_with(&imgs, &pre).unwrap()
        })
    });
    g.finish();
}

const LABELS: [&str; 10] = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"];

/// The texts of `n` queries: 30 neighbour labels in distance order, as the retrieval branch
/// builds them.
fn neighbour_texts(n: usize) -> Vec<String> {
    let text = |q: usize| (0..30).map(|k| LABELS[(q * 7 + k * 3 + k * k) % LABELS.len()]).collect::<Vec<_>>().join(" ");
    (0..n).map(text).collect()
}

fn minilm(c: &mut Criterion) {
    let dir = cache().require("minilm").expect("run `rac assets fetch`");
    let m = MiniLm::load_default(&dir, &Device::Cpu).unwrap();
    let texts = neighbour_texts(128);
    let mut g = c.benchmark_group("minilm 76-token texts");
    g.sample_size(10).warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(5));
    for bs in BATCHES {
        let batch: Vec<&str> = texts[..bs].iter().map(String::as_str).collect();
        let tokens = m.tokenize(&batch).unwrap();
        g.throughput(Throughput::Elements(tokens.total_tokens() as u64));
        g.bench_with_input(BenchmarkId::from_parameter(bs), &batch, |b, batch| b.iter(|| m.encode(batch).unwrap()));
    }
    g.finish();
}

fn learned_bow(c: &mut Criterion) {
    let texts = neighbour_texts(200);
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let bow = LearnedBow::new(&LABELS, 300, 0, 76, &Device::Cpu).unwrap();
    let batch = bow.tokenize(&refs).unwrap();
    let table = bow.varmap().unwrap().data().lock().unwrap()["embeddings.weight"].clone();
    // A loss that reaches every pooled value, so backward does the whole step's work.
    let step = |pooled: Tensor| pooled.sqr().unwrap().sum_all().unwrap().backward().unwrap().get(table.as_tensor()).is_some();
    let mut g = c.benchmark_group("learned bag-of-words pooling, forward and backward, 200 texts of 76 words, d 300");
    g.sample_size(10).warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(5));
    g.throughput(Throughput::Elements(batch.len() as u64));
    g.bench_function("gathered rows, masked mean (reference)", |b| {
        b.iter(|| step(masked_mean(&bow.token_features(&batch).unwrap(), &batch.mask).unwrap()))
    });
    g.bench_function("bag of words (LearnedBow::pool)", |b| b.iter(|| step(bow.pool(&batch).unwrap())));
    g.finish();
}

criterion_group!(benches, efficientnet, minilm, learned_bow);
criterion_main!(benches);
