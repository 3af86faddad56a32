//! Encoders on real weights: EfficientNet-Lite0's ImageNet classes on sample photos and its
//! stem against plain loops, MiniLM against an independent reference, ViT and CLIP loaders on
//! small weights written here in the Hugging Face layout, the bag-of-words encoders, and the
//! errors bad input gets.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Module, Tensor};
use rac_core::Error;
use rac_core::data::Preprocess;
use rac_core::encoders::depthwise::{DepthwiseConv2d, same_padding};
use rac_core::encoders::tokenize::TextTokenizer;
use rac_core::encoders::{
    ClipTextEncoder, ClipVisionEncoder, EfficientNet, EfficientNetConfig, ImageEncoder, ImageEncoderSpec, LearnedBow, MiniLm, RandomBow, TextEncoder,
    VitConfig, VitEncoder,
};
use rac_tests::asset;

// ---- helpers ------------------------------------------------------------------------------

fn cpu() -> Device {
    Device::Cpu
}

fn efficientnet() -> EfficientNet {
    let path = asset("efficientnet-lite0").join("model.safetensors");
    EfficientNet::load(&path, EfficientNetConfig::lite0(), &cpu()).expect("EfficientNet-Lite0 loads")
}

fn photo(name: &str) -> image::DynamicImage {
    image::open(asset("sample-photos").join(name)).expect("sample photo decodes")
}

/// Deterministic pseudo-random values in [-scale, scale) (a 64-bit LCG), for weights and inputs.
fn pseudo(n: usize, seed: u64, scale: f32) -> Vec<f32> {
    let mut s = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * scale
        })
        .collect()
}

fn tensor(shape: &[usize], seed: u64, scale: f32) -> Tensor {
    let n = shape.iter().product();
    Tensor::from_vec(pseudo(n, seed, scale), shape, &cpu()).unwrap()
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    (a - b).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap()
}

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let na: f32 = a.iter().map(|x| x * x).sum::<f32>().sqrt();
    let nb: f32 = b.iter().map(|x| x * x).sum::<f32>().sqrt();
    dot / (na * nb)
}

// ---- EfficientNet-Lite0 -------------------------------------------------------------------

#[test]
fn efficientnet_top1_on_sample_photos_is_the_right_imagenet_class() {
    let net = efficientnet();
    let photos = ["chelsea.png", "coffee.png", "motorcycle_left.png", "rocket.jpg"].map(photo);
    let top = net.top_k(&photos, 5).unwrap();
    let top1: Vec<usize> = top.iter().map(|t| t[0]).collect();
    eprintln!("top-5 per photo: {top:?}");
    // chelsea: a tabby cat (281 tabby, 282 tiger cat, 283 Persian, 284 Siamese, 285 Egyptian cat).
    assert!((281..=285).contains(&top1[0]), "chelsea → {}", top1[0]);
    // coffee: 967 espresso, 968 cup, 504 coffee mug.
    assert!([967, 968, 504].contains(&top1[1]), "coffee → {}", top1[1]);
    // motorcycle_left: a red motorbike; 665 moped or 670 motor scooter.
    assert!([665, 670].contains(&top1[2]), "motorcycle_left → {}", top1[2]);
    // rocket: a launch; 657 missile, 744 projectile, 812 space shuttle.
    assert!([657, 744, 812].contains(&top1[3]), "rocket → {}", top1[3]);
}

#[test]
fn efficientnet_features_are_1280d_and_the_logits_are_their_fc() {
    let net = efficientnet();
    let imgs = [photo("chelsea.png"), photo("coffee.png")];
    let f = net.encode(&imgs).unwrap();
    assert_eq!(f.dims(), [2, 1280]);
    // ReLU6 before the average pool: every feature lies in [0, 6].
    let v = f.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    assert!(v.iter().all(|&x| (0.0..=6.0).contains(&x)));
    assert!(v.iter().filter(|&&x| x > 0.0).count() > 500, "features are mostly zero");
    let via_features = net.classify_features(&f).unwrap();
    assert!(max_abs_diff(&via_features, &net.logits(&imgs).unwrap()) < 1e-4);
    // A batch gives each image the features it gets alone.
    let alone = net.encode(&imgs[1..]).unwrap();
    assert!(max_abs_diff(&alone, &f.narrow(0, 1, 1).unwrap()) < 1e-4);
}

