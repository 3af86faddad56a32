//! The index as explicit memory, on the real Fashion-MNIST files: the external split (the
//! images the long-tail profile leaves out), indexes built from it or from a thinned
//! training split, and memory added to a trained model at run time and removed again.

use std::collections::HashSet;
use std::path::Path;

use polars::prelude::*;
use rac_core::data::{DataOverrides, Dataset, class_counts};
use rac_core::experiment::{Added, Experiment, MemoryPlan, Prepared, RunEnv, runtime_memory};
use rac_core::index::{Queries, QuerySet, SearchRequest};
use rac_tests::{cache, manifest, rac, tiny_fashion_set, tiny_fashion_set_with_external};

/// heed opens an LMDB folder once per process, and these tests share the feature store
/// and cached indexes of the small set: they run one at a time.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn lock() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner())
}

#[test]
fn the_external_split_is_exactly_what_the_long_tail_profile_leaves_out() {
    let ds = Dataset::load(&manifest("fashion-mnist-lt.toml"), &DataOverrides::default(), &cache()).unwrap();
    let external = ds.external.as_ref().expect("the default manifest names its external split");
    assert_eq!(ds.train.len(), 10_011);
    assert_eq!(external.len(), 60_000 - 10_011);
    let (train_counts, external_counts) = (ds.train_counts(), class_counts(&external.labels, 10));
    for c in 0..10 {
        assert_eq!(external_counts[c], 6_000 - train_counts[c], "class {c}");
    }
    assert_eq!((external_counts[0], external_counts[9]), (1_000, 5_990), "skewed the other way");
    let train: HashSet<usize> = (0..ds.train.len()).map(|i| ds.train.idx_index(i).unwrap()).collect();
    let rest: HashSet<usize> = (0..external.len()).map(|i| external.idx_index(i).unwrap()).collect();
    assert!(train.is_disjoint(&rest));
    assert_eq!(train.union(&rest).count(), 60_000, "together they are Fashion-MNIST's training file");
    assert_eq!(ds.stats().external_per_class.as_deref(), Some(&external_counts[..]));

    // The quick cut keeps 300 of each class's left-out images, seeded.
    let quick = Dataset::load(&manifest("fashion-mnist-lt-quick.toml"), &DataOverrides::default(), &cache()).unwrap();
    let qx = quick.external.as_ref().unwrap();
    assert_eq!(class_counts(&qx.labels, 10), vec![300; 10]);
    let quick_train: HashSet<usize> = (0..quick.train.len()).map(|i| quick.train.idx_index(i).unwrap()).collect();
    assert!((0..qx.len()).all(|i| !quick_train.contains(&qx.idx_index(i).unwrap())));
    // Train and test features do not depend on the `[external]` section.
    let mut without = ds.manifest.clone();
    without.external = None;
    assert_eq!(without.fingerprint(), ds.manifest.fingerprint());
    assert_ne!(ds.manifest.split_fingerprint(rac_core::data::SplitKind::External), ds.manifest.fingerprint());
}

fn small(manifest: &Path, name: &str) -> Experiment {
    let text = format!(
        "name = \"{name}\"\n[data]\nmanifest = \"{}\"\n[index]\nbackend = \"exact\"\n[retrieval]\nk = 5\nk_max = 8\ntext_encoder = \"bow-random\"\n\
         [model]\ninput_norm = \"standardise\"\n[loss]\nkind = \"lace\"\n[optim]\nlr = 0.01\n[train]\nepochs = 3\nbatch_size = 16\nwarmup_epochs = 1\n",
        manifest.display()
    );
    Experiment::parse(Path::new("small.toml"), &text).unwrap()
}

fn env(runs: &Path) -> RunEnv {
    RunEnv { runs_dir: runs.to_path_buf(), cache: cache(), ..RunEnv::from_env() }
}

