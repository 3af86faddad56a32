//! Property tests of the parsers that read user input: the data manifest, the split list,
//! the experiment file and the feature file. Each gets arbitrary bytes and mutations of a
//! real, valid input (the packaged manifests and recipe, lines of the real Places365-LT split
//! list, a feature file written by the project): it must never panic, and must answer
//! with a value or with an error that names the file.
//!
//! `RAC_PROPTEST_CASES` sets the number of cases per property (default 10,000).

use std::path::Path;
use std::sync::OnceLock;

use proptest::prelude::*;
use rac_core::data::DataManifest;
use rac_core::data::split_list::SplitList;
use rac_core::experiment::Experiment;
use rac_core::features::FeatureFile;

fn cases() -> u32 {
    std::env::var("RAC_PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(10_000)
}

fn config() -> ProptestConfig {
    ProptestConfig { cases: cases(), failure_persistence: None, ..ProptestConfig::default() }
}

/// A mutation of `base`: bytes overwritten, inserted or removed at chosen places.
#[derive(Debug, Clone)]
enum Edit {
    Set(usize, u8),
    Insert(usize, u8),
    Remove(usize),
    Truncate(usize),
}

fn edits() -> impl Strategy<Value = Vec<Edit>> {
    let one = prop_oneof![
        (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Edit::Set(i, b)),
        (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Edit::Insert(i, b)),
        any::<usize>().prop_map(Edit::Remove),
        any::<usize>().prop_map(Edit::Truncate),
    ];
    proptest::collection::vec(one, 1..6)
}

fn mutate(base: &[u8], edits: &[Edit]) -> Vec<u8> {
    let mut out = base.to_vec();
    for e in edits {
        let n = out.len().max(1);
        match *e {
            Edit::Set(i, b) if !out.is_empty() => out[i % n] = b,
            Edit::Insert(i, b) => out.insert(i % (out.len() + 1), b),
            Edit::Remove(i) if !out.is_empty() => {
                out.remove(i % n);
            }
            Edit::Truncate(i) => out.truncate(i % (out.len() + 1)),
            _ => {}
        }
    }
    out
}

/// A mutated text input: the edits, read as UTF-8 where they left it valid, lossily else.
fn mutated_text(base: &str, edits: &[Edit]) -> String {
    String::from_utf8_lossy(&mutate(base.as_bytes(), edits)).into_owned()
}

/// An error from parsing `path` must say which file it is about.
fn names_file(err: &rac_core::Error, path: &Path) -> bool {
    err.to_string().contains(&path.display().to_string())
}

const MANIFESTS: [&str; 4] = [
    include_str!("../data-manifests/fashion-mnist-lt.toml"),
    include_str!("../data-manifests/places365-lt.toml"),
    include_str!("../data-manifests/imagenet-lt.toml"),
    include_str!("../data-manifests/inat2018.toml"),
];
const RECIPE: &str = include_str!("../experiments/demo.toml");

/// The first lines of the real Places365-LT training list (the shared data folder).
fn places_lines() -> &'static str {
    static LINES: OnceLock<String> = OnceLock::new();
    LINES.get_or_init(|| {
        let path = rac_tests::shared_data().join("places365-lt/Places_LT_train.txt");
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        text.lines().take(40).collect::<Vec<_>>().join("\n")
    })
}

/// A valid feature file's bytes, written by the project's own writer.
fn feature_file_bytes() -> &'static [u8] {
    static BYTES: OnceLock<Vec<u8>> = OnceLock::new();
    BYTES.get_or_init(write_feature_file)
}

fn write_feature_file() -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("f.safetensors");
    let (n, dim) = (6, 4);
    let f = FeatureFile {
        vectors: (0..n * dim).map(|i| (i as f32 * 0.37).sin()).collect(),
        dim,
        labels: vec![0, 1, 2, 0, 1, 2],
        class_texts: Some(vec!["a".into(), "b".into(), "c".into()]),
        keys: Some((0..n).map(|i| format!("item{i}")).collect()),
    };
    f.write(&path).unwrap();
    std::fs::read(&path).unwrap()
}

#[test]
fn the_valid_inputs_parse() {
    for m in MANIFESTS {
        DataManifest::parse(Path::new("m.toml"), m).unwrap();
    }
    Experiment::parse(Path::new("demo.toml"), RECIPE).unwrap();
    assert_eq!(SplitList::parse(Path::new("train.txt"), places_lines(), None).unwrap().entries.len(), 40);
    let f = FeatureFile::parse(Path::new("/nonexistent/f.safetensors"), feature_file_bytes()).unwrap();
    assert_eq!((f.len(), f.dim), (6, 4));
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn manifests_never_panic(which in 0..MANIFESTS.len(), edits in edits(), junk in ".{0,200}") {
        let path = Path::new("data-manifests/mutated.toml");
        for text in [mutated_text(MANIFESTS[which], &edits), junk] {
            if let Err(e) = DataManifest::parse(path, &text) {
                prop_assert!(names_file(&e, path), "{e}");
            }
        }
    }

    #[test]
    fn split_lists_never_panic(edits in edits(), junk in "[ -~\n\t]{0,300}", classes in proptest::option::of(0usize..400)) {
        let path = Path::new("lists/mutated.txt");
        for text in [mutated_text(places_lines(), &edits), junk] {
            match SplitList::parse(path, &text, classes) {
                Ok(list) => prop_assert!(list.entries.iter().all(|e| classes.is_none_or(|n| e.label < n))),
                Err(e) => prop_assert!(names_file(&e, path), "{e}"),
            }
        }
    }

    #[test]
    fn experiments_never_panic(edits in edits(), junk in ".{0,200}") {
        let path = Path::new("experiments/mutated.toml");
        for text in [mutated_text(RECIPE, &edits), junk] {
            match Experiment::parse(path, &text) {
                // What parses is valid: the checks downstream rely on it.
                Ok(exp) => {
                    prop_assert!(exp.retrieval_request().is_ok() && exp.text_encoder().is_ok() && exp.image_encoder().is_ok());
                    prop_assert!(exp.train.epochs >= 1 && exp.train.batch_size >= 1);
                }
                Err(e) => prop_assert!(names_file(&e, path), "{e}"),
            }
        }
    }

    #[test]
    fn feature_files_never_panic(edits in edits(), junk in proptest::collection::vec(any::<u8>(), 0..256)) {
        let path = Path::new("/nonexistent/mutated.safetensors");
        for bytes in [mutate(feature_file_bytes(), &edits), junk] {
            match FeatureFile::parse(path, &bytes) {
                Ok(f) => prop_assert_eq!(f.vectors.len(), f.len() * f.dim),
                Err(e) => prop_assert!(names_file(&e, path), "{e}"),
            }
        }
    }
}