/// The stem (SAME padding, 3×3 stride-2 convolution, BatchNorm eval with eps 1e-3, ReLU6)
/// computed with plain loops from the raw tensors of the weights file.
#[test]
fn efficientnet_stem_matches_plain_loops() {
    let net = efficientnet();
    let raw = candle_core::safetensors::load(asset("efficientnet-lite0").join("model.safetensors"), &cpu()).unwrap();
    let get = |n: &str| raw[n].flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let (w, gamma, beta, mean, var) =
        (get("_conv_stem.weight"), get("_bn0.weight"), get("_bn0.bias"), get("_bn0.running_mean"), get("_bn0.running_var"));
    // Odd and even sides, so that both the symmetric and the asymmetric padding are tested.
    let (n, h, wd) = (2usize, 9usize, 12usize);
    let x = pseudo(n * 3 * h * wd, 7, 2.0);
    let (oh, ow) = (h.div_ceil(2), wd.div_ceil(2));
    let (pt, _) = same_padding(h, 3, 2);
    let (pl, _) = same_padding(wd, 3, 2);
    assert_eq!((pt, pl), (1, 0), "TF SAME: 9 → pad 1+1, 12 → pad 0+1");
    let mut expected = vec![0f32; n * 32 * oh * ow];
    for b in 0..n {
        for co in 0..32 {
            for oy in 0..oh {
                for ox in 0..ow {
                    let mut acc = 0f64;
                    for ci in 0..3 {
                        for ky in 0..3 {
                            for kx in 0..3 {
                                let iy = (oy * 2 + ky) as isize - pt as isize;
                                let ix = (ox * 2 + kx) as isize - pl as isize;
                                if iy < 0 || ix < 0 || iy >= h as isize || ix >= wd as isize {
                                    continue;
                                }
                                let xv = x[((b * 3 + ci) * h + iy as usize) * wd + ix as usize] as f64;
                                acc += xv * w[((co * 3 + ci) * 3 + ky) * 3 + kx] as f64;
                            }
                        }
                    }
                    let bn = (acc - mean[co] as f64) / (var[co] as f64 + 1e-3).sqrt() * gamma[co] as f64 + beta[co] as f64;
                    expected[((b * 32 + co) * oh + oy) * ow + ox] = bn.clamp(0.0, 6.0) as f32;
                }
            }
        }
    }
    let input = Tensor::from_vec(x, (n, 3, h, wd), &cpu()).unwrap();
    let got = net.stem(&input).unwrap();
    assert_eq!(got.dims(), [n, 32, oh, ow]);
    let expected = Tensor::from_vec(expected, (n, 32, oh, ow), &cpu()).unwrap();
    let diff = max_abs_diff(&got, &expected);
    assert!(diff < 1e-4, "stem differs from the plain-loop reference by {diff}");
}

/// The CPU kernels (im2col stem, depthwise loop, fused bias + ReLU6) against the candle-ops
/// path that runs off the CPU, on the whole network at 64 px.
#[test]
fn efficientnet_cpu_kernels_match_the_candle_ops_path() {
    let mut config = EfficientNetConfig::lite0();
    config.preprocess.resize = 73;
    config.preprocess.crop = 64;
    let path = asset("efficientnet-lite0").join("model.safetensors");
    let net = EfficientNet::load(&path, config, &cpu()).unwrap();
    let pixels = rac_core::encoders::pixels::images_to_pixels(&[photo("chelsea.png"), photo("rocket.jpg")], net.preprocess(), &cpu()).unwrap();
    let fast = net.features(&pixels).unwrap();
    let reference = net.features_candle_ops(&pixels).unwrap();
    let diff = max_abs_diff(&fast, &reference);
    assert!(diff < 1e-3, "the two paths differ by {diff}");
}

#[test]
fn depthwise_op_matches_candle_grouped_convolution() {
    for (k, s, h, w) in [(3, 1, 7, 6), (3, 2, 9, 8), (5, 1, 6, 7), (5, 2, 11, 10)] {
        let c = 5;
        let x = tensor(&[2, h, w, c], 11, 1.0);
        let wt = tensor(&[c, 1, k, k], 12, 0.5);
        let b = tensor(&[c], 13, 0.5);
        let got = DepthwiseConv2d::new(&wt, &b, s, false).unwrap().forward(&x).unwrap();
        let (pt, pb) = same_padding(h, k, s);
        let (pl, pr) = same_padding(w, k, s);
        let nchw = x.permute((0, 3, 1, 2)).unwrap().pad_with_zeros(2, pt, pb).unwrap().pad_with_zeros(3, pl, pr).unwrap();
        let reference =
            nchw.conv2d(&wt, 0, s, 1, c).unwrap().broadcast_add(&b.reshape((1, c, 1, 1)).unwrap()).unwrap().permute((0, 2, 3, 1)).unwrap();
        assert_eq!(got.dims(), reference.dims());
        assert!(max_abs_diff(&got, &reference) < 1e-5, "k={k} s={s}");
        // The path off the CPU (a sum over taps), with and without the fused ReLU6.
        for relu6 in [false, true] {
            let op = DepthwiseConv2d::new(&wt, &b, s, relu6).unwrap();
            let taps = op.forward_candle(&x).unwrap();
            let grouped = op.forward_grouped(&x).unwrap();
            assert_eq!(taps.dims(), reference.dims());
            assert!(max_abs_diff(&taps, &grouped) < 1e-5, "taps, k={k} s={s} relu6={relu6}");
            if !relu6 {
                assert!(max_abs_diff(&taps, &reference) < 1e-5, "taps against conv2d, k={k} s={s}");
            }
        }
    }
}

#[test]
fn efficientnet_fingerprint_is_stable_and_covers_the_preprocessing() {
    let a = efficientnet();
    let b = efficientnet();
    assert_eq!(a.fingerprint(), b.fingerprint());
    assert_eq!(a.fingerprint().len(), 16);
    let mut config = EfficientNetConfig::lite0();
    config.preprocess.mean = [0.485, 0.456, 0.406];
    let path = asset("efficientnet-lite0").join("model.safetensors");
    let c = EfficientNet::load(&path, config, &cpu()).unwrap();
    assert_ne!(a.fingerprint(), c.fingerprint());
    // The documented normalisation of the TF Lite checkpoints.
    assert_eq!(a.preprocess().mean, [127.0 / 255.0; 3]);
    assert_eq!(a.preprocess().std, [128.0 / 255.0; 3]);
    assert_eq!(a.input_size(), 224);
}

// ---- MiniLM ---------------------------------------------------------------------------------

