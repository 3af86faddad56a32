//! `rac encode`: encode a data set's splits into the feature store (a second call is a cache
//! hit), and `rac encode knn`: the retrieval-only 1-NN accuracy of the cached features.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Result;
use clap::{Args, Subcommand};
use rac_core::assets::AssetCache;
use rac_core::data::{Dataset, SplitKind};
use rac_core::encoders::{ImageEncoder, ImageEncoderSpec};
use rac_core::features::{BarProgress, CacheOutcome, EncodeOptions, FeatureStore, Features};
use rac_core::knn::one_nn_accuracy;

use crate::data_cmd::PathArgs;

/// `rac encode <manifest> …`, or `rac encode knn <manifest> …`.
#[derive(Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct EncodeCmd {
    #[command(subcommand)]
    action: Option<EncodeAction>,
    #[command(flatten)]
    args: EncodeArgs,
}

#[derive(Subcommand)]
enum EncodeAction {
    /// Print the retrieval-only 1-NN top-1 accuracy (test against train, exact cosine) of
    /// the cached features, encoding what is not cached yet.
    Knn(EncodeArgs),
}

/// The arguments shared by `encode` and `encode knn`.
#[derive(Args, Clone)]
struct EncodeArgs {
    /// The data manifest (TOML).
    #[arg(required = true)]
    manifest: Option<PathBuf>,
    /// The image encoder: efficientnet-lite0, vit:DIR, vit-b16:DIR, vit-b32:DIR, clip:DIR.
    #[arg(long, default_value = "efficientnet-lite0")]
    encoder: String,
    /// Which split to encode (`encode knn` always uses train and test).
    #[arg(long, value_enum, default_value_t = SplitArg::All)]
    split: SplitArg,
    /// Images per forward pass.
    #[arg(long, default_value_t = 32)]
    batch_size: usize,
    /// EfficientNet-Lite0 only: the input side in pixels (default 224).
    #[arg(long)]
    input_size: Option<u32>,
    /// The feature store folder (default: `features/` in the asset cache).
    #[arg(long, env = "RAC_FEATURE_STORE")]
    store: Option<PathBuf>,
    /// Print machine-readable JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    paths: PathArgs,
}

impl EncodeArgs {
    fn store(&self, cache: &AssetCache) -> FeatureStore {
        feature_store(self.store.as_deref(), cache)
    }
}

/// The feature store in `dir`, or the asset cache's.
pub fn feature_store(dir: Option<&Path>, cache: &AssetCache) -> FeatureStore {
    match dir {
        Some(dir) => FeatureStore::new(dir),
        None => FeatureStore::in_cache(cache),
    }
}

#[derive(clap::ValueEnum, Clone, Copy, PartialEq)]
enum SplitArg {
    Train,
    Test,
    Val,
    External,
    All,
}

/// How one split's features were obtained.
#[derive(serde::Serialize)]
pub struct SplitReport {
    split: &'static str,
    images: usize,
    dim: usize,
    outcome: &'static str,
    seconds: f64,
    images_per_second: Option<f64>,
    entry: PathBuf,
}

pub fn run(cmd: EncodeCmd, cache: &AssetCache) -> Result<()> {
    match cmd.action {
        None => encode(cmd.args, cache),
        Some(EncodeAction::Knn(args)) => knn(args, cache),
    }
}

fn load(args: &EncodeArgs, cache: &AssetCache) -> Result<(Dataset, Box<dyn ImageEncoder>)> {
    let manifest = args.manifest.clone().expect("clap requires the manifest");
    let ds = Dataset::load(&manifest, &args.paths.overrides(), cache)?;
    let encoder = load_encoder(&args.encoder, args.input_size, cache)?;
    Ok((ds, encoder))
}

/// An image encoder by name (`efficientnet-lite0`, `vit:DIR`, …) on the CPU; `input_size`
/// overrides EfficientNet-Lite0's 224 px.
pub fn load_encoder(name: &str, input_size: Option<u32>, cache: &AssetCache) -> Result<Box<dyn ImageEncoder>> {
    let mut spec = ImageEncoderSpec::parse(name)?;
    if let Some(size) = input_size {
        match &mut spec {
            ImageEncoderSpec::EfficientnetLite0 { input_size, .. } => *input_size = Some(size),
            _ => anyhow::bail!("--input-size applies to efficientnet-lite0 only; ViT and CLIP take their config's image size"),
        }
    }
    Ok(spec.load(cache, &candle_core::Device::Cpu)?)
}

