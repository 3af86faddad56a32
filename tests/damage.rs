//! Damage and bad values never pass silently: a truncated index, NaN settings, vectors that
//! are not finite, huge counts and labels, a byte-order mark, a folder where a split file
//! should be. Each case asserts a named error (or the corrected behaviour), that no process
//! died of a signal, and, where data was involved, that nothing was lost or written.

use std::path::Path;

use rac_core::data::{DataManifest, DataOverrides, Dataset};
use rac_core::experiment::Experiment;
use rac_core::index::{Backend, FeatureFile, IndexConfig, Metric, QueryOptions, RetrievalIndex, Source};
use rac_tests::{cache, manifest, rac};

/// 400 rows of dimension 16 (deterministic, none zero), labelled in 4 classes.
fn source(name: &str) -> Source {
    let dim = 16;
    let vectors: Vec<f32> = (0..400 * dim).map(|i| ((i * 7919 % 1013) as f32 / 1013.0) - 0.4).collect();
    let labels: Vec<u32> = (0..400).map(|i| i % 4).collect();
    let texts = labels.iter().map(|l| format!("class {l}")).collect();
    Source::from_vecs(name, vectors, dim, texts, labels).unwrap()
}

fn exited_cleanly(out: &std::process::Output) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "a clean error exit, not a signal or a panic: {:?}\n{stderr}", out.status);
    stderr
}

#[test]
fn a_truncated_index_is_a_named_error_and_is_not_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let ix = dir.path().join("ix");
    let config = IndexConfig { backend: Backend::Hnsw, ..IndexConfig::default() };
    drop(RetrievalIndex::build(&ix, &config, &[source("train")]).unwrap());
    let data = ix.join("data.mdb");
    let full = std::fs::metadata(&data).unwrap().len();
    assert!(full > 4 * 4096, "the test index spans more than its meta pages ({full} bytes)");
    // A copy taken while it was written: the first half of the file.
    let f = std::fs::OpenOptions::new().write(true).open(&data).unwrap();
    f.set_len(full / 2).unwrap();
    drop(f);

    let err = RetrievalIndex::open(&ix).err().expect("a damaged index does not open").to_string();
    assert!(err.contains("damaged") && err.contains(&format!("data.mdb is {} bytes", full / 2)), "{err}");
    let ix_arg = ix.to_str().unwrap();
    let queries = dir.path().join("q.safetensors");
    FeatureFile { vectors: vec![0.25; 2 * 16], dim: 16, labels: vec![0, 1], class_texts: None, keys: None }.write(&queries).unwrap();
    let q_arg = queries.to_str().unwrap();
    for args in [vec!["index", "stats", ix_arg], vec!["index", "query", ix_arg, "--features", q_arg, "--k", "3"]] {
        let stderr = exited_cleanly(&rac(&args, &[]));
        assert!(stderr.contains("damaged"), "rac {args:?}: {stderr}");
    }
    // Building over it is refused (it may be the only copy), and the file is left as it was.
    let err = RetrievalIndex::build(&ix, &config, &[source("train")]).err().expect("not silently replaced").to_string();
    assert!(err.contains("damaged") && err.contains("remove the folder"), "{err}");
    assert_eq!(std::fs::metadata(&data).unwrap().len(), full / 2);

    // A file that is not LMDB at all, and one too short to hold a meta page.
    std::fs::write(&data, vec![7u8; 9000]).unwrap();
    assert!(RetrievalIndex::open(&ix).err().unwrap().to_string().contains("not an LMDB environment"));
    std::fs::write(&data, b"short").unwrap();
    assert!(RetrievalIndex::open(&ix).err().unwrap().to_string().contains("too short"));
}

#[test]
fn nan_and_out_of_range_settings_are_named_at_load() {
    let exp = Experiment::load(&rac_tests::workspace_root().join("experiments/demo.toml")).unwrap();
    for (key, value, says) in [
        ("loss.tau", "nan", "finite"),
        ("loss.tau", "-1.0", ">= 0"),
        ("optim.weight_decay", "nan", "finite"),
        ("optim.lr", "inf", "finite"),
        ("optim.betas", "[0.9, 1.5]", "beta2"),
        ("optim.eps", "0.0", "> 0"),
        ("optim.clip_norm", "nan", "finite"),
        ("train.min_lr", "inf", "finite"),
        ("train.warmup_lr", "nan", "finite"),
        ("loss.label_smoothing", "nan", "[0, 1)"),
        ("loss.ldam_max_margin", "0.0", "> 0"),
    ] {
        let err = exp.with(key, value).err().unwrap_or_else(|| panic!("{key} = {value} was accepted")).to_string();
        assert!(err.contains(&format!("`{key}`")) && err.contains(says), "{key} = {value}: {err}");
    }
    // The same through a file: the field is named once, with the file.
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(rac_tests::workspace_root().join("experiments/demo.toml")).unwrap();
    let bad = dir.path().join("nan.toml");
    std::fs::write(&bad, text.replacen("tau = 1.0", "tau = nan", 1)).unwrap();
    let err = Experiment::load(&bad).map(|_| ()).unwrap_err().to_string();
    assert_eq!(err.matches("loss.tau").count(), 1, "{err}");
    assert!(err.contains("nan.toml"), "{err}");
}

