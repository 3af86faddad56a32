//! The GPU check: CPU/CUDA agreement and RAC training throughput, in one table.
//!
//! - agreement (f32, within 1e-4 of the CPU, relative to the output's scale): every loss
//!   (value and gradient), the fusion, a MiniLM forward pass (BERT, mean pooling, L2) and an
//!   EfficientNet-Lite0 forward pass. The networks have random weights of the real shapes
//!   (`Weights::synthetic`), identical on both devices, so no asset is needed there;
//! - throughput: RAC training steps (ViT-B/16 base branch fine-tuned, 224x224, batch 64,
//!   LACE on the fused logits, AdamW over every parameter) in f32, in bf16 on f32 master
//!   weights (the `base_encoder.precision = "bf16"` setting, PyTorch's autocast) and in pure
//!   bf16, on inputs already on the device;
//! - the fine-tuning loader's images per second (the paper's augmentation, all cores), to
//!   compare with the steps' samples per second;
//! - PyTorch eager on the same-shaped ViT-B/16 step, when `python3` there has torch with CUDA
//!   (`benches/gpu/torch_vit_step.py`), and our throughput as a ratio of it.
//!
//! Run it through `scripts/gpu-check.sh`. `--cpu-smoke` runs every part on the CPU with
//! tiny shapes (the test suite does, so the check cannot rot on machines without a GPU).

use std::process::{Command, ExitCode};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use candle_core::{DType, Device, Tensor, Var};
use candle_nn::VarMap;
use candle_transformers::models::bert::{BertModel, Config as BertConfig};
use rac_core::data::{Augment, AugmentConfig, EpochLoader, LoaderConfig, Preprocess, Split, SplitKind, Transform};
use rac_core::encoders::{EfficientNet, EfficientNetConfig, ImageEncoder, RandomBow, VitConfig, VitEncoder, Weights, masked_mean};
use rac_core::experiment::RetrievalRequest;
use rac_core::experiment::finetune::OnlineRetrieval;
use rac_core::experiment::texts::FrozenText;
use rac_core::index::{IndexConfig, ItemId, RetrievalIndex, SearchRequest, Source};
use rac_core::model::{Batch, InputNorm, LongTailLoss, LossConfig, LossKind, ModelConfig, RacModel, RetrievalBatch, Widths, fuse_logits};
use rac_core::train::{AdamW, OptimConfig, Precision, TrainableVit, pixels_to_device};
use rac_core::vectors::l2_normalise;
use rand::{Rng, SeedableRng};

const TOLERANCE: f64 = 1e-4;

/// all-MiniLM-L6-v2's BERT shape (its `config.json`).
const MINILM_CONFIG: &str = r#"{"vocab_size": 30522, "hidden_size": 384, "num_hidden_layers": 6, "num_attention_heads": 12,
  "intermediate_size": 1536, "hidden_act": "gelu", "hidden_dropout_prob": 0.1, "max_position_embeddings": 512,
  "type_vocab_size": 2, "initializer_range": 0.02, "layer_norm_eps": 1e-12, "pad_token_id": 0,
  "position_embedding_type": "absolute", "use_cache": true, "classifier_dropout": null, "model_type": "bert"}"#;

struct Args {
    cpu_smoke: bool,
    steps: usize,
    batch: usize,
    torch_script: String,
    workers: Option<usize>,
    /// Time the phases of each step (forward, heads and loss, backward, optimiser).
    breakdown: bool,
    /// Run one training step of this variant and stop (for a kernel profiler).
    profile: Option<Variant>,
}

