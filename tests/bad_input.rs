//! Bad input gets an error that names the file and the line or field, never a panic. Each
//! message is also an insta snapshot (`tests/snapshots/`), so that rewording one is a
//! reviewed diff (`INSTA_UPDATE=always cargo test -p rac-tests --test bad_input` rewrites them).

use std::path::{Path, PathBuf};

use rac_core::data::{DataManifest, DataOverrides, Dataset};
use rac_tests::{cache, rac};

/// A scratch data set: a manifest and split files in a temporary folder.
struct Scratch {
    dir: tempfile::TempDir,
}

impl Scratch {
    fn new() -> Self {
        Scratch { dir: tempfile::tempdir().unwrap() }
    }
    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
    fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.path(name);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, text).unwrap();
        p
    }
    /// A split-list manifest whose split folder is the scratch folder.
    fn manifest(&self, classes: &str, extra: &str) -> PathBuf {
        self.write(
            "m.toml",
            &format!(
                "name = \"scratch\"\n[split_list]\nsplit_dir = \".\"\nimage_root = \"img\"\ntrain = {{ file = \"train.txt\" }}\ntest = {{ file = \"test.txt\" }}\n{extra}\n[classes]\n{classes}\ntext_from = \"path_component\"\n"
            ),
        )
    }
    fn load(&self, manifest: &Path) -> rac_core::Result<Dataset> {
        Dataset::load(manifest, &DataOverrides::default(), &cache())
    }
}

const GOOD_TRAIN: &str = "train/cat/1.jpg 0\ntrain/dog/2.jpg 1\ntrain/fox/3.jpg 2\n";
const GOOD_TEST: &str = "test/cat/1.jpg 0\ntest/dog/2.jpg 1\ntest/fox/3.jpg 2\n";

/// A message as its snapshot keeps it: the scratch folder's path (random) replaced.
fn redact(s: &Scratch, msg: &str) -> String {
    msg.replace(&s.dir.path().display().to_string(), "[scratch]")
}