#[test]
fn long_tail_numbers_are_bounded_at_load() {
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(manifest("fashion-mnist-lt.toml")).unwrap();
    for (value, says) in [("inf", "finite"), ("1e6", "no training image"), ("5001.0", "no training image")] {
        let p = dir.path().join("m.toml");
        std::fs::write(&p, text.replace("imbalance_factor = 500.0", &format!("imbalance_factor = {value}"))).unwrap();
        let err = DataManifest::load(&p).unwrap_err().to_string();
        assert!(err.contains("`long_tail.imbalance_factor`") && err.contains(says), "{value}: {err}");
    }
    // The largest counts are no allocation: every class keeps what it has.
    let p = dir.path().join("huge.toml");
    for huge in ["9223372036854775807", "18446744073709551615"] {
        std::fs::write(&p, text.replace("max_per_class = 5000", &format!("max_per_class = {huge}"))).unwrap();
        let out = rac(&["data", "stats", p.to_str().unwrap()], &[]);
        assert!(out.status.success(), "{huge}: {}", String::from_utf8_lossy(&out.stderr));
        let ds = Dataset::load(&p, &DataOverrides::default(), &cache()).unwrap();
        assert_eq!(ds.train.len(), 60_000, "{huge}: all of Fashion-MNIST's training images");
    }
    // A float is not a count: a type error at its line.
    std::fs::write(&p, text.replace("max_per_class = 5000", "max_per_class = 1e12")).unwrap();
    let err = DataManifest::load(&p).unwrap_err().to_string();
    assert!(err.contains("huge.toml") && err.contains("max_per_class"), "{err}");
}

#[test]
fn vectors_that_are_not_finite_are_rejected_on_every_metric() {
    let dir = tempfile::tempdir().unwrap();
    for metric in [Metric::L2, Metric::Cosine] {
        for backend in Backend::ALL {
            let ix_dir = dir.path().join(format!("{backend}-{metric:?}"));
            let index = RetrievalIndex::build(&ix_dir, &IndexConfig { backend, metric, ..IndexConfig::default() }, &[source("train")]).unwrap();
            for bad in [f32::NAN, f32::INFINITY] {
                let mut q = vec![0.1f32; 16 * 3];
                q[16 + 5] = bad;
                let err = index.query_vecs(&q, 16, &QueryOptions::k(3)).expect_err("a query that is not finite").to_string();
                assert!(err.contains("query row 1") && err.contains("not finite"), "{backend} {metric:?}: {err}");
            }
            // A zero row is a different reason, under cosine only.
            let zero = vec![0.0f32; 16];
            let r = index.query_vecs(&zero, 16, &QueryOptions::k(3));
            assert_eq!(r.is_err(), metric == Metric::Cosine, "{backend} {metric:?}");
        }
    }
    // A source holding one is refused before anything is written.
    let mut v = vec![0.5f32; 32];
    v[20] = f32::NAN;
    let err = Source::from_vecs("s", v, 16, vec!["a".into(), "b".into()], vec![0, 1]).err().unwrap().to_string();
    assert!(err.contains("row 1") && err.contains("not finite"), "{err}");
    // A zero row under cosine is refused before the index folder is made.
    let mut v = vec![0.5f32; 32];
    v[16..].fill(0.0);
    let zero = Source::from_vecs("z", v, 16, vec!["a".into(), "b".into()], vec![0, 1]).unwrap();
    let ix = dir.path().join("zero-row");
    let err = RetrievalIndex::build(&ix, &IndexConfig { metric: Metric::Cosine, ..IndexConfig::default() }, &[zero]).err().unwrap().to_string();
    assert!(err.contains("row 1") && err.contains("all zeros"), "{err}");
    assert!(!ix.exists(), "no LMDB folder is left behind");
}

