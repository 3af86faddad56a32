//! Experiments as values: config errors, sweeps' dotted keys, reproducible runs and run
//! records, on a small set cut from the real Fashion-MNIST-LT (real EfficientNet features,
//! a real LMDB index, a real bag-of-words T).

use std::path::Path;

use rac_core::experiment::{Experiment, RunEnv, RunRecord, list_runs, load_runs, run};
use rac_tests::{cache, tiny_fashion_set};

fn parse_err(text: &str) -> String {
    Experiment::parse(Path::new("exp.toml"), text).unwrap_err().to_string()
}

#[test]
fn config_errors_name_the_key_or_field() {
    let msg = parse_err("name = \"x\"\n[retrieval]\nkk = 3\n");
    assert!(msg.contains("exp.toml") && msg.contains("unknown field `kk`") && msg.contains("line 3"), "{msg}");
    let msg = parse_err("name = \"x\"\n[retrieval]\nk = 0\n");
    assert!(msg.contains("`retrieval.k`") && msg.contains("at least 1"), "{msg}");
    let msg = parse_err("name = \"x\"\n[retrieval]\nk = 60\nk_max = 50\n");
    assert!(msg.contains("`retrieval.k`") && msg.contains("k_max"), "{msg}");
    let msg = parse_err("name = \"x\"\n[loss]\nkind = \"focal\"\n");
    assert!(msg.contains("unknown variant `focal`") && msg.contains("line 3"), "{msg}");
    let msg = parse_err("name = \"x\"\n[index]\nbackend = \"faiss\"\n");
    assert!(msg.contains("faiss"), "{msg}");
}

#[test]
fn dotted_keys_set_values_and_reject_typos() {
    let e = Experiment::named("x");
    assert_eq!(e.retrieval.k, 30, "the paper's k is the default");
    assert_eq!(e.loss.label_smoothing, 0.1);
    let e2 = e.with("retrieval.k", "10").unwrap();
    assert_eq!(e2.retrieval.k, 10);
    assert_ne!(e.config_hash(), e2.config_hash());
    assert_eq!(e.with("loss.kind", "ce").unwrap().loss.kind, rac_core::model::LossKind::Ce);
    let msg = e.with("retrieval.kk", "3").unwrap_err().to_string();
    assert!(msg.contains("retrieval.kk") && msg.contains("no such key"), "{msg}");
    let msg = e.with("retrieval.k", "0").unwrap_err().to_string();
    assert!(msg.contains("retrieval.k"), "{msg}");
}

fn small_experiment(manifest: &Path, name: &str) -> Experiment {
    let text = format!(
        "name = \"{name}\"\n[data]\nmanifest = \"{}\"\n[index]\nbackend = \"exact\"\n[retrieval]\nk = 5\nk_max = 8\ntext_encoder = \"bow-random\"\n\
         [optim]\nlr = 0.01\n[train]\nepochs = 3\nbatch_size = 16\nwarmup_epochs = 1\n",
        manifest.display()
    );
    Experiment::parse(Path::new("small.toml"), &text).unwrap()
}

#[test]
fn a_run_is_reproducible_and_leaves_a_loadable_record() {
    let data = tempfile::tempdir().unwrap();
    let manifest = tiny_fashion_set(data.path(), 12, 4);
    let runs = tempfile::tempdir().unwrap();
    let env = RunEnv { runs_dir: runs.path().to_path_buf(), cache: cache(), ..RunEnv::from_env() };
    let exp = small_experiment(&manifest, "small");
    let a = run(&exp, &env).unwrap();
    assert_eq!(a.metrics.height(), 3, "a RAC run reports base, retrieval and fused");
    let again = RunEnv { force: true, ..env.clone() };
    let b = run(&exp, &again).unwrap();
    assert_eq!(a.metrics, b.metrics, "same config and seed, identical metrics");
    assert_eq!(a.per_class, b.per_class);

    let loaded = RunRecord::load(&a.dir).unwrap();
    assert_eq!(loaded.meta.config_hash, exp.config_hash());
    assert_eq!(loaded.meta.experiment, exp);
    assert_eq!(loaded.metrics.column("top1").unwrap().f64().unwrap().len(), 3);
    assert_eq!(loaded.epochs.height(), 3);
    assert!(loaded.meta.versions.contains_key("candle-core"));
    assert_eq!(list_runs(runs.path()).unwrap().len(), 1);
    assert_eq!(load_runs(runs.path()).unwrap().height(), 3);

    // A run that fails leaves no record behind.
    let mut bad = small_experiment(&manifest, "bad");
    bad.retrieval.text_encoder = "no-such-encoder".into();
    let msg = run(&bad, &env).unwrap_err().to_string();
    assert!(msg.contains("no-such-encoder") && msg.contains("retrieval.text_encoder"), "{msg}");
    assert_eq!(list_runs(runs.path()).unwrap().len(), 1);
    assert!(std::fs::read_dir(runs.path()).unwrap().flatten().all(|e| !e.file_name().to_string_lossy().starts_with("bad-")));
}
