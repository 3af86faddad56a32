//! Every loss, the fusion formula, the learning-rate schedule and gradient clipping,
//! against values computed by hand (the formula is written beside each number).

use candle_core::{Device, Tensor, Var};
use rac_core::model::{LongTailLoss, LossConfig, LossKind, Reweighting, fuse_logits};
use rac_core::train::{CosineWarmup, clip_grad_norm};

const CPU: Device = Device::Cpu;

fn cfg(kind: LossKind, smoothing: f64) -> LossConfig {
    LossConfig { kind, label_smoothing: smoothing, ..LossConfig::default() }
}

fn loss_of(config: &LossConfig, counts: &[usize], logits: &[&[f32]], targets: &[u32]) -> f64 {
    let c = logits[0].len();
    let flat: Vec<f32> = logits.iter().flat_map(|r| r.iter().copied()).collect();
    let logits = Tensor::from_vec(flat, (logits.len(), c), &CPU).unwrap();
    let targets = Tensor::new(targets, &CPU).unwrap();
    let loss = LongTailLoss::new(config, counts, &CPU).unwrap();
    loss.forward(&logits, &targets).unwrap().to_scalar::<f32>().unwrap() as f64
}

fn close(a: f64, b: f64) {
    assert!((a - b).abs() < 1e-5, "{a} != {b}");
}

#[test]
fn cross_entropy() {
    // -log(e^3 / (e^1 + e^2 + e^3)) = log(1 + e^-1 + e^-2)
    let want = (1.0 + (-1f64).exp() + (-2f64).exp()).ln();
    close(loss_of(&cfg(LossKind::Ce, 0.0), &[5, 5, 5], &[&[1.0, 2.0, 3.0]], &[2]), want);
}

#[test]
fn label_smoothing_mixes_in_the_uniform_target() {
    // (1 - 0.1) * -log p_2 + (0.1 / 3) * sum_j -log p_j, with log p_j = j + 1 - lse(1, 2, 3).
    let lse = (1f64.exp() + 2f64.exp() + 3f64.exp()).ln();
    let nll = |j: f64| lse - j;
    let want = 0.9 * nll(3.0) + 0.1 / 3.0 * (nll(1.0) + nll(2.0) + nll(3.0));
    close(loss_of(&cfg(LossKind::Ce, 0.1), &[5, 5, 5], &[&[1.0, 2.0, 3.0]], &[2]), want);
}

#[test]
fn logit_adjusted_ce_adds_tau_log_prior() {
    // counts 100/10/1 (N = 111), zero logits: softmax(log prior) is the prior itself,
    // so the loss of class 1 is -log(10/111).
    close(loss_of(&cfg(LossKind::Lace, 0.0), &[100, 10, 1], &[&[0.0, 0.0, 0.0]], &[1]), -(10f64 / 111.0).ln());
    // tau = 2 squares the prior: p_1 = 10^2 / (100^2 + 10^2 + 1^2).
    let c = LossConfig { tau: 2.0, ..cfg(LossKind::Lace, 0.0) };
    close(loss_of(&c, &[100, 10, 1], &[&[0.0, 0.0, 0.0]], &[1]), -(100f64 / 10101.0).ln());
    // tau = 0 is plain CE.
    let c = LossConfig { tau: 0.0, ..cfg(LossKind::Lace, 0.0) };
    close(loss_of(&c, &[100, 10, 1], &[&[0.0, 0.0, 0.0]], &[1]), 3f64.ln());
}

#[test]
fn balanced_ce_weights_by_inverse_count() {
    // counts 3/1: alpha ∝ (1/3, 1), mean-normalised to (0.5, 1.5).
    // l0 = log(1 + e^-2) (logits 2, 0; class 0), l1 = log 2; weighted mean (0.5 l0 + 1.5 l1) / 2.
    let (l0, l1) = ((1.0 + (-2f64).exp()).ln(), 2f64.ln());
    let want = (0.5 * l0 + 1.5 * l1) / 2.0;
    close(loss_of(&cfg(LossKind::Balce, 0.0), &[3, 1], &[&[2.0, 0.0], &[0.0, 0.0]], &[0, 1]), want);
    // CE on the same batch is the plain mean.
    close(loss_of(&cfg(LossKind::Ce, 0.0), &[3, 1], &[&[2.0, 0.0], &[0.0, 0.0]], &[0, 1]), (l0 + l1) / 2.0);
}

#[test]
fn ldam_subtracts_a_margin_from_the_true_class() {
    // counts 16/1: N^-1/4 = (0.5, 1), scaled so the largest margin is 0.5: m = (0.25, 0.5).
    // Class 1 at zero logits: adjusted (0, -0.5), loss = log(1 + e^0.5).
    close(loss_of(&cfg(LossKind::Ldam, 0.0), &[16, 1], &[&[0.0, 0.0]], &[1]), (1.0 + 0.5f64.exp()).ln());
    // Class 0: adjusted (-0.25, 0), loss = log(1 + e^0.25). The margin only touches the true class.
    close(loss_of(&cfg(LossKind::Ldam, 0.0), &[16, 1], &[&[0.0, 0.0]], &[0]), (1.0 + 0.25f64.exp()).ln());
}

