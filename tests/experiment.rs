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
    for (name, computed, back) in
        [("metrics", &b.metrics, &loaded.metrics), ("per_class", &b.per_class, &loaded.per_class), ("epochs", &b.epochs, &loaded.epochs)]
    {
        assert_eq!(back.schema(), computed.schema(), "{name}: a loaded table keeps the computed column types");
        assert!(back.equals_missing(computed), "{name}: and its values:\n{computed}\n{back}");
    }
    // (`b` rewrote the record: its timings are the ones on disk.)
    // A record without its column types (written before dtypes.toml) still loads, inferred.
    // (Such a record also predates checksums: its COMPLETE is empty, and it loads with a note.)
    let old = tempfile::tempdir().unwrap();
    copy_dir(&a.dir, old.path());
    std::fs::remove_file(old.path().join("dtypes.toml")).unwrap();
    std::fs::write(old.path().join("COMPLETE"), "").unwrap();
    let inferred = RunRecord::load(old.path()).unwrap();
    assert!(inferred.notes.iter().any(|n| n.contains("before checksums")), "{:?}", inferred.notes);
    assert!(loaded.notes.is_empty(), "{:?}", loaded.notes);
    assert_eq!(inferred.per_class.column("class").unwrap().dtype(), &polars::prelude::DataType::Int64);
    // A damaged one names the table and column.
    std::fs::write(old.path().join("dtypes.toml"), "[per_class]\nclass = \"u33\"\n").unwrap();
    let msg = RunRecord::load(old.path()).unwrap_err().to_string();
    assert!(msg.contains("dtypes.toml") && msg.contains("`per_class.class`") && msg.contains("u33"), "{msg}");
    assert!(loaded.meta.versions.contains_key("candle-core"));
    assert_eq!(list_runs(runs.path()).unwrap().len(), 1);
    assert_eq!(load_runs(runs.path()).unwrap().height(), 3);

    // A record's tables are checked against the checksums its run wrote: an edited, a cut
    // and a deleted table are each named, never served.
    let metrics_csv = std::fs::read_to_string(b.dir.join("metrics.csv")).unwrap();
    type Damage<'a> = Box<dyn Fn(&Path) + 'a>;
    let damages: [(&str, &str, Damage<'_>); 4] = [
        ("metrics.csv", "was changed", Box::new(|d: &Path| std::fs::write(d.join("metrics.csv"), metrics_csv.replacen('.', "9", 1)).unwrap())),
        (
            "per_class.csv",
            "was changed",
            Box::new(|d: &Path| {
                let text = std::fs::read(d.join("per_class.csv")).unwrap();
                std::fs::write(d.join("per_class.csv"), &text[..text.len() / 2]).unwrap()
            }),
        ),
        ("epochs.csv", "was deleted", Box::new(|d: &Path| std::fs::remove_file(d.join("epochs.csv")).unwrap())),
        ("extra.csv", "was added", Box::new(|d: &Path| std::fs::write(d.join("extra.csv"), "a\n1\n").unwrap())),
    ];
    for (file, how, damage) in &damages {
        let copy = tempfile::tempdir().unwrap();
        copy_dir(&b.dir, copy.path());
        damage(copy.path());
        let msg = RunRecord::load(copy.path()).unwrap_err().to_string();
        assert!(msg.contains(file) && msg.contains(how) && msg.contains("after the run was recorded"), "{msg}");
        // `rac runs` names it too, and exits 1.
        let runs_copy = tempfile::tempdir().unwrap();
        copy_dir(copy.path(), &runs_copy.path().join("small-damaged"));
        let out = rac_tests::rac(&["runs", "--runs-dir", runs_copy.path().to_str().unwrap()], &[]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.code() == Some(1) && err.contains(file) && err.contains(how), "{err}");
    }
    // A run whose record was edited is trained again (same numbers), not served.
    std::fs::write(b.dir.join("metrics.csv"), metrics_csv.replacen('.', "9", 1)).unwrap();
    let retrained = run(&exp, &env).unwrap();
    assert_eq!(retrained.metrics, a.metrics, "the edited record was replaced by a new run");
    RunRecord::load(&retrained.dir).unwrap();

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
        hooks: rac_core::train::TrainHooks { stop_after_epoch: Some(2), progress: rac_core::progress::Progress::Hidden },
        ..env.clone()
    };
    let err = run(&exp, &killed).unwrap_err();
    assert!(matches!(err, rac_core::Error::TrainingStopped { epoch: 2 }), "{err}");
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
    let got = rac_core::experiment::texts::frozen_text_features(&m, &texts, dir.path(), &mut BarProgress::new(rac_core::progress::Progress::Hidden))
        .unwrap();
    let want = m.encode(&refs).unwrap();
    let diff = (got.clone() - &want).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
    assert!(diff < 1e-5, "deduplicated, unpadded encodings match the encoder's own: {diff}");
    let rows: Vec<Vec<f32>> = got.to_vec2().unwrap();
    assert_eq!(rows[0], rows[1], "texts equal up to the cut share one encoding");
    assert_ne!(rows[0], rows[2]);
    // A second call reads the cache.
    let again =
        rac_core::experiment::texts::frozen_text_features(&m, &texts, dir.path(), &mut BarProgress::new(rac_core::progress::Progress::Hidden))
            .unwrap();
    assert_eq!(again.to_vec2::<f32>().unwrap(), rows);
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
}