fn parse_args() -> Result<Args> {
    let mut a = Args {
        cpu_smoke: false,
        steps: 10,
        batch: 64,
        torch_script: "benches/gpu/torch_vit_step.py".into(),
        workers: None,
        breakdown: false,
        profile: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = |name: &str| it.next().with_context(|| format!("{name} needs a value"));
        match arg.as_str() {
            "--cpu-smoke" => a.cpu_smoke = true,
            "--steps" => a.steps = value("--steps")?.parse().context("--steps: a number")?,
            "--batch" => a.batch = value("--batch")?.parse().context("--batch: a number")?,
            "--torch-script" => a.torch_script = value("--torch-script")?,
            "--workers" => a.workers = Some(value("--workers")?.parse().context("--workers: a number")?),
            "--breakdown" => a.breakdown = true,
            "--profile" => {
                a.profile = Some(match value("--profile")?.as_str() {
                    "f32" => Variant::F32,
                    "bf16" => Variant::Bf16Mixed,
                    "bf16-pure" => Variant::Bf16Pure,
                    other => bail!("--profile: `{other}` is not f32, bf16 or bf16-pure"),
                })
            }
            "-h" | "--help" => {
                println!(
                    "gpu_check [--cpu-smoke] [--steps N (10)] [--batch N (64)] [--torch-script PATH] [--workers N (all cores)] [--breakdown] [--profile f32|bf16|bf16-pure]"
                );
                std::process::exit(0);
            }
            other => bail!("unknown argument `{other}` (see --help)"),
        }
    }
    if a.steps == 0 || a.batch == 0 {
        bail!("--steps and --batch must be at least 1");
    }
    Ok(a)
}

/// One row of the table.
struct Row {
    item: String,
    value: String,
    ok: Option<bool>,
}

