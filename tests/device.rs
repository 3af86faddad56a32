//! The `device` setting and `rac doctor`, as a build without the `cuda` feature sees them:
//! parsing with errors that name the field, a clear error for a GPU this build cannot use,
//! CPU runs unchanged, and the doctor's report.

use std::path::Path;

use rac_core::device::{DeviceChoice, DeviceReport, cuda_compiled};
use rac_core::experiment::{Experiment, RunEnv, run};
use rac_tests::{cache, rac, tiny_fashion_set};

#[test]
fn the_device_setting_parses_and_a_typo_names_the_field() {
    let e = Experiment::parse(Path::new("exp.toml"), "name = \"x\"\n[train]\ndevice = \"cuda:1\"\n").unwrap();
    assert_eq!(e.train.device, DeviceChoice::Cuda(1));
    assert_eq!(Experiment::named("x").train.device, DeviceChoice::Auto, "auto is the default");
    let msg = Experiment::parse(Path::new("exp.toml"), "name = \"x\"\n[train]\ndevice = \"gpu:1\"\n").unwrap_err().to_string();
    assert!(msg.contains("exp.toml") && msg.contains("device") && msg.contains("`gpu:1` is not a device") && msg.contains("line 3"), "{msg}");

    // The default leaves the saved form (and the record's hash) as it was; other values are kept.
    let auto = Experiment::named("x");
    assert!(!auto.to_toml().contains("device"), "{}", auto.to_toml());
    let cpu = auto.with("train.device", "cpu").unwrap();
    assert_eq!(cpu.train.device, DeviceChoice::Cpu);
    assert!(cpu.to_toml().contains("device = \"cpu\""));
    assert_ne!(auto.config_hash(), cpu.config_hash());
    let msg = auto.with("train.device", "cuda:x").unwrap_err().to_string();
    assert!(msg.contains("train.device") && msg.contains("is not a device"), "{msg}");
    let msg = auto.with("train.devices", "cpu").unwrap_err().to_string();
    assert!(msg.contains("no such key"), "{msg}");
}

#[test]
fn a_build_without_cuda_says_so_when_a_gpu_is_asked_for() {
    if cuda_compiled() {
        // A CUDA build: a device the driver does not have is named, with the field, and
        // `auto` picks the first GPU where there is one, else the CPU.
        let err = DeviceChoice::Cuda(4096).resolve("train.device").unwrap_err();
        assert!(
            matches!(&err, rac_core::Error::Setting { field, message } if field == "train.device" && message.contains("cannot be opened")),
            "{err}"
        );
        let auto = DeviceChoice::Auto.resolve("train.device").unwrap();
        assert_eq!(auto.is_cpu(), DeviceChoice::Cuda(0).resolve("train.device").is_err(), "auto picks cuda:0 exactly when it opens");
        return;
    }
    let err = DeviceChoice::Cuda(0).resolve("train.device").unwrap_err();
    assert!(matches!(&err, rac_core::Error::Setting { field, .. } if field == "train.device"), "{err}");
    let msg = err.to_string();
    assert!(msg.contains("CUDA was asked for") && msg.contains("--features cuda"), "{msg}");
    assert!(DeviceChoice::Auto.resolve("train.device").unwrap().is_cpu(), "auto falls back to the CPU");

    // A run asking for a GPU fails before any work, naming the setting.
    let data = tempfile::tempdir().unwrap();
    let manifest = tiny_fashion_set(data.path(), 6, 2);
    let runs = tempfile::tempdir().unwrap();
    let env = RunEnv { runs_dir: runs.path().to_path_buf(), cache: cache(), ..RunEnv::from_env() };
    let text = format!("name = \"gpu\"\n[data]\nmanifest = \"{}\"\n[train]\ndevice = \"cuda:0\"\n", manifest.display());
    let exp = Experiment::parse(Path::new("gpu.toml"), &text).unwrap();
    let msg = run(&exp, &env).unwrap_err().to_string();
    assert!(msg.contains("train.device") && msg.contains("\"cuda:0\"") && msg.contains("CUDA was asked for"), "{msg}");
}

#[test]
fn doctor_reports_the_cpu_and_the_missing_feature() {
    let report = DeviceReport::probe();
    assert_eq!(report.cuda_compiled, cuda_compiled());
    let out = rac(&["doctor"], &[]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("devices:") && text.contains("cpu:") && text.contains("device = \"auto\" picks:"), "{text}");
    let out = rac(&["doctor", "--json"], &[]);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    if !json["cuda_compiled"].as_bool().unwrap() {
        assert!(text.contains("cuda feature: not compiled in") && text.contains("--features cuda"), "{text}");
        assert_eq!(json["auto_picks"], "cpu");
        assert_eq!(json["cuda_devices"].as_array().unwrap().len(), 0);
    }
}

#[test]
fn the_gpu_check_runs_its_cpu_smoke_mode() {
    // `scripts/gpu-check.sh` runs this binary on a GPU machine; here its CPU parts run on
    // tiny shapes: the losses, the fusion, MiniLM, EfficientNet (CPU kernels against candle's
    // ops, as run off the CPU), a RAC training step with a ViT base branch, the fine-tuning
    // loader, and a whole fine-tuning step (loader, E, index, T).
    let bin = rac_tests::rac_bin().with_file_name(format!("gpu_check{}", std::env::consts::EXE_SUFFIX));
    assert!(bin.is_file(), "{} is missing: build it with `cargo build --workspace`", bin.display());
    let out = std::process::Command::new(&bin).arg("--cpu-smoke").output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}\n{}", String::from_utf8_lossy(&out.stderr));
    for item in [
        "loss LACE gradient",
        "fusion (Eq. 1)",
        "MiniLM forward",
        "EfficientNet-Lite0 forward",
        "RAC ViT-B/16 train f32",
        "loader: augmented",
        "RAC fine-tune step f32",
    ] {
        assert!(text.lines().any(|l| l.contains(item)), "{item} missing:\n{text}");
    }
    assert!(!text.contains("| NO |"), "{text}");
    assert!(text.contains("samples/s"), "{text}");

    // Without the feature, asking for the GPU run fails clearly.
    if !cuda_compiled() {
        let out = std::process::Command::new(&bin).output().unwrap();
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("built without CUDA") && err.contains("--features cuda"), "{err}");
    }
}