#[test]
fn feature_files_with_bad_values_name_the_file_and_row() {
    let dir = tempfile::tempdir().unwrap();
    let good = FeatureFile { vectors: vec![0.5; 3 * 4], dim: 4, labels: vec![0, 1, 2], class_texts: None, keys: None };
    let write = |name: &str, f: &FeatureFile| {
        let p = dir.path().join(name);
        f.write(&p).unwrap();
        p
    };
    let mut nan = good.clone();
    nan.vectors[9] = f32::NAN;
    let p = write("nan.safetensors", &nan);
    let err = FeatureFile::read(&p).err().unwrap().to_string();
    assert!(err.contains("nan.safetensors") && err.contains("row 2") && err.contains("not finite"), "{err}");
    // A label of 4e9 used to size a 32 GB per-class table.
    let mut huge = good.clone();
    huge.labels[1] = 4_000_000_000;
    let p = write("huge.safetensors", &huge);
    let err = FeatureFile::read(&p).err().unwrap().to_string();
    assert!(err.contains("huge.safetensors") && err.contains("row 1") && err.contains("not a class id"), "{err}");
    let out = rac(&["index", "knn-eval", "--train", p.to_str().unwrap(), "--test", p.to_str().unwrap()], &[]);
    assert!(exited_cleanly(&out).contains("huge.safetensors"));
}

/// A split-list data set in a scratch folder (three classes named by their folder).
fn scratch_manifest(dir: &Path, train: &str, sha: Option<&str>) -> std::path::PathBuf {
    std::fs::write(dir.join("test.txt"), "test/cat/1.jpg 0\ntest/dog/2.jpg 1\ntest/fox/3.jpg 2\n").unwrap();
    if !train.is_empty() {
        std::fs::write(dir.join("train.txt"), train).unwrap();
    }
    let sha = sha.map(|s| format!(", sha256 = \"{s}\"")).unwrap_or_default();
    let m = dir.join("m.toml");
    std::fs::write(
        &m,
        format!(
            "name = \"scratch\"\n[split_list]\nsplit_dir = \".\"\ntrain = {{ file = \"train.txt\"{sha} }}\ntest = {{ file = \"test.txt\" }}\n\
             [classes]\ncount = 3\ntext_from = \"path_component\"\n"
        ),
    )
    .unwrap();
    m
}

#[test]
fn split_lists_a_bom_a_folder_and_a_malformed_checksum() {
    let load = |m: &Path| Dataset::load(m, &DataOverrides::default(), &cache());
    // A byte-order mark is not part of the first path.
    let d = tempfile::tempdir().unwrap();
    let m = scratch_manifest(d.path(), "\u{feff}train/cat/1.jpg 0\ntrain/dog/2.jpg 1\ntrain/fox/3.jpg 2\n", None);
    assert_eq!(load(&m).unwrap().class_texts, ["cat", "dog", "fox"]);

    // A folder where the split file should be is said to be one, and the OS error is told once.
    let d = tempfile::tempdir().unwrap();
    std::fs::create_dir(d.path().join("train.txt")).unwrap();
    let m = scratch_manifest(d.path(), "", None);
    let err = load(&m).err().unwrap().to_string();
    assert!(err.contains("train.txt") && err.contains("a folder, not a file") && !err.contains("not found"), "{err}");
    let stderr = exited_cleanly(&rac(&["data", "stats", m.to_str().unwrap()], &[]));
    assert_eq!(stderr.matches("os error").count(), 1, "{stderr}");

    // A checksum that is no sha256 is a field error, not a mismatch.
    let d = tempfile::tempdir().unwrap();
    let m = scratch_manifest(d.path(), "train/cat/1.jpg 0\ntrain/dog/2.jpg 1\ntrain/fox/3.jpg 2\n", Some("xyz"));
    let err = load(&m).err().unwrap().to_string();
    assert!(err.contains("`split_list.train.sha256`") && err.contains("64 hex digits") && !err.contains("mismatch"), "{err}");
}

#[test]
fn os_errors_say_what_they_mean_once() {
    // /dev/full answers every write with ENOSPC, as a disk that fills during a build does.
    let e = std::fs::write("/dev/full", b"x").unwrap_err();
    let msg = rac_core::Error::io("writing", "file", Path::new("/dev/full"), e).to_string();
    assert!(msg.contains("the disk is full") && msg.matches("os error 28").count() == 1, "{msg}");
    // The OS error is part of the message, not a second cause printed after it.
    let e = std::fs::read("/").unwrap_err();
    let err = rac_core::Error::io("reading", "file", Path::new("/"), e);
    assert!(std::error::Error::source(&err).is_none());
    assert!(err.to_string().contains("a folder, not a file"), "{err}");
}