fn minilm() -> MiniLm {
    MiniLm::load_default(&asset("minilm"), &cpu()).expect("MiniLM loads")
}

#[test]
fn minilm_similarities_are_those_of_the_published_model() {
    let m = minilm();
    let e = m.encode(&["a photo of a cat", "a picture of a kitten", "quarterly tax report"]).unwrap();
    assert_eq!(e.dims(), [3, 384]);
    let rows = e.to_vec2::<f32>().unwrap();
    for r in &rows {
        let norm: f32 = r.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-4, "embeddings are L2-normalised");
    }
    let (kitten, tax) = (cosine(&rows[0], &rows[1]), cosine(&rows[0], &rows[2]));
    eprintln!("cos(cat, kitten) = {kitten:.4}, cos(cat, tax) = {tax:.4}");
    assert!(kitten > 0.6, "{kitten}");
    assert!(tax < 0.3, "{tax}");
}

/// Reference values of the embedding of `REF_SENTENCE`, computed once outside the project:
/// a short numpy implementation of the BERT forward pass (post-LayerNorm, erf GELU, float64)
/// reading the asset's `model.safetensors` with the PyPI `safetensors` package, tokenised
/// with the PyPI `tokenizers` package from the same `tokenizer.json` (14 tokens, [CLS] …
/// [SEP]), then mean pooling over the tokens and L2 normalisation. The same script gave
/// cos(cat, kitten) = 0.7948 and cos(cat, tax) = 0.0822.
const REF_SENTENCE: &str = "A cat sits on the mat next to a red ball.";
const REF_FIRST16: [f32; 16] = [
    0.162419, -0.020226, -0.054379, 0.01136, -0.048125, 0.085924, 0.073234, 0.067025, 0.025816, 0.04031, -0.041266, 0.06404, -0.013871, 0.058801,
    0.018779, -0.046763,
];
/// Dimensions 0, 24, 48, …, 360.
const REF_EVERY24: [f32; 16] = [
    0.162419, -0.082125, 0.048337, 0.0044, -0.026039, 0.087369, -0.021723, 0.055044, 0.027228, -0.04768, -0.091834, 0.05011, -0.000167, -0.058823,
    -0.100468, 0.026643,
];

#[test]
fn minilm_embedding_matches_the_numpy_reference() {
    let m = minilm();
    let batch = m.tokenize(&[REF_SENTENCE]).unwrap();
    assert_eq!(batch.lengths, [14]);
    let e = m.encode(&[REF_SENTENCE]).unwrap().to_vec2::<f32>().unwrap().remove(0);
    for (i, &r) in REF_FIRST16.iter().enumerate() {
        assert!((e[i] - r).abs() < 1e-3, "dim {i}: {} vs {r}", e[i]);
    }
    for (j, &r) in REF_EVERY24.iter().enumerate() {
        assert!((e[24 * j] - r).abs() < 1e-3, "dim {}: {} vs {r}", 24 * j, e[24 * j]);
    }
}

#[test]
fn minilm_pads_and_truncates_without_changing_the_embedding() {
    let m = minilm();
    let long = "word ".repeat(200);
    let batch = m.tokenize(&["a cat", &long]).unwrap();
    assert_eq!(batch.ids.dims(), [2, 76], "the default maximum is 76 tokens");
    assert_eq!(batch.lengths, [4, 76]);
    let tokens = m.token_features(&batch).unwrap();
    assert_eq!(tokens.dims(), [2, 76, 384]);
    // Padding must not change a text's embedding.
    let alone = m.encode(&["a cat"]).unwrap();
    let padded = m.pool(&batch).unwrap().narrow(0, 0, 1).unwrap();
    assert!(max_abs_diff(&alone, &padded) < 1e-5);
    // The parameters are trainable Vars named as in the file.
    let vars = m.varmap().unwrap().data().lock().unwrap();
    assert!(vars.contains_key("embeddings.word_embeddings.weight"));
    assert!(vars.contains_key("encoder.layer.5.output.LayerNorm.bias"));
    assert_eq!(vars.len(), 101, "6 layers x 16 tensors + 3 embedding tables and their LayerNorm pair");
}

// ---- ViT and CLIP loaders on small Hugging Face-layout weights ------------------------------

struct Scratch(tempfile::TempDir);

impl Scratch {
    fn new() -> Self {
        Scratch(tempfile::tempdir().unwrap())
    }
    fn path(&self) -> PathBuf {
        self.0.path().to_path_buf()
    }
}

fn save(dir: &Path, tensors: &HashMap<String, Tensor>) {
    candle_core::safetensors::save(tensors, dir.join("model.safetensors")).unwrap();
}