#[test]
fn reweighting_schemes() {
    let alpha = |r: Reweighting, counts: &[usize]| -> Vec<f32> {
        let c = LossConfig { reweighting: r, ..cfg(LossKind::Ce, 0.0) };
        LongTailLoss::new(&c, counts, &CPU).unwrap().alpha().to_vec1().unwrap()
    };
    // 1/sqrt(4), 1/sqrt(1) = (0.5, 1), mean 0.75 -> (2/3, 4/3).
    let a = alpha(Reweighting::InverseSqrt, &[4, 1]);
    close(a[0] as f64, 2.0 / 3.0);
    close(a[1] as f64, 4.0 / 3.0);
    // 1/ln(e^2), 1/ln(e) with counts 7 and 3: (1/ln 7, 1/ln 3) normalised to mean 1.
    let a = alpha(Reweighting::InverseLog, &[7, 3]);
    let (x, y) = (1.0 / 7f64.ln(), 1.0 / 3f64.ln());
    close(a[0] as f64, 2.0 * x / (x + y));
    close(a[1] as f64, 2.0 * y / (x + y));
    assert_eq!(alpha(Reweighting::None, &[9, 1]), [1.0, 1.0]);
    assert_eq!(alpha(Reweighting::Default, &[9, 1]), [1.0, 1.0], "CE's own weighting is 1");
}

#[test]
fn the_loss_rejects_bad_targets_and_shapes() {
    let loss = LongTailLoss::new(&LossConfig::default(), &[3, 2], &CPU).unwrap();
    let logits = Tensor::zeros((1, 2), candle_core::DType::F32, &CPU).unwrap();
    let err = loss.forward(&logits, &Tensor::new(&[5u32], &CPU).unwrap()).unwrap_err();
    assert!(matches!(err, rac_core::Error::LabelOutOfRange { label: 5, classes: 2, .. }), "{err}");
    assert!(err.to_string().contains("a target: label 5 is out of range for 2 classes"), "{err}");
    let logits3 = Tensor::zeros((1, 3), candle_core::DType::F32, &CPU).unwrap();
    assert!(loss.forward(&logits3, &Tensor::new(&[0u32], &CPU).unwrap()).is_err());
    assert!(LongTailLoss::new(&LossConfig::default(), &[3, 0], &CPU).is_err(), "an empty class has no prior");
}

#[test]
fn fusion_is_half_l_times_the_sum_of_unit_vectors() {
    // base (3, 4) -> (0.6, 0.8); retrieval (1, 0) -> (1, 0); L = 2 so L/2 = 1.
    let base = Tensor::new(&[[3f32, 4.0], [0.0, 2.0]], &CPU).unwrap();
    let ret = Tensor::new(&[[1f32, 0.0], [0.0, -5.0]], &CPU).unwrap();
    let f: Vec<Vec<f32>> = fuse_logits(&base, &ret).unwrap().to_vec2().unwrap();
    for (got, want) in f.iter().flatten().zip([1.6f32, 0.8, 0.0, 0.0]) {
        assert!((got - want).abs() < 1e-6, "{f:?}");
    }
    // L = 4: each unit vector is scaled by 2.
    let base = Tensor::new(&[[1f32, 0.0, 0.0, 0.0]], &CPU).unwrap();
    let ret = Tensor::new(&[[0f32, 0.0, 0.0, 7.0]], &CPU).unwrap();
    assert_eq!(fuse_logits(&base, &ret).unwrap().to_vec2::<f32>().unwrap(), [[2.0, 0.0, 0.0, 2.0]]);
    assert!(fuse_logits(&base, &Tensor::zeros((1, 3), candle_core::DType::F32, &CPU).unwrap()).is_err());
}

#[test]
fn schedule_boundaries() {
    let s = CosineWarmup { lr: 5e-5, warmup_lr: 1e-7, min_lr: 1e-7, warmup_steps: 5, total_steps: 15 };
    close(s.lr_at(0), 1e-7); // warm-up start
    close(s.lr_at(2), 1e-7 + (5e-5 - 1e-7) * 2.0 / 5.0);
    close(s.lr_at(5), 5e-5); // warm-up end: the peak
    // Half-way through the decay (steps 5..=14, so step 9.5): the midpoint of lr and min_lr.
    close(s.lr_at(14), 1e-7); // the final step reaches min_lr
    let mid = 1e-7 + 0.5 * (5e-5 - 1e-7) * (1.0 + (std::f64::consts::PI * 4.0 / 9.0).cos());
    close(s.lr_at(9), mid);
    assert!(s.lr_at(6) < s.lr_at(5) && s.lr_at(13) > s.lr_at(14));
    // No warm-up: step 0 is the peak.
    let s = CosineWarmup { warmup_steps: 0, ..s };
    close(s.lr_at(0), 5e-5);
}

#[test]
fn clipping_at_its_boundaries() {
    let v = Var::new(&[0f32, 0.0], &CPU).unwrap();
    let grads_for = |c: [f32; 2]| {
        let loss = (v.as_tensor() * Tensor::new(&c, &CPU).unwrap()).unwrap().sum_all().unwrap();
        loss.backward().unwrap()
    };
    let g = |grads: &candle_core::backprop::GradStore| grads.get(v.as_tensor()).unwrap().to_vec1::<f32>().unwrap();

    // Norm 5 > 1: scaled by 1 / (5 + 1e-6).
    let mut grads = grads_for([3.0, 4.0]);
    let norm = clip_grad_norm(&mut grads, std::slice::from_ref(&v), 1.0).unwrap();
    close(norm, 5.0);
    let s = 1.0 / (5.0 + 1e-6);
    let got = g(&grads);
    close(got[0] as f64, 3.0 * s);
    close(got[1] as f64, 4.0 * s);

    // Norm exactly at the limit, and below it: untouched.
    let mut grads = grads_for([0.6, 0.8]);
    clip_grad_norm(&mut grads, std::slice::from_ref(&v), 1.0).unwrap();
    assert_eq!(g(&grads), [0.6, 0.8]);
    let mut grads = grads_for([0.3, 0.4]);
    close(clip_grad_norm(&mut grads, std::slice::from_ref(&v), 1.0).unwrap(), 0.5);
    assert_eq!(g(&grads), [0.3, 0.4]);
}