fn main() -> ExitCode {
    match run() {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => {
            eprintln!("gpu_check: some items disagree (see the table)");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("gpu_check: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<bool> {
    let args = parse_args()?;
    let device = if args.cpu_smoke {
        Device::Cpu
    } else {
        if !rac_core::device::cuda_compiled() {
            bail!("this gpu_check was built without CUDA: build it with `--features cuda` (README: Building with CUDA)");
        }
        Device::new_cuda(0).map_err(|e| anyhow::anyhow!("no CUDA device found ({e}); run this on a machine with an NVIDIA GPU and driver"))?
    };
    let started = Instant::now();
    if let Some(variant) = args.profile {
        let config = VitConfig::base_patch16_224();
        rac_vit_throughput(&device, &config, args.batch, 0, variant, false)?;
        println!("profiled one {} training step (batch {})", variant.name(), args.batch);
        return Ok(true);
    }
    println!("{}", rac_core::device::DeviceReport::probe());
    let mut rows = Vec::new();
    agreement(&device, args.cpu_smoke, &mut rows)?;
    throughput(&device, &args, &mut rows)?;
    let w = rows.iter().map(|r| r.item.len()).max().unwrap_or(4).max(4);
    println!("\n| {:w$} | {:>34} | ok |", "item", "value");
    println!("|{}|{}|----|", "-".repeat(w + 2), "-".repeat(36));
    for r in &rows {
        let ok = match r.ok {
            Some(true) => "yes",
            Some(false) => "NO",
            None => "",
        };
        println!("| {:w$} | {:>34} | {ok:>2} |", r.item, r.value);
    }
    println!(
        "\n{} on {:?}, {:.0} s in all",
        if args.cpu_smoke { "cpu smoke run" } else { "GPU check" },
        device.location(),
        started.elapsed().as_secs_f64()
    );
    Ok(rows.iter().all(|r| r.ok != Some(false)))
}

fn random(shape: &[usize], seed: u64) -> Result<Tensor> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let n = shape.iter().product();
    Ok(Tensor::from_vec((0..n).map(|_| rng.random_range(-1f32..1f32)).collect::<Vec<f32>>(), shape, &Device::Cpu)?)
}

/// Max |a - b| over the elements, and whether it is within the tolerance of `a`'s scale.
fn compare(a: &Tensor, b: &Tensor) -> Result<(f64, bool)> {
    let a = a.to_device(&Device::Cpu)?.to_dtype(DType::F64)?.flatten_all()?;
    let b = b.to_device(&Device::Cpu)?.to_dtype(DType::F64)?.flatten_all()?;
    let diff = (&a - &b)?.abs()?.max(0)?.to_scalar::<f64>()?;
    let scale = a.abs()?.max(0)?.to_scalar::<f64>()?.max(1.0);
    Ok((diff, diff <= TOLERANCE * scale && diff.is_finite()))
}

fn push_compare(rows: &mut Vec<Row>, item: &str, a: &Tensor, b: &Tensor) -> Result<()> {
    let (diff, ok) = compare(a, b)?;
    rows.push(Row { item: item.into(), value: format!("max |cpu - dev| = {diff:.2e}"), ok: Some(ok) });
    Ok(())
}

fn agreement(dev: &Device, smoke: bool, rows: &mut Vec<Row>) -> Result<()> {
    let cpu = Device::Cpu;
    // Losses: a long-tailed 100-class problem, value and gradient with respect to the logits.
    let (b, c) = (256, 100);
    let counts: Vec<usize> = (0..c).map(|i| (500.0 * 0.95f64.powi(i as i32)).ceil() as usize).collect();
    let logits = (random(&[b, c], 1)? * 4.0)?;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(2);
    let targets: Vec<u32> = (0..b).map(|_| rng.random_range(0..c as u32)).collect();
    for kind in [LossKind::Ce, LossKind::Balce, LossKind::Lace, LossKind::Ldam] {
        let config = LossConfig { kind, ..LossConfig::default() };
        let mut out = Vec::new();
        for d in [&cpu, dev] {
            let loss = LongTailLoss::new(&config, &counts, d)?;
            let x = Var::from_tensor(&logits.to_device(d)?)?;
            let l = loss.forward(x.as_tensor(), &Tensor::from_slice(&targets, b, d)?)?;
            let g = l.backward()?.get(x.as_tensor()).context("a gradient for the logits")?.clone();
            out.push((l, g));
        }
        push_compare(rows, &format!("loss {}", kind.display_name()), &out[0].0, &out[1].0)?;
        push_compare(rows, &format!("loss {} gradient", kind.display_name()), &out[0].1, &out[1].1)?;
    }
    let (fb, fr) = (random(&[b, c], 3)?, random(&[b, c], 4)?);
    let fused_cpu = fuse_logits(&fb, &fr)?;
    let fused_dev = fuse_logits(&fb.to_device(dev)?, &fr.to_device(dev)?)?;
    push_compare(rows, "fusion (Eq. 1)", &fused_cpu, &fused_dev)?;

    // MiniLM: BERT forward, mean pooling over the mask, L2 normalisation.
    let config: BertConfig = serde_json::from_str(MINILM_CONFIG)?;
    let (n, len) = if smoke { (2, 12) } else { (16, 64) };
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
    let ids: Vec<u32> = (0..n * len).map(|_| rng.random_range(1..config.vocab_size as u32)).collect();
    let mask: Vec<u32> = (0..n * len).map(|i| u32::from(i % len < len - (i / len) % (len / 2))).collect();
    let minilm = |d: &Device| -> Result<Tensor> {
        let bert = Weights::synthetic(11, d).build(|vb| BertModel::load(vb, &config))?;
        let ids = Tensor::from_slice(&ids, (n, len), d)?;
        let mask = Tensor::from_slice(&mask, (n, len), d)?;
        let hidden = bert.forward(&ids, &ids.zeros_like()?, Some(&mask))?;
        Ok(l2_normalise(&masked_mean(&hidden, &mask)?)?)
    };
    push_compare(rows, &format!("MiniLM forward [{n}x{len} tokens]"), &minilm(&cpu)?, &minilm(dev)?)?;

    // EfficientNet-Lite0: the CPU's hand-written kernels against candle's ops on the device.
    let n = if smoke { 1 } else { 8 };
    let pixels = random(&[n, 3, 224, 224], 6)?;
    // On the CPU alone (the smoke run), the device side is candle's ops, as run off the CPU.
    let effnet = |d: &Device, candle_ops: bool| -> Result<Tensor> {
        let net = EfficientNet::from_weights(&Weights::synthetic(12, d), EfficientNetConfig::lite0())?;
        let x = pixels.to_device(d)?;
        Ok(if candle_ops { net.features_candle_ops(&x)? } else { net.forward(&x)? })
    };
    push_compare(rows, &format!("EfficientNet-Lite0 forward [{n}x224x224]"), &effnet(&cpu, false)?, &effnet(dev, dev.is_cpu())?)?;
    Ok(())
}

/// How the ViT base branch's parameters and arithmetic are typed.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Variant {
    /// f32 parameters and compute.
    F32,
    /// bf16 compute on f32 master weights (`base_encoder.precision = "bf16"`, like autocast).
    Bf16Mixed,
    /// bf16 parameters and compute.
    Bf16Pure,
}

impl Variant {
    fn name(self) -> &'static str {
        match self {
            Variant::F32 => "f32",
            Variant::Bf16Mixed => "bf16 (f32 masters)",
            Variant::Bf16Pure => "bf16 (pure)",
        }
    }
}