/// A 2-layer, 32-wide ViT on 32×32 images with 8×8 patches, in `ViTModel` names (or
/// `ViTForImageClassification` names with `prefix = "vit."`).
fn small_vit(dir: &Path, prefix: &str) -> HashMap<String, Tensor> {
    let (h, i, p, layers) = (32, 64, 8, 2);
    let np = (32 / p) * (32 / p);
    std::fs::write(
        dir.join("config.json"),
        format!(
            r#"{{"model_type": "vit", "hidden_size": {h}, "num_hidden_layers": {layers}, "num_attention_heads": 4,
               "intermediate_size": {i}, "hidden_act": "gelu", "layer_norm_eps": 1e-12, "image_size": 32,
               "patch_size": {p}, "num_channels": 3, "qkv_bias": true}}"#
        ),
    )
    .unwrap();
    let mut t = HashMap::new();
    let mut seed = 100;
    let mut put = |name: String, shape: &[usize]| {
        seed += 1;
        t.insert(format!("{prefix}{name}"), tensor(shape, seed, 0.2));
    };
    put("embeddings.cls_token".into(), &[1, 1, h]);
    put("embeddings.position_embeddings".into(), &[1, np + 1, h]);
    put("embeddings.patch_embeddings.projection.weight".into(), &[h, 3, p, p]);
    put("embeddings.patch_embeddings.projection.bias".into(), &[h]);
    for l in 0..layers {
        let q = format!("encoder.layer.{l}.");
        for m in ["attention.attention.query", "attention.attention.key", "attention.attention.value", "attention.output.dense"] {
            put(format!("{q}{m}.weight"), &[h, h]);
            put(format!("{q}{m}.bias"), &[h]);
        }
        put(format!("{q}intermediate.dense.weight"), &[i, h]);
        put(format!("{q}intermediate.dense.bias"), &[i]);
        put(format!("{q}output.dense.weight"), &[h, i]);
        put(format!("{q}output.dense.bias"), &[h]);
        for ln in ["layernorm_before", "layernorm_after"] {
            put(format!("{q}{ln}.weight"), &[h]);
            put(format!("{q}{ln}.bias"), &[h]);
        }
    }
    put("layernorm.weight".into(), &[h]);
    put("layernorm.bias".into(), &[h]);
    save(dir, &t);
    t
}

#[test]
fn vit_loads_small_hf_weights_and_is_deterministic() {
    for prefix in ["", "vit."] {
        let s = Scratch::new();
        small_vit(&s.path(), prefix);
        let a = VitEncoder::load(&s.path(), None, &cpu()).unwrap();
        let b = VitEncoder::load(&s.path(), None, &cpu()).unwrap();
        let x = tensor(&[3, 3, 32, 32], 5, 1.0);
        let fa = a.forward(&x).unwrap();
        assert_eq!(fa.dims(), [3, 32], "CLS token of width 32");
        assert_eq!(fa.to_vec2::<f32>().unwrap(), b.forward(&x).unwrap().to_vec2::<f32>().unwrap());
        assert_eq!(a.fingerprint(), b.fingerprint());
        // Different images get different features.
        let rows = fa.to_vec2::<f32>().unwrap();
        assert!(rows[0] != rows[1]);
        // Decoded images go through the folder's preprocessing (default mean/std 0.5).
        assert_eq!(a.encode(&[photo("coffee.png")]).unwrap().dims(), [1, 32]);
        assert_eq!(a.preprocess().mean, [0.5; 3]);
    }
}

/// Our ViT (patch embedding as a matrix product) against candle-transformers' reference
/// path (patch embedding as a stride-p convolution), on the same small weights.
#[test]
fn vit_matches_the_convolutional_reference_path() {
    use candle_transformers::models::vit;
    let s = Scratch::new();
    small_vit(&s.path(), "");
    let ours = VitEncoder::load(&s.path(), None, &cpu()).unwrap();
    let cfg = ours.config().to_candle();
    let vb = unsafe { candle_nn::VarBuilder::from_mmaped_safetensors(&[s.path().join("model.safetensors")], DType::F32, &cpu()).unwrap() };
    let embeddings = vit::Embeddings::new(&cfg, false, vb.pp("embeddings")).unwrap();
    let encoder = vit::Encoder::new(&cfg, vb.pp("encoder")).unwrap();
    let layernorm = candle_nn::layer_norm(cfg.hidden_size, cfg.layer_norm_eps, vb.pp("layernorm")).unwrap();
    let x = tensor(&[2, 3, 32, 32], 9, 1.0);
    let h = encoder.forward(&embeddings.forward(&x, None, false).unwrap()).unwrap();
    let reference = layernorm.forward(&h.narrow(1, 0, 1).unwrap().squeeze(1).unwrap()).unwrap();
    let got = ours.forward(&x).unwrap();
    assert!(max_abs_diff(&got, &reference) < 1e-5, "max diff {}", max_abs_diff(&got, &reference));
}

#[test]
fn vit_presets_are_vit_b16_and_b32() {
    let b16 = VitConfig::base_patch16_224();
    let b32 = VitConfig::base_patch32_224();
    assert_eq!((b16.hidden_size, b16.num_hidden_layers, b16.num_attention_heads, b16.patch_size, b16.image_size), (768, 12, 12, 16, 224));
    assert_eq!((b32.patch_size, b32.intermediate_size), (32, 3072));
    // A folder without config.json takes the preset; a preset that disagrees with the
    // folder's config.json is an error naming the field.
    let s = Scratch::new();
    small_vit(&s.path(), "");
    let msg = VitEncoder::load(&s.path(), Some(b16.clone()), &cpu()).err().unwrap().to_string();
    assert!(msg.contains("config.json") && msg.contains("hidden_size"), "{msg}");
    std::fs::remove_file(s.path().join("config.json")).unwrap();
    let msg = VitEncoder::load(&s.path(), Some(b16), &cpu()).err().unwrap().to_string();
    assert!(msg.contains("embeddings.cls_token") && msg.contains("expected shape [1, 1, 768], found [1, 1, 32]"), "{msg}");
    let msg = VitEncoder::load(&s.path(), None, &cpu()).err().unwrap().to_string();
    assert!(msg.contains("ViT config not found"), "{msg}");
}