#[test]
fn a_frozen_t_with_variables_hands_the_heads_constants() {
    use rac_core::encoders::{LearnedBow, TextEncoder};
    use rac_core::features::BarProgress;
    // The learned bag-of-words T, kept frozen: its features must not lead back to its
    // embedding, or every training step's backward pass walks through all it encoded.
    let names = ["T-shirt/top", "Trouser", "Ankle boot", "Bag"];
    let bow = LearnedBow::new(&names, 8, 0, 76, &candle_core::Device::Cpu).unwrap();
    let texts: Vec<String> = vec!["Bag Trouser Bag".into(), "Ankle boot T-shirt/top".into(), "Bag".into()];
    let dir = tempfile::tempdir().unwrap();
    let hidden = || BarProgress::new(rac_core::progress::Progress::Hidden);
    let fresh = rac_core::experiment::texts::frozen_text_features(&bow, &texts, dir.path(), &mut hidden()).unwrap();
    let table = bow.varmap().unwrap().data().lock().unwrap()["embeddings.weight"].clone();
    let grads = fresh.sqr().unwrap().sum_all().unwrap().backward().unwrap();
    assert!(grads.get(table.as_tensor()).is_none(), "no gradient reaches the frozen T's embedding");
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    assert_eq!(fresh.to_vec2::<f32>().unwrap(), bow.encode(&refs).unwrap().to_vec2::<f32>().unwrap(), "the same values as T's own");
    let cached = rac_core::experiment::texts::frozen_text_features(&bow, &texts, dir.path(), &mut hidden()).unwrap();
    assert_eq!(cached.to_vec2::<f32>().unwrap(), fresh.to_vec2::<f32>().unwrap(), "and as the cache's");
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

#[test]
fn typed_edits_set_what_notebooks_change_and_are_checked() {
    use rac_core::experiment::TextEncoderKind;
    use rac_core::model::{LossKind, Mode};
    let recipe = Experiment::named("x").with("train.warmup_epochs", "5").unwrap();
    // Fewer epochs than the warm-up: the warm-up is shortened; more leave it as it was.
    let short = recipe.with_epochs(2).unwrap();
    assert_eq!((short.train.epochs, short.train.warmup_epochs), (2, 2));
    let long = recipe.with_epochs(40).unwrap();
    assert_eq!((long.train.epochs, long.train.warmup_epochs), (40, 5));
    // A k beyond the neighbour cache's depth deepens it; one within leaves the hash's inputs alone.
    let deep = recipe.with_k(80).unwrap();
    assert_eq!((deep.retrieval.k, deep.retrieval.k_max), (80, 80));
    assert_eq!(recipe.with_k(10).unwrap(), recipe.with("retrieval.k", "10").unwrap(), "the same experiment as the dotted key");
    // The dotted key applies the same rule (it used to leave k_max behind and fail validation).
    assert_eq!(recipe.with("retrieval.k", "80").unwrap(), deep, "`--set retrieval.k=80` deepens the cache as with_k does");
    assert_eq!(rac_core::index::k_max_for(80, 50), 80);
    let msg = recipe.with_k(0).unwrap_err().to_string();
    assert!(msg.contains("experiment `x`") && msg.contains("retrieval"), "{msg}");
    // Each typed edit is the dotted key's value, so record hashes agree with experiment files.
    let typed = recipe.with_mode(Mode::Retrieval).unwrap().with_loss(LossKind::Balce).unwrap().with_tau(0.5).unwrap();
    let dotted = recipe.with("model.mode", "\"retrieval\"").unwrap().with("loss.kind", "\"balce\"").unwrap().with("loss.tau", "0.5").unwrap();
    assert_eq!(typed.config_hash(), dotted.config_hash());
    for kind in TextEncoderKind::PACKAGED {
        let e = recipe.with_text_encoder(&kind).unwrap();
        assert_eq!(e.retrieval.text_encoder.parse::<TextEncoderKind>().unwrap(), kind);
    }
    let msg = "minilmm".parse::<TextEncoderKind>().unwrap_err().to_string();
    assert!(msg.contains("minilmm") && msg.contains("bow-random"), "{msg}");
    assert_eq!(recipe.with_name("y").unwrap().name, "y");
    assert!(recipe.with_name("a/b").unwrap_err().to_string().contains("name"));
    // "" is the embedded default data set; a path is taken as given (read when prepared).
    let default = recipe.with_manifest("").unwrap();
    assert_eq!(std::fs::read_to_string(&default.data.manifest).unwrap(), rac_core::data::DEFAULT_MANIFEST);
    assert_eq!(recipe.with_manifest("mine.toml").unwrap().data.manifest, Path::new("mine.toml"));
}

#[test]
fn a_typed_sweep_runs_its_grid_and_finds_runs_by_method() {
    use rac_core::experiment::{Sweep, by_method, sweep};
    use rac_core::model::Mode;
    let _one_at_a_time = SHARED_INDEX.lock().unwrap_or_else(|e| e.into_inner());
    let data = tempfile::tempdir().unwrap();
    let manifest = tiny_fashion_set(data.path(), 12, 4);
    let runs = tempfile::tempdir().unwrap();
    let env = RunEnv { runs_dir: runs.path().to_path_buf(), cache: cache(), ..RunEnv::from_env() };
    let base = small_experiment(&manifest, "typed").with_epochs(2).unwrap();
    // k = 12 is beyond the recipe's k_max of 8: the typed axis deepens the cache for it.
    let (records, table) = sweep(&base, &[Sweep::modes(&[Mode::Base, Mode::Retrieval]), Sweep::ks(&[3, 12])], &env).unwrap();
    assert_eq!(records.len(), 4);
    assert_eq!(records[3].meta.experiment.retrieval.k_max, 12);
    let modes: Vec<&str> = table.column("model.mode").unwrap().str().unwrap().iter().map(|v| v.unwrap()).collect();
    assert_eq!(modes, ["base", "base", "retrieval", "retrieval"], "values read as written, unquoted");
    let ks: Vec<&str> = table.column("retrieval.k").unwrap().str().unwrap().iter().map(|v| v.unwrap()).collect();
    assert_eq!(ks, ["3", "12", "3", "12"]);
    let one = [records[0].clone(), records[2].clone()];
    assert_eq!(by_method(&one, "retrieval").unwrap().meta.experiment.model.mode, Mode::Retrieval);
    let msg = by_method(&one, "RAC").unwrap_err().to_string();
    assert!(msg.contains("`RAC`") && msg.contains("LACE") && msg.contains("retrieval"), "{msg}");
    assert!(by_method(&records, "retrieval").unwrap_err().to_string().contains("more than one"));
}

#[test]
fn provenance_names_the_code_data_and_weights_by_their_sha256() {
    use rac_core::experiment::Provenance;
    let cache = cache();
    let exp = rac_core::experiment::demo::demo_recipe(&cache).unwrap();
    let p = Provenance::of(&exp, &cache).unwrap();
    let value = |item: &str| p.rows.iter().find(|(k, _)| k == item).map(|(_, v)| v.clone()).unwrap_or_else(|| panic!("no `{item}` in {:?}", p.rows));
    let spec = |name: &str| rac_core::assets::spec(name).unwrap();
    // The weights are the packaged ones, checked against the registry's recorded sha256.
    assert_eq!(value("E weights: model.safetensors"), spec("efficientnet-lite0").convert.unwrap().sha256);
    let minilm = spec("minilm").files.into_iter().find(|f| f.to == "model.safetensors").unwrap();
    assert_eq!(value("T weights: model.safetensors"), minilm.sha256);
    let images = spec("fashion-mnist").files.into_iter().find(|f| f.to == "train-images-idx3-ubyte.gz").unwrap();
    assert_eq!(value("data: train-images-idx3-ubyte.gz"), images.sha256);
    assert_eq!(value("manifest sha256"), rac_core::fsio::sha256_file(&exp.data.manifest).unwrap());
    assert!(value("data manifest").starts_with("fashion-mnist-lt"));
    assert_eq!(value("rac-core"), env!("CARGO_PKG_VERSION"));
    assert!(value("rustc").starts_with("rustc "), "{:?}", value("rustc"));
    let rev = value("git revision");
    assert!(rev.len() >= 12 && rev[..12].chars().all(|c| c.is_ascii_hexdigit()), "{rev}");
    assert!(value("date (UTC)").ends_with('Z'));
    // The CPU features the kernels dispatch on: why another machine may differ in the last digit.
    let kernels = value("cpu kernels");
    assert!(kernels.starts_with(std::env::consts::ARCH) && kernels.contains("pulp"), "{kernels}");
    #[cfg(target_arch = "x86_64")]
    assert_eq!(kernels.contains("avx2"), std::arch::is_x86_feature_detected!("avx2"), "{kernels}");
    assert_eq!(p.table().unwrap().shape(), (p.rows.len(), 2));
    // A bag-of-words T has no weight file: the row says so.
    let bow = exp.with_text_encoder(&rac_core::experiment::TextEncoderKind::BowRandom).unwrap();
    assert!(Provenance::of(&bow, &cache).unwrap().rows.iter().any(|(k, v)| k == "T weights" && v.contains("random")));
}

/// A copy of the plain files of `from` in `to`.
fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap().flatten() {
        std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
    }
}