/// Samples per second of RAC training steps with a fine-tuned ViT base branch.
fn rac_vit_throughput(
    dev: &Device,
    config: &VitConfig,
    batch: usize,
    steps: usize,
    variant: Variant,
    breakdown: bool,
) -> Result<(f64, Option<[f64; 4]>)> {
    let (text_dim, classes) = (384, 1000);
    let preprocess =
        Preprocess { resize: config.image_size as u32, crop: config.image_size as u32, mean: [0.5; 3], std: [0.5; 3], grey_to_rgb: true };
    let weights = Weights::synthetic(13, dev);
    let (mixed, pure) = match variant {
        Variant::F32 => (Some(TrainableVit::new(&weights, config.clone(), preprocess, Precision::F32)?), None),
        Variant::Bf16Mixed => (Some(TrainableVit::new(&weights, config.clone(), preprocess, Precision::Bf16)?), None),
        Variant::Bf16Pure => {
            let varmap = VarMap::new();
            let vit = VitEncoder::trainable(&weights, config.clone(), preprocess, &varmap, DType::BF16)?;
            let mut vars: Vec<(String, Var)> = varmap.data().lock().expect("varmap lock").iter().map(|(k, v)| (k.clone(), v.clone())).collect();
            vars.sort_by(|a, b| a.0.cmp(&b.0));
            (None, Some((vit, vars)))
        }
    };
    let widths = Widths { base_dim: config.hidden_size, text_dim, num_classes: classes };
    let model = RacModel::new(&ModelConfig::default(), widths, None, 0, dev)?;
    let counts: Vec<usize> = (0..classes).map(|i| 1 + (1000.0 * 0.995f64.powi(i as i32)) as usize).collect();
    let loss_fn = LongTailLoss::new(&LossConfig { kind: LossKind::Lace, ..LossConfig::default() }, &counts, dev)?;
    let mut vars: Vec<(String, Var)> = match (&mixed, &pure) {
        (Some(v), _) => v.vars().to_vec(),
        (_, Some((_, vars))) => vars.clone(),
        _ => unreachable!(),
    };
    vars.extend(model.vars().iter().cloned());
    let mut optim = AdamW::new(&vars, &OptimConfig::default())?;
    let pixels = random(&[batch, 3, config.image_size, config.image_size], 7)?.to_device(dev)?;
    let text = l2_normalise(&random(&[batch, text_dim], 8)?)?.to_device(dev)?;
    let targets = Tensor::from_vec((0..batch as u32).map(|i| i % classes as u32).collect::<Vec<u32>>(), batch, dev)?;
    // Seconds in each phase (forward, heads and loss, backward, optimiser), when timed: the
    // device is synchronised between phases, which costs a little overlap.
    let mut phases = [0f64; 4];
    let mut step = |timed: bool, phases: &mut [f64; 4]| -> Result<()> {
        let mut mark = Instant::now();
        let mut lap = |i: usize| -> Result<()> {
            if timed {
                dev.synchronize()?;
                phases[i] += mark.elapsed().as_secs_f64();
                mark = Instant::now();
            }
            Ok(())
        };
        let features = match (&mixed, &pure) {
            (Some(v), _) => v.forward(&pixels)?,
            (_, Some((vit, _))) => vit.forward(&pixels)?.to_dtype(DType::F32)?,
            _ => unreachable!(),
        };
        lap(0)?;
        let out = model.forward(&Batch { base: Some(features), retrieval: Some(RetrievalBatch::Embedded(text.clone())) })?;
        let loss = loss_fn.forward(&out.fused, &targets)?;
        lap(1)?;
        let grads = loss.backward()?;
        lap(2)?;
        optim.step(&grads, 1e-5)?;
        lap(3)?;
        Ok(())
    };
    step(false, &mut phases)?; // warm-up: kernels loaded, memory pools grown
    dev.synchronize()?;
    if steps == 0 {
        return Ok((0.0, None));
    }
    let t = Instant::now();
    for _ in 0..steps {
        step(false, &mut phases)?;
    }
    dev.synchronize()?;
    let sps = (batch * steps) as f64 / t.elapsed().as_secs_f64();
    if !breakdown {
        return Ok((sps, None));
    }
    for _ in 0..steps {
        step(true, &mut phases)?;
    }
    Ok((sps, Some(phases.map(|p| 1e3 * p / steps as f64))))
}