#[test]
fn vit_missing_tensor_or_wrong_shape_names_the_tensor() {
    let s = Scratch::new();
    let mut t = small_vit(&s.path(), "");
    t.remove("encoder.layer.1.attention.attention.key.weight");
    save(&s.path(), &t);
    let err = VitEncoder::load(&s.path(), None, &cpu()).err().unwrap();
    assert!(matches!(&err, Error::Tensor { name, .. } if name == "encoder.layer.1.attention.attention.key.weight"), "{err}");
    assert!(err.to_string().contains("model.safetensors") && err.to_string().contains("missing"), "{err}");

    let mut t = small_vit(&s.path(), "");
    t.insert("encoder.layer.0.intermediate.dense.weight".into(), tensor(&[65, 32], 1, 0.1));
    save(&s.path(), &t);
    let err = VitEncoder::load(&s.path(), None, &cpu()).err().unwrap();
    assert!(matches!(&err, Error::Tensor { name, .. } if name == "encoder.layer.0.intermediate.dense.weight"), "{err}");
    assert!(err.to_string().contains("[64, 32]") && err.to_string().contains("[65, 32]"), "{err}");
}

/// A small CLIP: a 2-layer, 32-wide vision tower on 32×32 images and a 2-layer, 32-wide text
/// tower with a 12-token vocabulary and 16 positions, both projected to 16, plus a word-level
/// `tokenizer.json` that wraps texts in `<|startoftext|>` … `<|endoftext|>` as CLIP's does.
fn small_clip(dir: &Path) -> HashMap<String, Tensor> {
    let (h, i, p, layers, proj, vocab, pos) = (32, 64, 8, 2, 16, 12, 16);
    std::fs::write(
        dir.join("config.json"),
        format!(
            r#"{{"model_type": "clip", "projection_dim": {proj},
               "text_config": {{"hidden_size": {h}, "intermediate_size": {i}, "num_hidden_layers": {layers}, "num_attention_heads": 4,
                               "vocab_size": {vocab}, "max_position_embeddings": {pos}, "hidden_act": "quick_gelu"}},
               "vision_config": {{"hidden_size": {h}, "intermediate_size": {i}, "num_hidden_layers": {layers}, "num_attention_heads": 4,
                                 "image_size": 32, "patch_size": {p}, "hidden_act": "quick_gelu"}}}}"#
        ),
    )
    .unwrap();
    let words = ["a", "photo", "of", "cat", "dog", "the", "red", "ball", "on", "mat"];
    let mut vocab_json: Vec<String> = vec!["\"<|startoftext|>\": 0".into(), "\"<|endoftext|>\": 1".into()];
    vocab_json.extend(words.iter().enumerate().map(|(k, w)| format!("\"{w}\": {}", k + 2)));
    let special = |id: usize, c: &str| {
        format!(r#"{{"id": {id}, "content": "{c}", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true}}"#)
    };
    std::fs::write(
        dir.join("tokenizer.json"),
        format!(
            r#"{{"version": "1.0", "truncation": null, "padding": null,
               "added_tokens": [{}, {}],
               "normalizer": {{"type": "Lowercase"}}, "pre_tokenizer": {{"type": "Whitespace"}},
               "post_processor": {{"type": "TemplateProcessing",
                   "single": [{{"SpecialToken": {{"id": "<|startoftext|>", "type_id": 0}}}}, {{"Sequence": {{"id": "A", "type_id": 0}}}}, {{"SpecialToken": {{"id": "<|endoftext|>", "type_id": 0}}}}],
                   "pair": [{{"Sequence": {{"id": "A", "type_id": 0}}}}, {{"Sequence": {{"id": "B", "type_id": 1}}}}],
                   "special_tokens": {{"<|startoftext|>": {{"id": "<|startoftext|>", "ids": [0], "tokens": ["<|startoftext|>"]}},
                                      "<|endoftext|>": {{"id": "<|endoftext|>", "ids": [1], "tokens": ["<|endoftext|>"]}}}}}},
               "decoder": null,
               "model": {{"type": "WordLevel", "vocab": {{{}}}, "unk_token": "<|endoftext|>"}}}}"#,
            special(0, "<|startoftext|>"),
            special(1, "<|endoftext|>"),
            vocab_json.join(", ")
        ),
    )
    .unwrap();
    let mut t = HashMap::new();
    let mut seed = 500;
    let mut put = |name: String, shape: &[usize]| {
        seed += 1;
        t.insert(name, tensor(shape, seed, 0.2));
    };
    let tower = |put: &mut dyn FnMut(String, &[usize]), root: &str| {
        for l in 0..layers {
            let q = format!("{root}.encoder.layers.{l}.");
            for m in ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.out_proj"] {
                put(format!("{q}{m}.weight"), &[h, h]);
                put(format!("{q}{m}.bias"), &[h]);
            }
            put(format!("{q}mlp.fc1.weight"), &[i, h]);
            put(format!("{q}mlp.fc1.bias"), &[i]);
            put(format!("{q}mlp.fc2.weight"), &[h, i]);
            put(format!("{q}mlp.fc2.bias"), &[h]);
            for ln in ["layer_norm1", "layer_norm2"] {
                put(format!("{q}{ln}.weight"), &[h]);
                put(format!("{q}{ln}.bias"), &[h]);
            }
        }
    };
    tower(&mut put, "vision_model");
    tower(&mut put, "text_model");
    let np = (32 / p) * (32 / p);
    put("vision_model.embeddings.class_embedding".into(), &[h]);
    put("vision_model.embeddings.patch_embedding.weight".into(), &[h, 3, p, p]);
    put("vision_model.embeddings.position_embedding.weight".into(), &[np + 1, h]);
    for ln in ["vision_model.pre_layrnorm", "vision_model.post_layernorm", "text_model.final_layer_norm"] {
        put(format!("{ln}.weight"), &[h]);
        put(format!("{ln}.bias"), &[h]);
    }
    put("visual_projection.weight".into(), &[proj, h]);
    put("text_model.embeddings.token_embedding.weight".into(), &[vocab, h]);
    put("text_model.embeddings.position_embedding.weight".into(), &[pos, h]);
    put("text_projection.weight".into(), &[proj, h]);
    t.insert("logit_scale".into(), Tensor::new(2.6592f32, &cpu()).unwrap());
    save(dir, &t);
    t
}