fn err_of(r: rac_core::Result<Dataset>) -> String {
    match r {
        Ok(_) => panic!("bad input was accepted"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn a_good_scratch_set_loads() {
    let s = Scratch::new();
    s.write("train.txt", GOOD_TRAIN);
    s.write("test.txt", GOOD_TEST);
    let ds = s.load(&s.manifest("count = 3", "")).unwrap();
    assert_eq!(ds.class_texts, ["cat", "dog", "fox"]);
    assert_eq!(ds.stats().few, 3);
}

#[test]
fn missing_split_file_names_the_path() {
    let s = Scratch::new();
    s.write("test.txt", GOOD_TEST);
    let msg = err_of(s.load(&s.manifest("count = 3", "")));
    assert!(msg.contains("split file not found") && msg.contains("train.txt"), "{msg}");
    insta::assert_snapshot!("missing_split_file_names_the_path", redact(&s, &msg));
}

#[test]
fn missing_manifest_names_the_path() {
    let msg = Dataset::load(Path::new("no/such/manifest.toml"), &DataOverrides::default(), &cache()).unwrap_err().to_string();
    assert!(msg.contains("data manifest not found: no/such/manifest.toml"), "{msg}");
    insta::assert_snapshot!("missing_manifest_names_the_path", msg);
}

#[test]
fn malformed_split_line_names_file_and_line() {
    let s = Scratch::new();
    s.write("train.txt", "train/cat/1.jpg 0\ntrain/dog/2.jpg 1\ntrain/fox/3.jpg\n");
    s.write("test.txt", GOOD_TEST);
    let msg = err_of(s.load(&s.manifest("count = 3", "")));
    assert!(msg.contains("train.txt:3:") && msg.contains("expected `path label`"), "{msg}");
    insta::assert_snapshot!("malformed_split_line_names_file_and_line", redact(&s, &msg));

    s.write("train.txt", "train/cat/1.jpg zero\n");
    let msg = err_of(s.load(&s.manifest("count = 3", "")));
    assert!(msg.contains("train.txt:1:") && msg.contains("not an integer"), "{msg}");
    insta::assert_snapshot!("malformed_split_line_names_file_and_line_2", redact(&s, &msg));
}

#[test]
fn negative_label_names_file_and_line() {
    let s = Scratch::new();
    s.write("train.txt", "train/cat/1.jpg 0\ntrain/dog/2.jpg -1\n");
    s.write("test.txt", GOOD_TEST);
    let msg = err_of(s.load(&s.manifest("count = 3", "")));
    assert!(msg.contains("train.txt:2:") && msg.contains("negative"), "{msg}");
    insta::assert_snapshot!("negative_label_names_file_and_line", redact(&s, &msg));
}

#[test]
fn out_of_range_label_names_file_and_line() {
    let s = Scratch::new();
    s.write("train.txt", GOOD_TRAIN);
    s.write("test.txt", "test/cat/1.jpg 0\n\ntest/dog/2.jpg 7\n");
    let msg = err_of(s.load(&s.manifest("count = 3", "")));
    assert!(msg.contains("test.txt:3:") && msg.contains("label 7 is out of range"), "{msg}");
    insta::assert_snapshot!("out_of_range_label_names_file_and_line", redact(&s, &msg));
}

#[test]
fn label_gap_names_file_and_class() {
    let s = Scratch::new();
    s.write("train.txt", "train/cat/1.jpg 0\ntrain/fox/3.jpg 2\n");
    s.write("test.txt", GOOD_TEST);
    let msg = err_of(s.load(&s.manifest("count = 3", "")));
    assert!(msg.contains("train.txt") && msg.contains("label gap") && msg.contains("class 1"), "{msg}");
    insta::assert_snapshot!("label_gap_names_file_and_class", redact(&s, &msg));
    // Without a declared count, the gap is found the same way.
    let msg = err_of(s.load(&s.manifest("", "")));
    assert!(msg.contains("label gap") && msg.contains("class 1"), "{msg}");
    insta::assert_snapshot!("label_gap_names_file_and_class_2", redact(&s, &msg));
}

#[test]
fn unknown_manifest_key_is_rejected_with_its_line() {
    let s = Scratch::new();
    let text = std::fs::read_to_string(rac_tests::manifest("fashion-mnist-lt.toml")).unwrap();
    let typo = text.replace("max_per_class = 5000", "max_per_clas = 5000");
    let line = typo.lines().position(|l| l.starts_with("max_per_clas ")).unwrap() + 1;
    let p = s.write("typo.toml", &typo);
    let msg = DataManifest::load(&p).unwrap_err().to_string();
    assert!(msg.contains("typo.toml"), "{msg}");
    insta::assert_snapshot!("unknown_manifest_key_is_rejected_with_its_line", redact(&s, &msg));
    assert!(msg.contains("unknown field `max_per_clas`"), "{msg}");
    assert!(msg.contains(&format!("line {line}")), "{msg}");
}

#[test]
fn invalid_manifest_values_name_the_field() {
    let s = Scratch::new();
    let text = std::fs::read_to_string(rac_tests::manifest("fashion-mnist-lt.toml")).unwrap();
    let p = s.write("bad.toml", &text.replace("imbalance_factor = 500.0", "imbalance_factor = 0.5"));
    let msg = DataManifest::load(&p).unwrap_err().to_string();
    assert!(msg.contains("bad.toml") && msg.contains("`long_tail.imbalance_factor`"), "{msg}");
    insta::assert_snapshot!("invalid_manifest_values_name_the_field", redact(&s, &msg));
    let p = s.write("bad2.toml", &text.replace("\"Bag\", ", ""));
    let msg = DataManifest::load(&p).unwrap_err().to_string();
    assert!(msg.contains("`classes.texts`") && msg.contains("9 texts"), "{msg}");
    insta::assert_snapshot!("invalid_manifest_values_name_the_field_2", redact(&s, &msg));
}

#[test]
fn wrong_checksum_names_the_file() {
    let s = Scratch::new();
    s.write("train.txt", GOOD_TRAIN);
    s.write("test.txt", GOOD_TEST);
    let m = s.manifest("count = 3", "").to_string_lossy().into_owned();
    let text =
        std::fs::read_to_string(&m).unwrap().replace("file = \"train.txt\" }", &format!("file = \"train.txt\", sha256 = \"{}\" }}", "0".repeat(64)));
    std::fs::write(&m, text).unwrap();
    let msg = err_of(s.load(Path::new(&m)));
    assert!(msg.contains("checksum mismatch") && msg.contains("train.txt"), "{msg}");
    insta::assert_snapshot!("wrong_checksum_names_the_file", redact(&s, &msg));
}

#[test]
fn unreadable_image_names_the_image_and_the_split_line() {
    let s = Scratch::new();
    s.write("train.txt", GOOD_TRAIN);
    s.write("test.txt", GOOD_TEST);
    s.write("img/train/cat/1.jpg", "this is not a JPEG");
    let ds = s.load(&s.manifest("count = 3", "")).unwrap();
    let msg = ds.train.image(0).unwrap_err().to_string();
    assert!(msg.contains("train/cat/1.jpg") && msg.contains("train.txt:1"), "{msg}");
    insta::assert_snapshot!("unreadable_image_names_the_image_and_the_split_line", redact(&s, &msg));
    // A missing image is reported the same way, with its line.
    let msg = ds.train.image(1).unwrap_err().to_string();
    assert!(msg.contains("train/dog/2.jpg") && msg.contains("train.txt:2"), "{msg}");
    insta::assert_snapshot!("unreadable_image_names_the_image_and_the_split_line_2", redact(&s, &msg));
}

#[test]
fn cli_reports_errors_without_panicking() {
    let s = Scratch::new();
    s.write("train.txt", "train/cat/1.jpg 0\ntrain/dog/2.jpg x\n");
    s.write("test.txt", GOOD_TEST);
    let m = s.manifest("count = 3", "");
    let out = rac(&["data", "stats", m.to_str().unwrap()], &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "a clean error exit, not a panic (101): {stderr}");
    assert!(stderr.starts_with("error: ") && stderr.contains("train.txt:2:"), "{stderr}");
    insta::assert_snapshot!("cli_reports_errors_without_panicking", redact(&s, &stderr));

    // The Places manifest without a split folder says how to give one.
    let out = rac(&["data", "stats", "data-manifests/places365-lt.toml"], &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr.contains("split_list.split_dir") && stderr.contains("--split-dir"), "{stderr}");
    insta::assert_snapshot!("cli_reports_errors_without_panicking_2", redact(&s, &stderr));
}