#[test]
fn two_runs_that_need_one_new_cached_index_share_it() {
    let data = tempfile::tempdir().unwrap();
    let manifest = tiny_fashion_set(data.path(), 12, 4);
    // An index setting no other run used: the cached index is new to both processes.
    let nonce = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos() % 10_000;
    let text = format!(
        "name = \"shared\"\n[data]\nmanifest = \"{}\"\n[index]\nbackend = \"usearch\"\n[index.hnsw]\nef_search = {}\n[retrieval]\nk = 5\nk_max = 8\n\
         text_encoder = \"bow-random\"\n[optim]\nlr = 0.01\n[train]\nepochs = 2\nbatch_size = 16\nwarmup_epochs = 1\n",
        manifest.display(),
        100 + nonce
    );
    let exp = data.path().join("shared.toml");
    std::fs::write(&exp, text).unwrap();
    let runs: Vec<_> = (0..2).map(|i| data.path().join(format!("runs-{i}"))).collect();
    let children: Vec<_> = runs
        .iter()
        .map(|r| {
            std::process::Command::new(rac_tests::rac_bin())
                .args(["run", exp.to_str().unwrap(), "--runs-dir", r.to_str().unwrap(), "--json"])
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let outs: Vec<_> = children.into_iter().map(|c| c.wait_with_output().unwrap()).collect();
    for out in &outs {
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    let (a, b) = (RunRecord::load(&list_runs(&runs[0]).unwrap()[0].dir).unwrap(), RunRecord::load(&list_runs(&runs[1]).unwrap()[0].dir).unwrap());
    assert_eq!(a.metrics, b.metrics, "both runs read the same index");
    // One of them built it and the other waited: neither found the index damaged or had to
    // repair it (a feature store entry another test left may be encoded again; not the index).
    for out in &outs {
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!stderr.lines().any(|l| l.contains("graph") || l.contains("retrieval index")), "{stderr}");
    }
}