#[test]
fn clip_vision_loads_small_hf_weights_and_is_deterministic() {
    let s = Scratch::new();
    small_clip(&s.path());
    let a = ClipVisionEncoder::load(&s.path(), &cpu()).unwrap();
    let b = ClipVisionEncoder::load(&s.path(), &cpu()).unwrap();
    let x = tensor(&[2, 3, 32, 32], 9, 1.0);
    let fa = a.forward(&x).unwrap();
    assert_eq!(fa.dims(), [2, 16], "projected to projection_dim");
    assert_eq!(fa.to_vec2::<f32>().unwrap(), b.forward(&x).unwrap().to_vec2::<f32>().unwrap());
    assert_eq!(a.preprocess().mean, rac_core::encoders::clip::CLIP_MEAN);
    assert_eq!(a.encode(&[photo("chelsea.png")]).unwrap().dims(), [1, 16]);
}

#[test]
fn clip_text_loads_small_hf_weights_pools_the_end_token_and_is_trainable() {
    let s = Scratch::new();
    small_clip(&s.path());
    let a = ClipTextEncoder::load(&s.path(), 8, &cpu()).unwrap();
    let b = ClipTextEncoder::load(&s.path(), 8, &cpu()).unwrap();
    let texts = ["a photo of a cat", "the red ball on the mat of the dog"];
    let batch = a.tokenize(&texts).unwrap();
    assert_eq!(batch.lengths, [7, 8], "start + words + end, truncated to 8");
    assert_eq!(a.token_features(&batch).unwrap().dims(), [2, 8, 32]);
    let e = a.encode(&texts).unwrap();
    assert_eq!(e.dims(), [2, 16]);
    assert_eq!(e.to_vec2::<f32>().unwrap(), b.encode(&texts).unwrap().to_vec2::<f32>().unwrap());
    // The causal mask keeps padding away from the end token: a text encodes the same alone.
    let alone = a.encode(&texts[..1]).unwrap();
    assert!(max_abs_diff(&alone, &e.narrow(0, 0, 1).unwrap()) < 1e-5);
    let vars = a.varmap().unwrap().data().lock().unwrap();
    assert!(vars.contains_key("text_model.embeddings.token_embedding.weight") && vars.contains_key("text_projection.weight"));
    assert!(!vars.keys().any(|k| k.starts_with("vision_model")), "only the text tower is trainable here");
    drop(vars);
    // More tokens than positions is refused.
    let msg = ClipTextEncoder::load(&s.path(), 17, &cpu()).err().unwrap().to_string();
    assert!(msg.contains("at most 16 tokens"), "{msg}");
}

#[test]
fn clip_missing_tensor_or_wrong_shape_names_the_tensor() {
    let s = Scratch::new();
    let mut t = small_clip(&s.path());
    t.remove("vision_model.embeddings.class_embedding");
    save(&s.path(), &t);
    let err = ClipVisionEncoder::load(&s.path(), &cpu()).err().unwrap();
    assert!(matches!(&err, Error::Tensor { name, .. } if name == "vision_model.embeddings.class_embedding"), "{err}");

    let mut t = small_clip(&s.path());
    t.remove("text_model.encoder.layers.1.mlp.fc2.bias");
    save(&s.path(), &t);
    let err = ClipTextEncoder::load(&s.path(), 8, &cpu()).err().unwrap();
    assert!(matches!(&err, Error::Tensor { name, .. } if name == "text_model.encoder.layers.1.mlp.fc2.bias"), "{err}");

    let mut t = small_clip(&s.path());
    t.insert("vision_model.encoder.layers.0.self_attn.q_proj.weight".into(), tensor(&[32, 31], 1, 0.1));
    save(&s.path(), &t);
    let err = ClipVisionEncoder::load(&s.path(), &cpu()).err().unwrap();
    assert!(matches!(&err, Error::Tensor { name, .. } if name == "vision_model.encoder.layers.0.self_attn.q_proj.weight"), "{err}");
    assert!(err.to_string().contains("[32, 31]"), "{err}");

    let config = std::fs::read_to_string(s.path().join("config.json")).unwrap();
    std::fs::write(s.path().join("config.json"), config.replacen("quick_gelu", "gelu", 1)).unwrap();
    let msg = ClipTextEncoder::load(&s.path(), 8, &cpu()).err().unwrap().to_string();
    assert!(msg.contains("text_config.hidden_act"), "{msg}");
}

// ---- bag of words ---------------------------------------------------------------------------