/// Features of one split from the store (encoded on a miss, with a progress bar on stderr),
/// timed; the report says where they came from.
pub fn features(
    store: &FeatureStore,
    ds: &Dataset,
    split: SplitKind,
    encoder: &dyn ImageEncoder,
    batch_size: usize,
) -> Result<(Features, SplitReport)> {
    let start = Instant::now();
    let (f, outcome) =
        store.get_or_encode(ds, split, encoder, &EncodeOptions { batch_size }, &mut BarProgress::new(rac_core::progress::Progress::Shown))?;
    let seconds = start.elapsed().as_secs_f64();
    let (outcome, ips) = match outcome {
        CacheOutcome::Hit => ("cache hit", None),
        CacheOutcome::Computed => ("encoded", Some(f.len() as f64 / f.meta.encode_seconds.max(1e-9))),
        CacheOutcome::Recomputed { .. } => ("re-encoded", Some(f.len() as f64 / f.meta.encode_seconds.max(1e-9))),
    };
    let report = SplitReport {
        split: split.name(),
        images: f.len(),
        dim: f.dim(),
        outcome,
        seconds,
        images_per_second: ips,
        entry: store.entry_dir(&f.meta.key),
    };
    Ok((f, report))
}

/// The report as one line on stderr.
pub fn print_line(r: &SplitReport) {
    let speed = r.images_per_second.map(|s| format!(", {s:.1} images/s")).unwrap_or_default();
    eprintln!("{:<5} {} x {}  {} in {:.1} s{speed}  {}", r.split, r.images, r.dim, r.outcome, r.seconds, r.entry.display());
}

fn encode(args: EncodeArgs, cache: &AssetCache) -> Result<()> {
    let start = Instant::now();
    let (ds, encoder) = load(&args, cache)?;
    let store = args.store(cache);
    let splits: Vec<SplitKind> = match args.split {
        SplitArg::Train => vec![SplitKind::Train],
        SplitArg::Test => vec![SplitKind::Test],
        SplitArg::Val => vec![SplitKind::Val],
        SplitArg::External => vec![SplitKind::External],
        SplitArg::All => {
            [SplitKind::Train, SplitKind::Val, SplitKind::Test, SplitKind::External].into_iter().filter(|&k| ds.split(k).is_some()).collect()
        }
    };
    let mut reports = Vec::new();
    for split in splits {
        let (_, report) = features(&store, &ds, split, encoder.as_ref(), args.batch_size)?;
        if !args.json {
            print_line(&report);
        }
        reports.push(report);
    }
    let total = start.elapsed().as_secs_f64();
    if args.json {
        let v = serde_json::json!({
            "dataset": ds.name(),
            "encoder": encoder.name(),
            "encoder_fingerprint": encoder.fingerprint(),
            "input_size": encoder.input_size(),
            "splits": reports,
            "total_seconds": total,
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        println!("{}: {} ({} px, fingerprint {}) in {total:.1} s", ds.name(), encoder.name(), encoder.input_size(), encoder.fingerprint());
    }
    Ok(())
}

fn knn(args: EncodeArgs, cache: &AssetCache) -> Result<()> {
    let (ds, encoder) = load(&args, cache)?;
    let store = args.store(cache);
    let (train, r_train) = features(&store, &ds, SplitKind::Train, encoder.as_ref(), args.batch_size)?;
    let (test, r_test) = features(&store, &ds, SplitKind::Test, encoder.as_ref(), args.batch_size)?;
    if !args.json {
        print_line(&r_train);
        print_line(&r_test);
    }
    let start = Instant::now();
    let report = one_nn_accuracy(&test.vectors, &test.labels, &train.vectors, &train.labels, &ds.train_counts())?;
    let seconds = start.elapsed().as_secs_f64();
    if args.json {
        let v = serde_json::json!({ "dataset": ds.name(), "encoder": encoder.name(), "knn_seconds": seconds, "report": report });
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    let pct = |x: Option<f64>| x.map(|v| format!("{v:.2}")).unwrap_or_else(|| "-".into());
    println!("retrieval-only 1-NN, exact cosine: {} test queries against {} train items ({:.1} s)", report.queries, report.references, seconds);
    println!("top-1            {:.2} %", report.top1);
    println!("balanced top-1   {:.2} %", report.balanced);
    println!("many/medium/few  {} / {} / {} %", pct(report.many), pct(report.medium), pct(report.few));
    for (c, acc) in report.per_class.iter().enumerate().filter(|_| report.per_class.len() <= 20) {
        let text = ds.class_texts.get(c).map(String::as_str).unwrap_or("");
        println!("  class {c:>3} {text:<20} {acc:>6.2} %  ({} train)", ds.train_counts()[c]);
    }
    Ok(())
}