/// Samples per second of whole fine-tuning steps, as `rac run` takes them with a
/// `[base_encoder]` section: the loader's augmented views of 28x28 grey images, the ViT-B/16
/// base branch, E (EfficientNet-Lite0, random weights) on the same views, the index on the
/// CPU (HNSW over E's features of the training images), T (random bag-of-words) on the k = 30
/// joined texts, fusion, LACE and AdamW. Also the share of the time the retrieval side takes.
fn rac_finetune_throughput(
    dev: &Device,
    vit_config: &VitConfig,
    batch: usize,
    steps: usize,
    workers: usize,
    precision: Precision,
) -> Result<(f64, f64)> {
    use std::sync::Arc;
    let (images, classes) = (batch * (steps + 1), 10usize);
    let k = 30.min(images - 2); // the paper's k; less on the smoke run's few images
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(10);
    let imgs: Vec<image::DynamicImage> =
        (0..images).map(|_| image::DynamicImage::ImageLuma8(image::GrayImage::from_fn(28, 28, |_, _| image::Luma([rng.random::<u8>()])))).collect();
    let labels: Vec<usize> = (0..images).map(|i| i % classes).collect();
    let split = Arc::new(Split::in_memory(SplitKind::Train, imgs, labels.clone())?);
    let e = EfficientNet::from_weights(&Weights::synthetic(12, dev), EfficientNetConfig::lite0())?;
    let e_pre = e.preprocess().clone();
    // The index: E's features of every training image (eval transform).
    let eval = LoaderConfig { batch_size: 256, workers, prefetch: 2, seed: 0, shuffle: false };
    let mut vectors = Vec::new();
    for b in EpochLoader::start(split.clone(), None, Arc::new(Transform::Eval(e_pre.clone())), None, eval, 0)? {
        let b = b?;
        let x = pixels_to_device(&b.pixels, b.size, &e_pre, dev, DType::F32)?;
        vectors.extend(e.forward(&x)?.to_device(&Device::Cpu)?.flatten_all()?.to_vec1::<f32>()?);
    }
    let dir = std::env::temp_dir().join(format!("rac-gpu-check-index-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let texts: Vec<String> = labels.iter().map(|&l| format!("class {l}")).collect();
    let source = Source::from_vecs("train", vectors, e.dim(), texts, labels.iter().map(|&l| l as u32).collect())?;
    let index = RetrievalIndex::build(&dir, &IndexConfig::default(), &[source])?;
    let first = index.source_ids("train")?.start;
    let item_of_row = (0..images).map(|r| (r, first + r as ItemId)).collect();
    let text = RandomBow::new(384, 0, 76, dev)?;
    let request = RetrievalRequest { search: SearchRequest::new(k, k, true)?, separator: ", ".into() };
    let text = FrozenText::new(Box::new(text), InputNorm::None.fit(&Tensor::zeros((1, 1), DType::F32, dev)?)?, request);
    let mut online = OnlineRetrieval::new(Box::new(e), text, item_of_row);

    let preprocess =
        Preprocess { resize: vit_config.image_size as u32, crop: vit_config.image_size as u32, mean: [0.5; 3], std: [0.5; 3], grey_to_rgb: true };
    let vit = TrainableVit::new(&Weights::synthetic(13, dev), vit_config.clone(), preprocess.clone(), precision)?;
    let widths = Widths { base_dim: vit.dim(), text_dim: online.text_dim(), num_classes: classes };
    let model = RacModel::new(&ModelConfig::default(), widths, None, 0, dev)?;
    let counts: Vec<usize> = (0..classes).map(|c| 1 + 100 * (classes - c)).collect();
    let loss_fn = LongTailLoss::new(&LossConfig { kind: LossKind::Lace, ..LossConfig::default() }, &counts, dev)?;
    let mut vars = vit.vars().to_vec();
    vars.extend(model.vars().iter().cloned());
    let mut optim = AdamW::new(&vars, &OptimConfig::default())?;
    let transform = Arc::new(Transform::Train(Augment::new(AugmentConfig::default(), preprocess.clone())?));
    let config = LoaderConfig { batch_size: batch, workers, prefetch: 2, seed: 0, shuffle: true };
    let (mut retrieval_s, mut t, mut n) = (0f64, None, 0usize);
    for (i, b) in EpochLoader::start(split, None, transform, Some(online.input_size() as u32), config, 0)?.enumerate() {
        if i == 1 {
            dev.synchronize()?; // the first step warms up
            t = Some(Instant::now());
        }
        let b = b?;
        let pixels = pixels_to_device(&b.pixels, b.size, &preprocess, dev, precision.dtype())?;
        let base = vit.forward(&pixels)?;
        let r0 = Instant::now();
        let text = online.features(&b, &index, dev)?;
        if i >= 1 {
            dev.synchronize()?;
            retrieval_s += r0.elapsed().as_secs_f64();
            n += b.len();
        }
        let out = model.forward(&Batch { base: Some(base), retrieval: Some(RetrievalBatch::Embedded(text)) })?;
        let targets = Tensor::from_slice(&b.labels, b.len(), dev)?;
        let loss = loss_fn.forward(&out.fused, &targets)?;
        optim.step(&loss.backward()?, 1e-5)?;
    }
    dev.synchronize()?;
    drop(index);
    let _ = std::fs::remove_dir_all(&dir);
    let secs = t.map_or(f64::NAN, |t| t.elapsed().as_secs_f64());
    Ok((n as f64 / secs, retrieval_s / secs))
}

/// Images per second of the fine-tuning loader: Fashion-MNIST-sized grey images (28x28),
/// augmented with the paper's recipe to `size` and laid out as the device expects.
fn loader_throughput(size: u32, images: usize, batch: usize, workers: usize) -> Result<f64> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(9);
    let imgs: Vec<image::DynamicImage> =
        (0..images).map(|_| image::DynamicImage::ImageLuma8(image::GrayImage::from_fn(28, 28, |_, _| image::Luma([rng.random::<u8>()])))).collect();
    let labels = (0..images).map(|i| i % 10).collect();
    let split = std::sync::Arc::new(Split::in_memory(SplitKind::Train, imgs, labels)?);
    let pre = Preprocess { resize: size, crop: size, mean: [0.5; 3], std: [0.5; 3], grey_to_rgb: true };
    let transform = std::sync::Arc::new(Transform::Train(Augment::new(AugmentConfig::default(), pre)?));
    let config = LoaderConfig { batch_size: batch, workers, prefetch: 2, seed: 0, shuffle: true };
    let t = Instant::now();
    let mut n = 0;
    for b in EpochLoader::start(split, None, transform, None, config, 0)? {
        n += b?.len();
    }
    Ok(n as f64 / t.elapsed().as_secs_f64())
}

fn throughput(dev: &Device, args: &Args, rows: &mut Vec<Row>) -> Result<()> {
    let (config, batch, steps) = if args.cpu_smoke {
        let tiny = VitConfig {
            hidden_size: 32,
            num_hidden_layers: 1,
            num_attention_heads: 2,
            intermediate_size: 64,
            image_size: 32,
            ..VitConfig::base_patch16_224()
        };
        (tiny, 2, 1)
    } else {
        (VitConfig::base_patch16_224(), args.batch, args.steps)
    };
    let shape = format!("{}x{}, batch {batch}", config.image_size, config.image_size);
    let mut ours = Vec::new();
    for variant in [Variant::F32, Variant::Bf16Mixed, Variant::Bf16Pure] {
        let name = variant.name();
        if dev.is_cpu() && variant != Variant::F32 {
            rows.push(Row { item: format!("RAC ViT-B/16 train {name}"), value: "skipped: no bf16 matmul on the CPU".into(), ok: None });
            continue;
        }
        let (sps, phases) =
            rac_vit_throughput(dev, &config, batch, steps, variant, args.breakdown).with_context(|| format!("the {name} training step"))?;
        rows.push(Row { item: format!("RAC ViT-B/16 train {name} ({shape})"), value: format!("{sps:.1} samples/s"), ok: None });
        if let Some([f, h, b, o]) = phases {
            rows.push(Row {
                item: format!("  {name}: ms forward / heads+loss / backward / AdamW"),
                value: format!("{f:.1} / {h:.1} / {b:.1} / {o:.1}"),
                ok: None,
            });
        }
        ours.push((variant, sps));
    }
    let workers = args.workers.unwrap_or_else(|| std::thread::available_parallelism().map_or(4, |n| n.get()));
    let (size, images) = if args.cpu_smoke { (32, 16) } else { (config.image_size as u32, 2048) };
    let ips = loader_throughput(size, images, batch, workers).context("the loader")?;
    rows.push(Row { item: format!("loader: augmented {size}x{size} images, {workers} workers"), value: format!("{ips:.0} images/s"), ok: None });
    for precision in [Precision::F32, Precision::Bf16] {
        if dev.is_cpu() && precision == Precision::Bf16 {
            continue;
        }
        let (sps, share) = rac_finetune_throughput(dev, &config, batch, steps, workers, precision)
            .with_context(|| format!("the {precision:?} fine-tuning pipeline"))?;
        let name = if precision == Precision::F32 { "f32" } else { "bf16 (f32 masters)" };
        rows.push(Row {
            item: format!("RAC fine-tune step {name}: loader, E, index, T"),
            value: format!("{sps:.1} samples/s, {:.0}% retrieval", 100.0 * share),
            ok: None,
        });
    }
    if args.cpu_smoke {
        return Ok(());
    }
    let torch_ok = Command::new("python3")
        .args(["-c", "import torch, torchvision; assert torch.cuda.is_available()"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !torch_ok {
        rows.push(Row { item: "PyTorch eager ViT-B/16".into(), value: "skipped: no torch with CUDA".into(), ok: None });
        return Ok(());
    }
    let out = Command::new("python3")
        .args([args.torch_script.as_str(), "--batch", &batch.to_string(), "--steps", &steps.to_string()])
        .args(args.breakdown.then_some("--breakdown"))
        .output()
        .context("running the PyTorch step")?;
    if !out.status.success() {
        bail!("{} failed: {}", args.torch_script, String::from_utf8_lossy(&out.stderr));
    }
    let json: serde_json::Value = serde_json::from_slice(out.stdout.trim_ascii_end().rsplit(|&c| c == b'\n').next().unwrap_or(b"{}"))
        .context("the PyTorch script's last line is JSON")?;
    for (variant, sps) in ours {
        let key = if variant == Variant::F32 { "f32" } else { "bf16" };
        let theirs = json[key].as_f64().with_context(|| format!("the PyTorch script gave no {key} figure"))?;
        let torch_name = if variant == Variant::F32 { "f32" } else { "bf16 autocast" };
        if variant != Variant::Bf16Pure {
            rows.push(Row { item: format!("PyTorch eager ViT-B/16 train {torch_name}"), value: format!("{theirs:.1} samples/s"), ok: None });
            if let Some(p) = json.get(format!("{key}_phases_ms")).and_then(|p| p.as_array()) {
                let p: Vec<String> = p.iter().map(|v| format!("{:.1}", v.as_f64().unwrap_or(f64::NAN))).collect();
                rows.push(Row { item: format!("  PyTorch {torch_name}: ms forward+loss / backward / AdamW"), value: p.join(" / "), ok: None });
            }
        }
        rows.push(Row { item: format!("ours {} / PyTorch {torch_name}", variant.name()), value: format!("{:.2}x", sps / theirs), ok: None });
    }
    Ok(())
}