#[test]
fn drop_self_drops_a_hit_only_when_it_is_the_query_item() {
    let _one = lock();
    let data = tempfile::tempdir().unwrap();
    let m = tiny_fashion_set_with_external(data.path(), 6, 2, 3);
    let runs = tempfile::tempdir().unwrap();
    let query = SearchRequest::new(5, 8, true).unwrap();

    // An index of external data only: no training query is one of its items.
    let exp = small(&m, "external-only").with("memory.sources", "[\"external\"]").unwrap();
    let mut prep = Prepared::new(&exp, &env(runs.path())).unwrap();
    assert_eq!(prep.index.len(), 30);
    assert_eq!(prep.index.sources().unwrap().iter().map(|s| s.name.as_str()).collect::<Vec<_>>(), ["external"]);
    assert!(prep.train_items().unwrap().iter().all(Option::is_none));
    let (dropped, _) = prep.neighbours(query).unwrap();
    let (kept, _) = prep.neighbours(query.keeping_self()).unwrap();
    assert_eq!(dropped, kept, "nothing is dropped: the first hit is another image");
    let train: Vec<f32> = prep.train.vectors.flatten_all().unwrap().to_vec1().unwrap();
    let plain = prep.index.neighbours(&Queries::vectors(&train, prep.train.dim()), &SearchRequest::top(5).unwrap()).unwrap();
    assert_eq!(dropped, plain);
    drop(prep);

    // A thinned training split: the items it holds drop themselves, the others keep all.
    let exp = small(&m, "half-train").with("memory.thinning.fraction", "0.5").unwrap();
    let mut prep = Prepared::new(&exp, &env(runs.path())).unwrap();
    assert_eq!(prep.index.len(), 30);
    let own = prep.train_items().unwrap();
    assert_eq!(own.iter().filter(|o| o.is_some()).count(), 30);
    let (dropped, _) = prep.neighbours(query).unwrap();
    let (kept, _) = prep.neighbours(query.keeping_self()).unwrap();
    for (i, me) in own.iter().enumerate() {
        match me {
            Some(id) => {
                assert_eq!(kept[i].ids[0], *id, "row {i}: its own image is its nearest");
                assert!(!dropped[i].ids.contains(id), "row {i} is dropped from its own list");
                assert_eq!(dropped[i].ids[..4], kept[i].ids[1..5]);
            }
            None => assert_eq!(dropped[i], kept[i], "row {i} is not in the index: nothing dropped"),
        }
    }
    // A named query set of vectors that are no items cannot drop anything blindly.
    let set = QuerySet::Features { name: "x", vectors: &train, dim: prep.train.dim() };
    let err = prep.index.neighbour_cache().neighbours(&set, query).unwrap_err().to_string();
    assert!(err.contains("drop_self needs to know which item each query is"), "{err}");
}

fn memory_rows(table: &DataFrame, case: &str, step: &str) -> DataFrame {
    let rows = rac_core::eval::rows_with(table, "case", |c| c == case).unwrap();
    rac_core::eval::rows_with(&rows, "step", |s| s == step).unwrap().drop_many(["step"])
}

#[test]
fn memory_added_at_run_time_and_removed_restores_the_first_numbers_bit_for_bit() {
    let _one = lock();
    let data = tempfile::tempdir().unwrap();
    let m = tiny_fashion_set_with_external(data.path(), 8, 3, 4);
    let runs = tempfile::tempdir().unwrap();
    let exp = small(&m, "memory").with("model.mode", "\"rac\"").unwrap();
    let plan = MemoryPlan::external();
    let (rec, table) = runtime_memory(&exp, &plan, &env(runs.path())).unwrap();
    assert_eq!(table.height(), 2 * 3 * 3, "two cases, three steps, three branches");
    for case in [Added::All.name(), Added::FewShot.name()] {
        let (first, added, removed) = (
            memory_rows(&table, case, "1 trained index"),
            memory_rows(&table, case, "2 source added"),
            memory_rows(&table, case, "3 source removed"),
        );
        assert!(first.equals_missing(&removed), "{case}: removing the source restores step 1 exactly:\n{first}\n{removed}");
        let items = |df: &DataFrame| df.column("index_items").unwrap().u64().unwrap().get(0).unwrap();
        // Every class has 8 training images here, so every class is few-shot.
        assert_eq!((items(&first), items(&added), items(&removed)), (80, 120, 80), "{case}");
        assert!(!first.equals_missing(&added), "{case}: the added images change the retrieval branch");
    }
    let chart = rac_kernel_ext::plot_memory_steps(&table).unwrap();
    assert_eq!(chart.categories, ["1 trained index", "2 source added", "3 source removed"]);
    assert_eq!(chart.series.len(), 4, "few and all of the fused branch, per case");
    assert!(chart.series.iter().all(|s| s.x == vec![0.0, 1.0, 2.0] && s.y[0] == s.y[2]));
    assert_eq!(rec.tables["memory"].height(), table.height());
    assert_eq!(rec.meta.study.as_deref(), Some("memory: external (all, few-shot classes)"));
    // The record's metrics are the trained model's on its own index: step 1.
    let fused_step1 = memory_rows(&table, "all", "1 trained index");
    let top1 = |df: &DataFrame| df.column("top1").unwrap().f64().unwrap().into_no_null_iter().collect::<Vec<_>>();
    assert_eq!(top1(&rec.metrics), top1(&fused_step1));
    // A second call reads the record back.
    let (again, table2) = runtime_memory(&exp, &plan, &env(runs.path())).unwrap();
    assert_eq!(again.dir, rec.dir);
    assert!(table2.equals_missing(&table));
    assert_eq!(table2.schema(), table.schema(), "the loaded table has the computed column types (index_items: u64)");
}

