//! The trainer on real data: a linear base head on Fashion-MNIST-LT pixels (the features
//! any image encoder would replace), under the paper's recipe.

use candle_core::{Device, Tensor};
use rac_core::data::{DataOverrides, Dataset, Split};
use rac_core::eval::{Branch, evaluate};
use rac_core::model::{LongTailLoss, LossConfig, LossKind, Mode, ModelConfig, RacModel, Widths};
use rac_core::train::{Inputs, OptimConfig, TrainConfig, TrainHooks, predict, train};
use rac_tests::{cache, manifest};

/// Pixels scaled to [0, 1], 4x4 average-pooled to 7x7 = 49 features, as `Inputs`.
fn pixel_inputs(split: &Split) -> Inputs {
    let mut feats = Vec::with_capacity(split.len() * 49);
    for i in 0..split.len() {
        let img = split.image(i).unwrap().to_luma8();
        for by in 0..7 {
            for bx in 0..7 {
                let mut s = 0f32;
                for y in 0..4 {
                    for x in 0..4 {
                        s += img.get_pixel(bx * 4 + x, by * 4 + y)[0] as f32;
                    }
                }
                feats.push(s / (16.0 * 255.0));
            }
        }
    }
    let base = Tensor::from_vec(feats, (split.len(), 49), &Device::Cpu).unwrap();
    Inputs { base: Some(base), retrieval: None, labels: split.labels.clone() }
}

fn data() -> (Dataset, Inputs, Inputs) {
    let ds = Dataset::load(&manifest("fashion-mnist-lt.toml"), &DataOverrides::default(), &cache()).unwrap();
    let (tr, te) = (pixel_inputs(&ds.train), pixel_inputs(&ds.test));
    (ds, tr, te)
}

struct Run {
    logits: Vec<Vec<f32>>,
    losses: Vec<f64>,
}

fn run(
    ds: &Dataset,
    tr: &Inputs,
    te: &Inputs,
    kind: LossKind,
    epochs: usize,
    ckpt: Option<&std::path::Path>,
    hooks: &TrainHooks,
) -> rac_core::Result<Run> {
    let counts = ds.train_counts();
    let model_cfg = ModelConfig { mode: Mode::Base, ..ModelConfig::default() };
    let widths = Widths { base_dim: 49, text_dim: 0, num_classes: 10 };
    let model = RacModel::new(&model_cfg, widths, None, 7, &Device::Cpu)?;
    let loss = LongTailLoss::new(&LossConfig { kind, ..LossConfig::default() }, &counts, &Device::Cpu)?;
    let optim = OptimConfig { lr: 0.05, ..OptimConfig::default() };
    let cfg = TrainConfig { epochs, batch_size: 256, seed: 3, warmup_epochs: 1, ..TrainConfig::default() };
    let log = train(&model, &loss, &optim, &cfg, tr, ckpt, hooks)?;
    let out = predict(&model, te, 1024)?;
    Ok(Run { logits: out.fused.to_vec2().unwrap(), losses: log.iter().map(|l| l.loss).collect() })
}

#[test]
fn the_same_seed_gives_bit_identical_results() {
    let (ds, tr, te) = data();
    let a = run(&ds, &tr, &te, LossKind::Lace, 3, None, &TrainHooks::default()).unwrap();
    let b = run(&ds, &tr, &te, LossKind::Lace, 3, None, &TrainHooks::default()).unwrap();
    assert_eq!(a.losses, b.losses);
    assert!(a.logits == b.logits);
    assert!(a.losses[2] < a.losses[0], "training lowers the loss: {:?}", a.losses);
}

#[test]
fn a_killed_run_resumes_to_the_same_result() {
    let (ds, tr, te) = data();
    let whole = run(&ds, &tr, &te, LossKind::Lace, 4, None, &TrainHooks::default()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let hooks = TrainHooks { stop_after_epoch: Some(2), progress: rac_core::progress::Progress::Hidden };
    let err = run(&ds, &tr, &te, LossKind::Lace, 4, Some(dir.path()), &hooks).err().expect("the hook stops the run");
    assert!(matches!(err, rac_core::Error::TrainingStopped { epoch: 2 }), "{err}");
    assert!(rac_core::train::trainer::checkpoint_path(dir.path()).is_file());
    let resumed = run(&ds, &tr, &te, LossKind::Lace, 4, Some(dir.path()), &TrainHooks::default()).unwrap();
    assert_eq!(resumed.losses, whole.losses, "the log carries over and the remaining epochs match");
    assert!(resumed.logits == whole.logits, "the resumed model is bit-identical");
}

#[test]
fn logit_adjustment_helps_the_few_shot_classes() {
    let (ds, tr, te) = data();
    let counts = ds.train_counts();
    let eval = |r: &Run| {
        let t = Tensor::new(r.logits.clone(), &Device::Cpu).unwrap();
        evaluate(Branch::Base, &t, &te.labels, &counts).unwrap()
    };
    let ce = eval(&run(&ds, &tr, &te, LossKind::Ce, 20, None, &TrainHooks::default()).unwrap());
    let lace = eval(&run(&ds, &tr, &te, LossKind::Lace, 20, None, &TrainHooks::default()).unwrap());
    eprintln!("CE   all {:.2} many {:.2} medium {:.2} few {:.2}", ce.top1, ce.many, ce.medium, ce.few);
    eprintln!("LACE all {:.2} many {:.2} medium {:.2} few {:.2}", lace.top1, lace.many, lace.medium, lace.few);
    // The paper's claim for the base branch: LACE moves accuracy from the head to the tail.
    assert!(lace.few > ce.few + 5.0, "LACE few {} vs CE few {}", lace.few, ce.few);
    assert!(lace.many < ce.many, "the adjustment costs the many-shot classes on these weak features");
}
