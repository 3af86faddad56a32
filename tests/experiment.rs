//! Experiments as values: config errors, sweeps' dotted keys, reproducible runs and run
//! records, on a small set cut from the real Fashion-MNIST-LT (real EfficientNet features,
//! a real LMDB index, a real bag-of-words T).

use std::path::Path;

use rac_core::experiment::{Experiment, RunEnv, RunRecord, list_runs, load_runs, run};
use rac_tests::{cache, tiny_fashion_set};

/// heed opens an LMDB folder once per process, and these tests share the cached index of
/// the small set: they run one at a time.
static SHARED_INDEX: std::sync::Mutex<()> = std::sync::Mutex::new(());

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
    let _one_at_a_time = SHARED_INDEX.lock().unwrap_or_else(|e| e.into_inner());
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

#[test]
fn a_killed_run_resumes_from_its_checkpoint_to_the_same_record() {
    let _one_at_a_time = SHARED_INDEX.lock().unwrap_or_else(|e| e.into_inner());
    let data = tempfile::tempdir().unwrap();
    let manifest = tiny_fashion_set(data.path(), 12, 4);
    let exp = small_experiment(&manifest, "resume");

    let whole_runs = tempfile::tempdir().unwrap();
    let env = RunEnv { runs_dir: whole_runs.path().to_path_buf(), cache: cache(), ..RunEnv::from_env() };
    let whole = run(&exp, &env).unwrap();

    // Killed after epoch 2 of 3: no record, only the checkpoint.
    let runs = tempfile::tempdir().unwrap();
    let killed = RunEnv {
        runs_dir: runs.path().to_path_buf(),
        hooks: rac_core::train::TrainHooks { stop_after_epoch: Some(2), progress: false },
        ..env.clone()
    };
    let msg = run(&exp, &killed).unwrap_err().to_string();
    assert!(msg.contains("stopped after epoch 2"), "{msg}");
    assert!(list_runs(runs.path()).unwrap().is_empty(), "a killed run leaves no record");
    let ckpt_dir = runs.path().join(format!(".resume-{}.checkpoint", exp.config_hash()));
    let ckpt = std::fs::read(rac_core::train::trainer::checkpoint_path(&ckpt_dir)).expect("the checkpoint of epoch 2");
    let (_, meta) = safetensors::SafeTensors::read_metadata(&ckpt).unwrap();
    let state: serde_json::Value = serde_json::from_str(&meta.metadata().as_ref().unwrap()["state"]).unwrap();
    assert_eq!(state["epoch"], 2);
    let logged_rate = state["log"][0]["samples_per_s"].as_f64().unwrap();

    let resumed = run(&exp, &RunEnv { runs_dir: runs.path().to_path_buf(), ..env.clone() }).unwrap();
    assert_eq!(resumed.metrics, whole.metrics, "the resumed run ends with the uninterrupted run's metrics");
    assert_eq!(resumed.per_class, whole.per_class);
    let rates = resumed.epochs.column("samples_per_s").unwrap().f64().unwrap().clone();
    assert_eq!(rates.len(), 3);
    assert_eq!(rates.get(0), Some(logged_rate), "epochs 1-2 come from the checkpoint, not from training again");
    assert!(!ckpt_dir.exists(), "a finished run removes its checkpoint");
}

#[test]
fn frozen_text_features_encode_each_truncated_sequence_once_and_match_the_encoder() {
    use rac_core::encoders::{MiniLm, TextEncoder};
    use rac_core::features::BarProgress;
    let m = MiniLm::load(&rac_tests::asset("minilm"), 12, &candle_core::Device::Cpu).unwrap();
    // The first and second texts differ only after the 12-token cut; the third is short.
    let texts: Vec<String> = vec![
        "Sneaker, Sneaker, Sandal, Sneaker, Sneaker, Sneaker, Sneaker, Sneaker, Bag".into(),
        "Sneaker, Sneaker, Sandal, Sneaker, Sneaker, Sneaker, Sneaker, Sneaker, Trouser".into(),
        "Ankle boot, Sandal".into(),
        "Sneaker, Sneaker, Sandal, Sneaker, Sneaker, Sneaker, Sneaker, Sneaker, Bag".into(),
    ];
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let batch = m.tokenize(&refs).unwrap();
    assert_eq!(batch.lengths[0], 12, "the long texts are cut");
    let dir = tempfile::tempdir().unwrap();
    let got = rac_core::experiment::texts::frozen_text_features(&m, &texts, dir.path(), &mut BarProgress::new(false)).unwrap();
    let want = m.encode(&refs).unwrap();
    let diff = (got.clone() - &want).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
    assert!(diff < 1e-5, "deduplicated, unpadded encodings match the encoder's own: {diff}");
    let rows: Vec<Vec<f32>> = got.to_vec2().unwrap();
    assert_eq!(rows[0], rows[1], "texts equal up to the cut share one encoding");
    assert_ne!(rows[0], rows[2]);
    // A second call reads the cache.
    let again = rac_core::experiment::texts::frozen_text_features(&m, &texts, dir.path(), &mut BarProgress::new(false)).unwrap();
    assert_eq!(again.to_vec2::<f32>().unwrap(), rows);
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
}

#[test]
fn standardised_inputs_use_training_statistics() {
    use candle_core::{Device, Tensor};
    use rac_core::model::InputNorm;
    let train = Tensor::new(&[[1f32, 10.0], [3.0, 10.0], [5.0, 10.0]], &Device::Cpu).unwrap();
    let eval = Tensor::new(&[[3f32, 12.0]], &Device::Cpu).unwrap();
    let (tr, ev) = InputNorm::Standardise.apply(&train, &[&eval]).unwrap();
    // Column 0: mean 3, population std sqrt(8/3); column 1 is constant: centred, not scaled.
    let s = (8f32 / 3.0).sqrt();
    assert_eq!(tr.to_vec2::<f32>().unwrap(), vec![vec![-2.0 / s, 0.0], vec![0.0, 0.0], vec![2.0 / s, 0.0]]);
    assert_eq!(ev[0].to_vec2::<f32>().unwrap(), vec![vec![0.0, 2.0]]);
    let (same, _) = InputNorm::None.apply(&train, &[&eval]).unwrap();
    assert_eq!(same.to_vec2::<f32>().unwrap(), train.to_vec2::<f32>().unwrap());
}

#[test]
fn k_max_beyond_the_data_names_the_field() {
    let _one_at_a_time = SHARED_INDEX.lock().unwrap_or_else(|e| e.into_inner());
    let data = tempfile::tempdir().unwrap();
    let manifest = tiny_fashion_set(data.path(), 3, 1);
    let runs = tempfile::tempdir().unwrap();
    let env = RunEnv { runs_dir: runs.path().to_path_buf(), cache: cache(), ..RunEnv::from_env() };
    let exp = small_experiment(&manifest, "k-max").with("retrieval.k_max", "500").unwrap();
    let Err(err) = run(&exp, &env) else { panic!("500 neighbours of a tiny set") };
    let err = err.to_string();
    assert!(err.contains("`retrieval.k_max`") && err.contains("500 neighbours plus the query itself are more than the index"), "{err}");
    assert!(!err.contains("k = 500") && !err.contains(&runs.path().display().to_string()), "the field, not the cache folder: {err}");
}