#[test]
fn random_bow_gives_each_word_a_fixed_seeded_vector() {
    let a = RandomBow::new(50, 3, 76, &cpu()).unwrap();
    let b = RandomBow::new(50, 3, 76, &cpu()).unwrap();
    let c = RandomBow::new(50, 4, 76, &cpu()).unwrap();
    assert_eq!(a.word_vector("cat"), b.word_vector("cat"));
    assert_ne!(a.word_vector("cat"), c.word_vector("cat"));
    assert_ne!(a.word_vector("cat"), a.word_vector("dog"));
    let e = a.encode(&["Cat dog", "dog cat", "cat", "cat cat", "T-shirt/top"]).unwrap().to_vec2::<f32>().unwrap();
    assert_eq!(e[0], e[1], "a bag of words ignores order (and case)");
    assert_eq!(e[2], e[3], "the mean of one word repeated is that word");
    let mean: Vec<f32> = a.word_vector("cat").iter().zip(a.word_vector("dog")).map(|(x, y)| (x + y) / 2.0).collect();
    assert!(e[0].iter().zip(&mean).all(|(x, y)| (x - y).abs() < 1e-6));
    // Truncation counts words.
    let t = RandomBow::new(8, 0, 3, &cpu()).unwrap();
    assert_eq!(t.tokenize(&["one two three four five"]).unwrap().lengths, [3]);
    assert_eq!(a.encode(&["anything"]).unwrap().dims(), [1, 50]);
}

#[test]
fn learned_bow_is_trainable_and_takes_glove_rows() {
    let texts = ["T-shirt/top", "Trouser", "Ankle boot", "Bag"];
    let bow = LearnedBow::new(&texts, 20, 0, 76, &cpu()).unwrap();
    assert!(bow.vocabulary().contains(&"ankle".to_string()) && bow.vocabulary().contains(&"trouser".to_string()));
    let vars = bow.varmap().unwrap().data().lock().unwrap();
    assert_eq!(vars["embeddings.weight"].as_tensor().dims(), [bow.vocabulary().len(), 20]);
    drop(vars);
    let e = bow.encode(&["ankle boot", "a sandal"]).unwrap();
    assert_eq!(e.dims(), [2, 20]);

    let s = Scratch::new();
    let glove = s.path().join("glove.txt");
    std::fs::write(&glove, "boot 1 2 3\nzebra 9 9 9\nankle 3 2 1\n").unwrap();
    let bow = LearnedBow::with_glove(&texts, &glove, 0, 76, &cpu()).unwrap();
    let init = bow.glove().unwrap();
    assert_eq!((init.found, bow.dim()), (2, 3));
    let v = bow.encode(&["ankle boot", "boot"]).unwrap().to_vec2::<f32>().unwrap();
    assert_eq!(v[0], [2.0, 2.0, 2.0]);
    assert_eq!(v[1], [1.0, 2.0, 3.0]);

    std::fs::write(&glove, "boot 1 2 3\nankle 3 2\n").unwrap();
    let err = LearnedBow::with_glove(&texts, &glove, 0, 76, &cpu()).err().unwrap();
    assert!(err.to_string().contains("glove.txt:2:"), "{err}");
}

#[test]
fn learned_bow_pools_by_its_bag_of_words_as_the_mean_of_its_word_rows() {
    // Neighbour texts as the retrieval branch joins them: Fashion-MNIST's class names in
    // distance order, cut at 76 words, of unequal lengths (padding), one empty.
    let names = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"];
    let texts: Vec<String> = (0..40).map(|i| (0..(i * 3 % 61)).map(|j| names[(i * 7 + j * j) % 10]).collect::<Vec<_>>().join(" ")).collect();
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let bow = LearnedBow::new(&names, 16, 0, 76, &cpu()).unwrap();
    let batch = bow.tokenize(&refs).unwrap();
    assert!(batch.lengths.contains(&0) && batch.lengths.contains(&76), "{:?}", batch.lengths);
    let bag = bow.pool(&batch).unwrap();
    let gathered = rac_core::encoders::masked_mean(&bow.token_features(&batch).unwrap(), &batch.mask).unwrap();
    let largest = |t: &Tensor| t.abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap();
    // Equal up to the order of the additions: relative to the largest value.
    let close = |a: &Tensor, b: &Tensor, tol: f32| {
        let d = largest(&(a - b).unwrap()) / largest(b);
        assert!(d < tol, "largest difference {d} of the largest value");
    };
    close(&bag, &gathered, 1e-6);
    assert_eq!(bag.to_vec2::<f32>().unwrap()[0], vec![0f32; 16], "an empty text pools to zeros");
    // The gradient reaching the word rows is the same too.
    let weights = Tensor::arange(0f32, 16.0, &cpu()).unwrap().unsqueeze(0).unwrap();
    let table = bow.varmap().unwrap().data().lock().unwrap()["embeddings.weight"].clone();
    let grad = |pooled: &Tensor| {
        pooled.broadcast_mul(&weights).unwrap().sqr().unwrap().sum_all().unwrap().backward().unwrap().get(table.as_tensor()).unwrap().clone()
    };
    close(&grad(&bag), &grad(&gathered), 1e-5);
}

// ---- bad input --------------------------------------------------------------------------------