#[test]
fn bad_memory_settings_name_their_field_and_write_nothing() {
    let _one = lock();
    let e = Experiment::named("x");
    let msg = e.with("memory.sources", "[\"extrnal\"]").unwrap_err().to_string();
    assert!(msg.contains("`memory.sources`") && msg.contains("unknown source `extrnal`") && msg.contains("train, external, val"), "{msg}");
    let msg = e.with("memory.sources", "[\"test\"]").unwrap_err().to_string();
    assert!(msg.contains("`memory.sources`") && msg.contains("evaluation split"), "{msg}");
    for f in ["0", "1.5", "-0.1", "nan"] {
        let msg = e.with("memory.thinning.fraction", f).unwrap_err().to_string();
        assert!(msg.contains("`memory.thinning.fraction`") && msg.contains("(0, 1]"), "{f}: {msg}");
    }
    let msg = e.with("memory.thinning.per_clas", "3").unwrap_err().to_string();
    assert!(msg.contains("memory.thinning.per_clas"), "{msg}");

    let data = tempfile::tempdir().unwrap();
    let m = tiny_fashion_set_with_external(data.path(), 4, 1, 3);
    let runs = tempfile::tempdir().unwrap();
    let home = cache().home().to_path_buf();
    let listing = |what: &str| -> Vec<String> {
        std::fs::read_dir(home.join(what)).map(|d| d.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect()).unwrap_or_default()
    };
    let (features, indexes) = (listing("features"), listing("indexes"));
    let base = small(&m, "bad").with("memory.sources", "[\"external\"]").unwrap();
    for (key, value, expect) in [
        ("memory.thinning.per_class", "4", "`memory.thinning.per_class`: 4 items per class asked for, but class 0 has only 3 in source `external`"),
        ("memory.thinning.classes", "11", "`memory.thinning.classes`: 11 classes asked for, but source `external` has items of 10 classes"),
    ] {
        let exp = base.with(key, value).unwrap();
        let Err(err) = Prepared::new(&exp, &env(runs.path())) else { panic!("{key} = {value} is more than the source has") };
        assert!(err.to_string().contains(expect), "{err}");
    }
    // A data set without an external split.
    let plain = tiny_fashion_set(&data.path().join("plain"), 4, 1);
    let exp = small(&plain, "bad").with("memory.sources", "[\"external\"]").unwrap();
    let Err(err) = Prepared::new(&exp, &env(runs.path())) else { panic!("no external split") };
    assert!(err.to_string().contains("`memory.sources`") && err.to_string().contains("has no external split"), "{err}");
    assert_eq!((listing("features"), listing("indexes")), (features, indexes), "nothing encoded, no index built");
    assert_eq!(std::fs::read_dir(runs.path()).unwrap().count(), 0, "no record");

    // The run-time study: an unknown source, and a trained index that is not the training split.
    let exp = small(&m, "bad");
    let plan = MemoryPlan { source: "extrnal".into(), cases: vec![Added::All] };
    let err = runtime_memory(&exp, &plan, &env(runs.path())).unwrap_err().to_string();
    assert!(err.contains("unknown source `extrnal`"), "{err}");
    let err = runtime_memory(&base, &MemoryPlan::external(), &env(runs.path())).unwrap_err().to_string();
    assert!(err.contains("`memory`") && err.contains("whole training split"), "{err}");
    let out = rac(&["memory", "steps", "experiments/demo.toml", "--source", "extrnal", "--runs-dir", &runs.path().display().to_string()], &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains("unknown source `extrnal`") && !stderr.contains("panicked"), "{stderr}");
}