#[test]
fn bad_input_wrong_image_size_is_refused() {
    let net = efficientnet();
    let err = net.forward(&Tensor::zeros((1, 3, 100, 100), DType::F32, &cpu()).unwrap()).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, rac_core::Error::Shape { .. }), "{msg}");
    assert!(msg.contains("[n, 3, 224, 224]") && msg.contains("[1, 3, 100, 100]") && msg.contains("preprocess to the encoder's input size"), "{msg}");
    let err = net.forward(&Tensor::zeros((2, 1, 224, 224), DType::F32, &cpu()).unwrap()).unwrap_err();
    assert!(matches!(err, rac_core::Error::Shape { .. }), "{err}");
    let pre = Preprocess { resize: 128, crop: 128, ..net.preprocess().clone() };
    let err = net.encode_with(&[photo("coffee.png")], &pre).unwrap_err();
    assert!(matches!(&err, rac_core::Error::Shape { expected, found, .. } if expected.starts_with("224 px") && found == "128 px"), "{err}");
    let empty = image::DynamicImage::new_rgb8(0, 0);
    let err = net.encode(&[photo("coffee.png"), empty]).unwrap_err();
    assert!(matches!(&err, rac_core::Error::Empty { what, .. } if what.starts_with("image 1 of the batch")), "{err}");
}

#[test]
fn bad_input_invalid_efficientnet_config_names_the_field() {
    let path = asset("efficientnet-lite0").join("model.safetensors");
    let mut config = EfficientNetConfig::lite0();
    config.stages[1].stride = 3;
    let msg = EfficientNet::load(&path, config, &cpu()).err().unwrap().to_string();
    assert!(msg.contains("field `efficientnet.stages[1].stride`: must be 1 or 2"), "{msg}");
    // A config that disagrees with the file's blocks is caught at the first tensor that differs.
    let mut config = EfficientNetConfig::lite0();
    config.stages[5].repeats = 3;
    let msg = EfficientNet::load(&path, config, &cpu()).err().unwrap().to_string();
    assert!(msg.contains("`_blocks.14._depthwise_conv.weight`: expected shape [1152, 1, 3, 3], found [1152, 1, 5, 5]"), "{msg}");
}

#[test]
fn bad_input_empty_batch_is_refused() {
    let net = efficientnet();
    let errors = [
        net.encode(&[]).unwrap_err(),
        net.forward(&Tensor::zeros((0, 3, 224, 224), DType::F32, &cpu()).unwrap()).unwrap_err(),
        minilm().encode(&[]).unwrap_err(),
        RandomBow::new(8, 0, 76, &cpu()).unwrap().encode(&[]).unwrap_err(),
    ];
    for err in errors {
        let msg = err.to_string();
        assert!(matches!(err, rac_core::Error::Empty { .. }) && msg.contains("the batch") && msg.contains("give at least one"), "{msg}");
    }
}

#[test]
fn bad_input_missing_weight_file_names_the_path() {
    let s = Scratch::new();
    let missing = s.path().join("nowhere.safetensors");
    let err = EfficientNet::load(&missing, EfficientNetConfig::lite0(), &cpu()).err().unwrap();
    assert!(matches!(err, Error::MissingFile { .. }), "{err}");
    assert!(err.to_string().contains("weights file not found") && err.to_string().contains("nowhere.safetensors"), "{err}");

    small_vit(&s.path(), "");
    std::fs::remove_file(s.path().join("model.safetensors")).unwrap();
    let msg = VitEncoder::load(&s.path(), None, &cpu()).err().unwrap().to_string();
    assert!(msg.contains("weights file not found") && msg.contains("model.safetensors"), "{msg}");

    // A file that is not safetensors is a format error naming it.
    std::fs::write(s.path().join("model.safetensors"), b"not a safetensors file").unwrap();
    let msg = VitEncoder::load(&s.path(), None, &cpu()).err().unwrap().to_string();
    assert!(msg.contains("model.safetensors") && msg.contains("not a readable safetensors file"), "{msg}");

    let spec = ImageEncoderSpec::EfficientnetLite0 { weights: Some(missing), input_size: None };
    assert!(spec.load(&rac_tests::cache(), &cpu()).is_err());
    let msg = ImageEncoderSpec::parse("resnet50").unwrap_err().to_string();
    assert!(msg.contains("unknown image encoder `resnet50`"), "{msg}");
}

#[test]
fn bad_input_tokenizer_that_does_not_parse_names_the_file() {
    let s = Scratch::new();
    let path = s.path().join("tokenizer.json");
    std::fs::write(&path, "{\"version\": \"1.0\", \"model\": {\"type\": \"NoSuchModel\"}}").unwrap();
    let err = TextTokenizer::from_file(&path, 76).unwrap_err();
    assert!(matches!(err, Error::Format { .. }), "{err}");
    assert!(err.to_string().contains("tokenizer.json") && err.to_string().contains("not a valid tokenizer.json"), "{err}");
    std::fs::write(&path, "not json at all").unwrap();
    assert!(TextTokenizer::from_file(&path, 76).unwrap_err().to_string().contains("not a valid tokenizer.json"));
    let msg = TextTokenizer::from_file(&s.path().join("absent.json"), 76).unwrap_err().to_string();
    assert!(msg.contains("tokenizer file not found"), "{msg}");
    // A MiniLM folder whose tokenizer does not parse fails the same way.
    let dir = s.path().join("minilm");
    std::fs::create_dir_all(dir.join("1_Pooling")).unwrap();
    for f in ["config.json", "1_Pooling/config.json", "modules.json"] {
        std::fs::copy(asset("minilm").join(f), dir.join(f)).unwrap();
    }
    std::fs::write(dir.join("tokenizer.json"), "{").unwrap();
    let msg = MiniLm::load_default(&dir, &cpu()).err().unwrap().to_string();
    assert!(msg.contains("minilm/tokenizer.json") && msg.contains("not a valid tokenizer.json"), "{msg}");
}
