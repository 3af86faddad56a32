//! The retrieval index on real LMDB: every backend, dynamic sources, drop_self, the
//! neighbour cache, crash safety and bad input. Vectors come from the clustered synthetic
//! generator (small sizes, so the suite stays fast in debug builds).

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use rac_core::Error;
use rac_core::bench::recall_at;
use rac_core::data::synthetic::{SyntheticSet, SyntheticSpec, generate};
use rac_core::features::FeatureFile;
use rac_core::index::internals::Failpoint;
use rac_core::index::{Backend, CacheOutcome, IndexConfig, ItemId, Metric, Queries, QuerySet, RetrievalIndex, SearchRequest, Source};
use rac_tests::rac_bin;

fn small_set(n_base: usize, n_queries: usize, dim: usize, seed: u64) -> SyntheticSet {
    generate(&SyntheticSpec { n_base, n_queries, dim, clusters: 40, subspace: 12.min(dim), spread: 0.35, noise: 0.02, seed }).unwrap()
}

fn source(name: &str, vectors: &[f32], dim: usize, label_offset: u32) -> Source {
    let n = vectors.len() / dim;
    let labels: Vec<u32> = (0..n as u32).map(|i| label_offset + i % 7).collect();
    let texts = labels.iter().map(|l| format!("{name} class {l}")).collect();
    Source::from_vecs(name, vectors.to_vec(), dim, texts, labels).unwrap()
}

/// Settings for small test sets: arroy's defaults are sized for 100k items, where they
/// inspect a few per cent of the index; here fewer trees and candidates keep debug runs fast.
fn config(backend: Backend, metric: Metric) -> IndexConfig {
    let mut c = IndexConfig::with_backend(backend);
    c.metric = metric;
    c.map_size = 64 << 20;
    c.arroy.n_trees = 8;
    c.arroy.search_k = 400;
    c
}

/// Brute force over rows numbered from 0 (see [`rac_tests::brute_force`]).
fn naive(base: &[f32], queries: &[f32], dim: usize, k: usize, metric: Metric) -> Vec<Vec<(ItemId, f32)>> {
    let items: Vec<(ItemId, &[f32])> = (0..).zip(base.chunks(dim)).collect();
    rac_tests::brute_force(&items, queries, dim, k, metric)
}

fn hits(index: &RetrievalIndex, queries: &[f32], dim: usize, k: usize) -> Vec<Vec<(ItemId, f32)>> {
    index.search(&Queries::vectors(queries, dim), &SearchRequest::top(k).unwrap()).unwrap()
}

#[test]
fn every_backend_finds_the_true_neighbours_with_true_distances() {
    let dim = 32;
    let set = small_set(1500, 40, dim, 1);
    for metric in [Metric::Cosine, Metric::L2] {
        // L2 on unnormalised vectors, so that a missing sqrt or scale would show.
        let base: Vec<f32> =
            if metric == Metric::L2 { set.base.iter().enumerate().map(|(i, x)| x * (1.0 + (i % 5) as f32)).collect() } else { set.base.clone() };
        let truth = naive(&base, &set.queries, dim, 10, metric);
        for backend in Backend::ALL {
            let dir = tempfile::tempdir().unwrap();
            let mut cfg = config(backend, metric);
            cfg.arroy.search_k = 1000;
            let index = RetrievalIndex::build(dir.path(), &cfg, &[source("a", &base, dim, 0)]).unwrap();
            let got = hits(&index, &set.queries, dim, 10);
            let recall = recall_at(&got, &truth, 10);
            let floor = if backend == Backend::Exact { 1.0 } else { 0.9 };
            assert!(recall >= floor, "{backend} {metric}: recall@10 {recall}");
            // Every returned distance is the true distance of that item.
            for (g, q) in got.iter().zip(set.queries.chunks(dim)) {
                let all = naive(&base, q, dim, base.len() / dim, metric);
                for &(id, d) in g {
                    let true_d = all[0].iter().find(|x| x.0 == id).unwrap().1;
                    assert!((d - true_d).abs() < 1e-3, "{backend} {metric}: item {id} distance {d}, true {true_d}");
                }
                assert!(g.windows(2).all(|w| w[0].1 <= w[1].1 + 1e-6), "{backend}: not sorted");
            }
            if backend == Backend::Exact {
                let ids: Vec<Vec<ItemId>> = got.iter().map(|h| h.iter().map(|x| x.0).collect()).collect();
                let want: Vec<Vec<ItemId>> = truth.iter().map(|h| h.iter().map(|x| x.0).collect()).collect();
                assert_eq!(ids, want, "exact {metric}");
            }
        }
    }
}

#[test]
fn query_returns_texts_and_labels_in_order() {
    let dim = 16;
    let set = small_set(300, 5, dim, 2);
    let dir = tempfile::tempdir().unwrap();
    let index = RetrievalIndex::build(dir.path(), &config(Backend::Exact, Metric::Cosine), &[source("a", &set.base, dim, 0)]).unwrap();
    let res = index.neighbours(&Queries::vectors(&set.queries, dim), &SearchRequest::top(8).unwrap()).unwrap();
    assert_eq!(res.len(), 5);
    for r in &res {
        assert_eq!(r.ids.len(), 8);
        let items = index.items(&r.ids).unwrap();
        for (i, rec) in items.iter().enumerate() {
            assert_eq!(rec.label, r.labels[i]);
            assert_eq!(rec.text, r.texts[i]);
            assert_eq!(rec.source, "a");
            assert_eq!(rec.key, format!("a/{}", r.ids[i]));
            assert_eq!(r.texts[i], format!("a class {}", r.labels[i]));
        }
    }
}

#[test]
fn dynamic_sources_add_then_remove_gives_back_the_original_results() {
    let dim = 24;
    let a = small_set(800, 30, dim, 3);
    // B: near-copies of the queries, so B's items must show up among their neighbours.
    let b: Vec<f32> = a.queries.iter().enumerate().map(|(i, x)| x + 0.001 * ((i % 3) as f32 - 1.0)).collect();
    for backend in Backend::ALL {
        let dir = tempfile::tempdir().unwrap();
        let mut index = RetrievalIndex::build(dir.path(), &config(backend, Metric::Cosine), &[source("a", &a.base, dim, 0)]).unwrap();
        let fp_a = index.fingerprint().to_string();
        let before = index.neighbours(&Queries::vectors(&a.queries, dim), &SearchRequest::top(10).unwrap()).unwrap();

        index.add_source(&source("b", &b, dim, 100)).unwrap();
        assert_ne!(index.fingerprint(), fp_a);
        let b_ids = index.source_ids("b").unwrap();
        let with_b = index.neighbours(&Queries::vectors(&a.queries, dim), &SearchRequest::top(10).unwrap()).unwrap();
        for (i, n) in with_b.iter().enumerate() {
            assert_eq!(n.ids[0], b_ids.start + i as u32, "{backend}: query {i}'s own copy in B is its nearest neighbour");
            assert!(n.texts[0].starts_with("b class"));
        }

        index.remove_source("b").unwrap();
        assert_eq!(index.fingerprint(), fp_a, "{backend}: removing B restores A's fingerprint");
        let after = index.neighbours(&Queries::vectors(&a.queries, dim), &SearchRequest::top(10).unwrap()).unwrap();
        assert_eq!(after, before, "{backend}: results after removing B");
        // And they hold across a reopen.
        drop(index);
        let index = RetrievalIndex::open(dir.path()).unwrap();
        assert_eq!(
            index.neighbours(&Queries::vectors(&a.queries, dim), &SearchRequest::top(10).unwrap()).unwrap(),
            before,
            "{backend}: after reopening"
        );
        assert_eq!(index.stats().unwrap().sources.len(), 1);
    }
}

#[test]
fn drop_self_removes_each_training_item_from_its_own_list() {
    let dim = 16;
    let set = small_set(600, 1, dim, 4);
    for backend in Backend::ALL {
        let dir = tempfile::tempdir().unwrap();
        // A deterministic build: a parallel one's graph (and so how many items find
        // themselves first) depends on thread timing, which a loaded machine changes.
        let cfg = IndexConfig { deterministic: true, ..config(backend, Metric::Cosine) };
        let index = RetrievalIndex::build(dir.path(), &cfg, &[source("train", &set.base, dim, 0)]).unwrap();
        let ids: Vec<ItemId> = index.source_ids("train").unwrap().collect();
        let kept = index.neighbours(&Queries::Items(&ids), &SearchRequest::top(6).unwrap()).unwrap();
        let dropped = index.neighbours(&Queries::Items(&ids), &SearchRequest::top(5).unwrap().dropping_self(true)).unwrap();
        let mut self_first = 0;
        for ((id, k), d) in ids.iter().zip(&kept).zip(&dropped) {
            assert_eq!(d.ids.len(), 5);
            assert!(!d.ids.contains(id), "{backend}: item {id} is in its own list");
            self_first += usize::from(k.ids[0] == *id);
            let expected: Vec<ItemId> = k.ids.iter().copied().filter(|x| x != id).take(5).collect();
            assert_eq!(d.ids, expected, "{backend}: item {id}");
        }
        // Without drop_self, an item is its own nearest neighbour (distance 0).
        assert!(self_first as f64 >= 0.99 * ids.len() as f64, "{backend}: only {self_first} items first in their own list");
        // By vector and key, drop_self drops the item of that key, and nothing when the
        // source holds no such key; by vector alone it is refused, never a blind first hit.
        let v = index.vectors(&ids[..3]).unwrap();
        let keys: Vec<String> = (0..3).map(|i| format!("train/{i}")).collect();
        let by_key = index
            .neighbours(&Queries::Keyed { vectors: &v, dim, source: "train", keys: &keys }, &SearchRequest::top(5).unwrap().dropping_self(true))
            .unwrap();
        for (i, n) in by_key.iter().enumerate() {
            assert_eq!(n.ids, dropped[i].ids, "{backend}: by key");
        }
        let strangers = index
            .neighbours(&Queries::Keyed { vectors: &v, dim, source: "other", keys: &keys }, &SearchRequest::top(5).unwrap().dropping_self(true))
            .unwrap();
        assert_eq!(
            strangers,
            index.neighbours(&Queries::vectors(&v, dim), &SearchRequest::top(5).unwrap()).unwrap(),
            "{backend}: no such source, nothing dropped"
        );
        let err = index.neighbours(&Queries::vectors(&v, dim), &SearchRequest::top(5).unwrap().dropping_self(true)).unwrap_err().to_string();
        assert!(err.contains("drop_self needs to know which item each query is"), "{err}");
    }
}

#[test]
fn neighbour_cache_equals_fresh_search_for_every_k_and_is_invalidated_by_source_changes() {
    let dim = 16;
    let set = small_set(400, 30, dim, 5);
    let k_max = 12;
    for backend in Backend::ALL {
        let dir = tempfile::tempdir().unwrap();
        let mut index = RetrievalIndex::build(dir.path(), &config(backend, Metric::Cosine), &[source("train", &set.base, dim, 0)]).unwrap();
        let test = QuerySet::Features { name: "test", vectors: &set.queries, dim };
        let train = QuerySet::Source("train");
        let (_, o1) = index.neighbour_cache().lists(&test, SearchRequest::new(k_max, k_max, false).unwrap()).unwrap();
        let (_, o2) = index.neighbour_cache().lists(&train, SearchRequest::new(3, k_max, true).unwrap()).unwrap();
        assert_eq!((o1, o2), (CacheOutcome::Computed, CacheOutcome::Computed));
        let ids: Vec<ItemId> = index.source_ids("train").unwrap().collect();
        for k in 1..=k_max {
            let (cached, outcome) = index.neighbour_cache().lists(&test, SearchRequest::new(k, k_max, false).unwrap()).unwrap();
            assert_eq!(outcome, CacheOutcome::Hit, "{backend} k={k}");
            assert_eq!(
                cached.hits(),
                index.search(&Queries::vectors(&set.queries, dim), &SearchRequest::top(k).unwrap()).unwrap(),
                "{backend} test k={k}"
            );
            let (cached, outcome) = index.neighbour_cache().lists(&train, SearchRequest::new(k, k_max, true).unwrap()).unwrap();
            assert_eq!(outcome, CacheOutcome::Hit);
            assert_eq!(
                cached.hits(),
                index.search(&Queries::Items(&ids), &SearchRequest::top(k).unwrap().dropping_self(true)).unwrap(),
                "{backend} train k={k}"
            );
        }
        // Survives a reopen.
        drop(index);
        let mut index = RetrievalIndex::open(dir.path()).unwrap();
        assert_eq!(index.neighbour_cache().entries().unwrap().len(), 2);
        assert!(index.neighbour_cache().get(&test, SearchRequest::new(5, k_max, false).unwrap()).unwrap().is_some());
        // Other queries under the same name are not served from the cache.
        let other = &set.queries[dim..];
        let renamed = QuerySet::Features { name: "test", vectors: other, dim };
        assert!(index.neighbour_cache().get(&renamed, SearchRequest::new(5, k_max, false).unwrap()).unwrap().is_none());
        // drop_self asked differently is not served either.
        assert!(index.neighbour_cache().get(&train, SearchRequest::new(5, k_max, false).unwrap()).unwrap().is_none());
        // Adding a source invalidates every entry, and the next lists see the new items.
        let near: Vec<f32> = set.queries.iter().map(|x| x * 1.0001).collect();
        index.add_source(&source("extra", &near, dim, 50)).unwrap();
        assert!(index.neighbour_cache().entries().unwrap().is_empty());
        assert!(index.neighbour_cache().get(&test, SearchRequest::new(5, k_max, false).unwrap()).unwrap().is_none());
        let (lists, outcome) = index.neighbour_cache().lists(&test, SearchRequest::new(5, k_max, false).unwrap()).unwrap();
        assert_eq!(outcome, CacheOutcome::Computed);
        let extra = index.source_ids("extra").unwrap();
        assert!(extra.contains(&lists.row(0).0[0]), "{backend}: the new source's items are found");
        // Removing it invalidates again.
        index.remove_source("extra").unwrap();
        assert!(index.neighbour_cache().get(&test, SearchRequest::new(5, k_max, false).unwrap()).unwrap().is_none());
        // k outside 1..=k_max is refused.
        assert!(matches!(SearchRequest::new(0, k_max, false), Err(Error::Setting { .. })));
        assert!(matches!(SearchRequest::new(k_max + 1, k_max, false), Err(Error::Setting { .. })));
        // A cache deeper than the index is an error that names k_max, not the cache folder.
        let n = index.len();
        let msg = index.neighbour_cache().lists(&train, SearchRequest::new(1, n, true).unwrap()).unwrap_err().to_string();
        assert_eq!(msg, format!("field `k_max`: {n} neighbours plus the query itself are more than the index's {n} items; lower k_max"));
    }
}

#[test]
fn recall_on_the_clustered_synthetic_set() {
    // A reduced version of the acceptance set (the full 100k x 768 runs in `rac index bench`).
    let spec = SyntheticSpec { n_base: 5000, n_queries: 100, dim: 96, clusters: 100, subspace: 32, spread: 0.35, noise: 0.02, seed: 11 };
    let set = generate(&spec).unwrap();
    let dim = spec.dim;
    // The truth is a brute force outside the index, so that the exact backend is measured
    // against something other than itself.
    let truth = naive(&set.base, &set.queries, dim, 30, Metric::Cosine);
    for backend in Backend::ALL {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = config(backend, Metric::Cosine);
        // arroy inspects at most a fifth of the items per query, as at full scale.
        cfg.arroy.n_trees = 24;
        cfg.arroy.search_k = 1000;
        let index = RetrievalIndex::build(dir.path(), &cfg, &[source("s", &set.base, dim, 0)]).unwrap();
        let got = hits(&index, &set.queries, dim, 30);
        let r30 = recall_at(&got, &truth, 30);
        let floor = match backend {
            Backend::Exact => 1.0,
            Backend::Hnsw | Backend::Usearch => 0.99,
            Backend::Arroy => 0.95,
        };
        assert!(r30 >= floor, "{backend}: recall@30 {r30} < {floor}");
    }
}

fn assert_unchanged(dir: &Path, queries: &[f32], dim: usize, before: &[rac_core::index::Neighbours], items: usize) {
    let index = RetrievalIndex::open(dir).unwrap();
    assert_eq!(index.len(), items);
    assert!(index.notes().is_empty(), "the committed state opens as it was, nothing repaired: {:?}", index.notes());
    assert_eq!(index.neighbours(&Queries::vectors(queries, dim), &SearchRequest::top(5).unwrap()).unwrap(), before);
}

#[test]
fn an_injected_failure_before_commit_leaves_the_index_as_it_was() {
    let dim = 16;
    let set = small_set(400, 10, dim, 6);
    for backend in Backend::ALL {
        let dir = tempfile::tempdir().unwrap();
        let cfg = config(backend, Metric::Cosine);
        let mut index = RetrievalIndex::build(dir.path(), &cfg, &[source("a", &set.base, dim, 0)]).unwrap();
        let before = index.neighbours(&Queries::vectors(&set.queries, dim), &SearchRequest::top(5).unwrap()).unwrap();
        index.set_failpoint(Some(Failpoint::BeforeCommit));
        let err = index.add_source(&source("b", &set.queries, dim, 9)).unwrap_err();
        assert!(err.to_string().contains("injected failure"), "{err}");
        assert!(index.remove_source("a").is_err());
        // The handle itself still answers as before.
        assert_eq!(index.neighbours(&Queries::vectors(&set.queries, dim), &SearchRequest::top(5).unwrap()).unwrap(), before);
        drop(index);
        assert_unchanged(dir.path(), &set.queries, dim, &before, 400);
        // A whole rebuild that fails is not visible either.
        let other = small_set(300, 1, dim, 60);
        let r = RetrievalIndex::build_with(dir.path(), &cfg, &[source("z", &other.base, dim, 0)], Some(Failpoint::BeforeCommit));
        assert!(r.is_err());
        assert_unchanged(dir.path(), &set.queries, dim, &before, 400);
    }
}

fn write_features(path: &Path, vectors: &[f32], dim: usize) {
    let n = vectors.len() / dim;
    FeatureFile {
        vectors: vectors.to_vec(),
        dim,
        labels: (0..n as u32).map(|i| i % 3).collect(),
        class_texts: Some(vec!["zero".into(), "one".into(), "two".into()]),
        keys: None,
    }
    .write(path)
    .unwrap();
}

fn wait_for(marker: &Path, child: &mut std::process::Child) {
    let start = Instant::now();
    while !marker.exists() {
        if let Some(status) = child.try_wait().unwrap() {
            panic!("rac exited early: {status}");
        }
        assert!(start.elapsed() < Duration::from_secs(120), "the build never reached its commit");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn killing_a_build_mid_way_leaves_the_previous_index_openable_with_the_same_results() {
    let dim = 16;
    let set = small_set(500, 10, dim, 7);
    let work = tempfile::tempdir().unwrap();
    let a = work.path().join("a.safetensors");
    let b = work.path().join("b.safetensors");
    write_features(&a, &set.base, dim);
    write_features(&b, &small_set(900, 1, dim, 70).base, dim);
    for backend in ["usearch", "hnsw", "arroy", "exact"] {
        let dir = work.path().join(format!("index-{backend}"));
        let out = Command::new(rac_bin())
            .args(["index", "build", dir.to_str().unwrap(), "--features", a.to_str().unwrap(), "--backend", backend])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let before = RetrievalIndex::open(&dir).unwrap().neighbours(&Queries::vectors(&set.queries, dim), &SearchRequest::top(5).unwrap()).unwrap();

        // Rebuild from B, add-source B and remove-source, each killed (SIGKILL) after all its
        // work (for usearch: a new graph generation written), before commit.
        let b_str = b.to_str().unwrap();
        let d_str = dir.to_str().unwrap();
        let runs: [&[&str]; 3] = [
            &["index", "build", d_str, "--features", b_str, "--backend", backend],
            &["index", "add-source", d_str, "extra", "--features", b_str],
            &["index", "remove-source", d_str, "train"],
        ];
        for (i, args) in runs.iter().enumerate() {
            let marker = work.path().join(format!("ready-{backend}-{i}"));
            let mut child = Command::new(rac_bin())
                .args(*args)
                .env("RAC_INDEX_FAILPOINT", format!("hang-before-commit={}", marker.display()))
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .unwrap();
            wait_for(&marker, &mut child);
            child.kill().unwrap();
            child.wait().unwrap();
            assert_unchanged(&dir, &set.queries, dim, &before, 500);
        }
    }
    // A first build that is killed leaves nothing that opens as an index.
    let fresh = work.path().join("fresh");
    let marker = work.path().join("ready-fresh");
    let mut child = Command::new(rac_bin())
        .args(["index", "build", fresh.to_str().unwrap(), "--features", a.to_str().unwrap()])
        .env("RAC_INDEX_FAILPOINT", format!("hang-before-commit={}", marker.display()))
        .spawn()
        .unwrap();
    wait_for(&marker, &mut child);
    child.kill().unwrap();
    child.wait().unwrap();
    match RetrievalIndex::open(&fresh) {
        Err(Error::NotAnIndex { reason, .. }) => assert!(reason.contains("interrupted"), "{reason}"),
        other => panic!("expected NotAnIndex, got {:?}", other.map(|_| ())),
    }
    // ... and a later build there succeeds.
    let index = RetrievalIndex::build(&fresh, &IndexConfig::default(), &[source("a", &set.base, dim, 0)]).unwrap();
    assert_eq!(index.len(), 500);
}

// ---- bad input: each refused with a clear error, the index left as it was ----------------

fn built(dir: &Path, dim: usize) -> (RetrievalIndex, SyntheticSet, Vec<rac_core::index::Neighbours>) {
    let set = small_set(200, 4, dim, 8);
    let index = RetrievalIndex::build(dir, &config(Backend::Hnsw, Metric::Cosine), &[source("a", &set.base, dim, 0)]).unwrap();
    let before = index.neighbours(&Queries::vectors(&set.queries, dim), &SearchRequest::top(5).unwrap()).unwrap();
    (index, set, before)
}

#[test]
fn wrong_dimension_is_refused_for_sources_and_queries() {
    let dir = tempfile::tempdir().unwrap();
    let (mut index, set, before) = built(dir.path(), 16);
    let err = index.add_source(&source("b", &set.base[..17 * 10], 17, 0)).unwrap_err();
    assert!(matches!(err, Error::IndexDimension { expected: 16, received: 17, .. }), "{err}");
    assert!(err.to_string().contains("source `b`"), "{err}");
    let err = index.neighbours(&Queries::vectors(&set.base[..8 * 3], 8), &SearchRequest::top(5).unwrap()).unwrap_err();
    assert!(matches!(err, Error::IndexDimension { expected: 16, received: 8, .. }), "{err}");
    assert!(matches!(index.search(&Queries::vectors(&[0.5; 18], 9), &SearchRequest::top(3).unwrap()), Err(Error::IndexDimension { .. })));
    // Sources of mixed dimension in one build are refused too.
    let other = tempfile::tempdir().unwrap();
    let err = RetrievalIndex::build(other.path(), &IndexConfig::default(), &[source("x", &set.base, 16, 0), source("y", &set.base[..40], 8, 0)]);
    assert!(matches!(err, Err(Error::IndexDimension { .. })));
    drop(index);
    assert_unchanged(dir.path(), &set.queries, 16, &before, 200);
}

#[test]
fn empty_index_and_bad_k_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let empty = RetrievalIndex::create(dir.path(), &config(Backend::Exact, Metric::Cosine)).unwrap();
    let err = empty.neighbours(&Queries::vectors(&[1.0; 8], 8), &SearchRequest::top(1).unwrap()).unwrap_err();
    assert!(matches!(err, Error::IndexEmpty { .. }), "{err}");
    assert!(err.to_string().contains("add a source"), "{err}");
    drop(empty);
    // Still an (empty) index after reopening.
    assert_eq!(RetrievalIndex::open(dir.path()).unwrap().stats().unwrap().items, 0);

    let dir = tempfile::tempdir().unwrap();
    let (index, set, before) = built(dir.path(), 16);
    let q = &set.queries[..16];
    let err = SearchRequest::top(0).unwrap_err();
    assert!(matches!(&err, Error::Setting { field, .. } if field == "k"), "k=0: {err}");
    let err = index.neighbours(&Queries::vectors(q, 16), &SearchRequest::top(201).unwrap()).unwrap_err();
    assert!(matches!(err, Error::IndexK { .. }), "k=201: {err}");
    // 200 neighbours plus the item itself are more than the index holds.
    let first = index.sources().unwrap()[0].first_id;
    let err = index.neighbours(&Queries::Items(&[first]), &SearchRequest::top(200).unwrap().dropping_self(true)).unwrap_err();
    assert!(matches!(err, Error::IndexK { .. }) && err.to_string().contains("plus one for drop_self"), "{err}");
    assert_eq!(index.neighbours(&Queries::vectors(q, 16), &SearchRequest::top(200).unwrap()).unwrap()[0].ids.len(), 200);
    let err = index.neighbours(&Queries::vectors(&[0.0; 16], 16), &SearchRequest::top(3).unwrap()).unwrap_err();
    assert!(err.to_string().contains("all zeros"), "{err}");
    drop(index);
    assert_unchanged(dir.path(), &set.queries, 16, &before, 200);
}

#[test]
fn unknown_and_duplicate_sources_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (mut index, set, before) = built(dir.path(), 16);
    let err = index.remove_source("nope").unwrap_err();
    assert!(matches!(&err, Error::UnknownSource { name, known, .. } if name == "nope" && known == "a"), "{err}");
    let err = index.add_source(&source("a", &set.queries, 16, 0)).unwrap_err();
    assert!(matches!(&err, Error::SourceExists { name, .. } if name == "a"), "{err}");
    let other = tempfile::tempdir().unwrap();
    let twice = RetrievalIndex::build(other.path(), &IndexConfig::default(), &[source("x", &set.base, 16, 0), source("x", &set.base, 16, 0)]);
    assert!(matches!(twice, Err(Error::SourceExists { .. })));
    assert!(Source::from_vecs("s", vec![1.0; 10], 4, vec![], vec![]).is_err());
    assert!(Source::from_vecs("s", vec![f32::NAN; 4], 4, vec!["t".into()], vec![0]).is_err());
    drop(index);
    assert_unchanged(dir.path(), &set.queries, 16, &before, 200);
}

#[test]
fn folders_that_are_not_indexes_or_of_another_version_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("missing");
    assert!(matches!(RetrievalIndex::open(&missing), Err(Error::NotAnIndex { .. })));
    assert!(!missing.exists(), "opening must not create the folder");
    let empty = tmp.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let err = RetrievalIndex::open(&empty).err().unwrap();
    assert!(err.to_string().contains("no data.mdb"), "{err}");
    let junk = tmp.path().join("junk");
    std::fs::create_dir(&junk).unwrap();
    std::fs::write(junk.join("data.mdb"), vec![7u8; 8192]).unwrap();
    assert!(matches!(RetrievalIndex::open(&junk), Err(Error::NotAnIndex { .. })));
    let set = small_set(50, 1, 8, 9);
    assert!(matches!(RetrievalIndex::build(&junk, &IndexConfig::default(), &[source("a", &set.base, 8, 0)]), Err(Error::NotAnIndex { .. })));
    assert_eq!(std::fs::read(junk.join("data.mdb")).unwrap(), vec![7u8; 8192], "a build never overwrites a foreign file");
    // A folder with other files is not overwritten by a build.
    let busy = tmp.path().join("busy");
    std::fs::create_dir(&busy).unwrap();
    std::fs::write(busy.join("notes.txt"), "mine").unwrap();
    assert!(matches!(RetrievalIndex::build(&busy, &IndexConfig::default(), &[source("a", &set.base, 8, 0)]), Err(Error::NotAnIndex { .. })));
    assert_eq!(std::fs::read_to_string(busy.join("notes.txt")).unwrap(), "mine");

    // Another program's LMDB environment (no `meta` database).
    let foreign = tmp.path().join("foreign");
    std::fs::create_dir(&foreign).unwrap();
    {
        let env = unsafe { heed::EnvOpenOptions::new().max_dbs(2).open(&foreign).unwrap() };
        let wtxn = env.write_txn().unwrap();
        let db: heed::Database<heed::types::Str, heed::types::Str> = env
            .create_databases_and_commit(wtxn, |dbo, w| -> heed::Result<_> {
                dbo.create_database(w, Some("stuff")).map(heed::CommitOrAbort::<_, ()>::Commit)
            })
            .unwrap()
            .unwrap_commit();
        let mut wtxn = env.write_txn().unwrap();
        db.put(&mut wtxn, "k", "v").unwrap();
        wtxn.commit().unwrap();
    }
    let err = RetrievalIndex::open(&foreign).err().unwrap();
    assert!(matches!(err, Error::NotAnIndex { .. }), "{err}");
    assert!(matches!(RetrievalIndex::build(&foreign, &IndexConfig::default(), &[source("a", &set.base, 8, 0)]), Err(Error::NotAnIndex { .. })));

    // An index whose stored format version is not ours.
    let old = tmp.path().join("old");
    drop(RetrievalIndex::build(&old, &IndexConfig::default(), &[source("a", &set.base, 8, 0)]).unwrap());
    {
        let env = unsafe { heed::EnvOpenOptions::new().max_dbs(12).open(&old).unwrap() };
        let rtxn = env.read_txn().unwrap();
        let meta: heed::Database<heed::types::Str, heed::types::Bytes> = env
            .open_databases_and_commit(rtxn, |dbo, r| -> heed::Result<_> {
                Ok(heed::CommitOrAbort::<_, ()>::Commit(dbo.open_database(r, Some("meta"))?.unwrap()))
            })
            .unwrap()
            .unwrap_commit();
        let mut wtxn = env.write_txn().unwrap();
        meta.put(&mut wtxn, "format_version", &99u32.to_le_bytes()).unwrap();
        wtxn.commit().unwrap();
    }
    let err = RetrievalIndex::open(&old).err().unwrap();
    assert!(matches!(err, Error::IndexVersion { found: 99, expected: rac_core::index::FORMAT_VERSION, .. }), "{err}");
    assert!(err.to_string().contains("rebuild"), "{err}");
}

#[test]
fn a_full_lmdb_map_grows_or_is_reported_with_the_index_unchanged() {
    let dim = 64;
    let set = small_set(300, 4, dim, 10);
    let big = small_set(6000, 1, dim, 11);
    for backend in [Backend::Exact, Backend::Hnsw] {
        // Grows: a 1 MiB map with room to double.
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = config(backend, Metric::Cosine);
        cfg.map_size = 1 << 20;
        cfg.max_map_size = 64 << 20;
        let mut index = RetrievalIndex::build(dir.path(), &cfg, &[source("a", &set.base, dim, 0)]).unwrap();
        index.add_source(&source("big", &big.base, dim, 0)).unwrap();
        let stats = index.stats().unwrap();
        assert_eq!(stats.items, 6300);
        assert!(stats.map_size > 1 << 20, "{backend}: the map grew ({} bytes)", stats.map_size);
        drop(index);
        assert_eq!(RetrievalIndex::open(dir.path()).unwrap().len(), 6300);

        // May not grow: reported, nothing kept.
        let dir = tempfile::tempdir().unwrap();
        cfg.max_map_size = 1 << 20;
        let mut index = RetrievalIndex::build(dir.path(), &cfg, &[source("a", &set.base, dim, 0)]).unwrap();
        let before = index.neighbours(&Queries::vectors(&set.queries, dim), &SearchRequest::top(5).unwrap()).unwrap();
        let err = index.add_source(&source("big", &big.base, dim, 0)).unwrap_err();
        assert!(matches!(err, Error::IndexMapFull { limit, .. } if limit == 1 << 20), "{backend}: {err}");
        assert!(err.to_string().contains("max_map_size"), "{err}");
        assert_eq!(index.neighbours(&Queries::vectors(&set.queries, dim), &SearchRequest::top(5).unwrap()).unwrap(), before);
        drop(index);
        assert_unchanged(dir.path(), &set.queries, dim, &before, 300);
    }
}

#[test]
fn bad_config_values_name_their_field() {
    let mut c = IndexConfig::default();
    c.hnsw.ef_construction = 4;
    let err = c.validate().unwrap_err().to_string();
    assert!(err.contains("hnsw.ef_construction"), "{err}");
    let mut c = IndexConfig::default();
    c.arroy.n_trees = 0;
    assert!(c.validate().unwrap_err().to_string().contains("arroy.n_trees"));
    let dir = tempfile::tempdir().unwrap();
    let c = IndexConfig { max_map_size: 1, ..IndexConfig::default() };
    assert!(RetrievalIndex::create(dir.path(), &c).is_err());
}

// ---- retrieval-only classification, file formats, the CLI -------------------------------

#[test]
fn vote_rules_follow_the_paper_and_dino() {
    use rac_core::knn::VoteRule::*;
    use rac_core::knn::{DINO_TEMPERATURE, vote};
    let labels = [3, 1, 1, 2, 2, 2];
    let d = [0.01, 0.02, 0.03, 0.5, 0.6, 0.7];
    assert_eq!(vote(&labels, &d, 6, Nearest, Metric::Cosine), Some(3));
    assert_eq!(vote(&labels, &d, 6, Majority, Metric::Cosine), Some(2));
    // Weighted: the two close 1s outweigh three far 2s at T = 0.07.
    assert_eq!(vote(&labels, &d, 6, Weighted { temperature: DINO_TEMPERATURE }, Metric::Cosine), Some(1));
    // With a hot temperature the count wins again.
    assert_eq!(vote(&labels, &d, 6, Weighted { temperature: 100.0 }, Metric::Cosine), Some(2));
    // Ties in the majority go to the label seen first; only the first k count.
    assert_eq!(vote(&[5, 4, 4, 5], &[0.0; 4], 4, Majority, Metric::Cosine), Some(5));
    assert_eq!(vote(&labels, &d, 3, Majority, Metric::Cosine), Some(1));
    assert_eq!(vote(&labels, &d, 0, Majority, Metric::Cosine), None);
}

#[test]
fn retrieval_only_table_reports_balanced_accuracy_per_shot_bucket() {
    use rac_core::index::Neighbours;
    // Classes 0 (many: 150 train), 1 (medium: 50), 2 (few: 5). Two test items each.
    let n = |labels: &[u32]| Neighbours {
        ids: (0..labels.len() as u32).collect(),
        distances: (0..labels.len()).map(|i| i as f32 * 0.1).collect(),
        labels: labels.to_vec(),
        texts: labels.iter().map(|l| l.to_string()).collect(),
    };
    let neighbours = vec![n(&[0, 0, 0]), n(&[1, 0, 0]), n(&[1, 1, 0]), n(&[0, 1, 1]), n(&[2, 0, 0]), n(&[0, 2, 2])];
    let truth = [0, 0, 1, 1, 2, 2];
    let df = rac_core::knn::retrieval_only_table(&neighbours, &truth, &[150, 50, 5], 3, Metric::Cosine).unwrap();
    assert_eq!(df.height(), 3);
    let col = |name: &str| {
        let ca = df.column(name).unwrap().f64().unwrap().clone();
        (0..3).map(|i| ca.get(i)).collect::<Vec<_>>()
    };
    // 1-NN: class 0 1/2, class 1 1/2, class 2 1/2.
    // majority@3: class 0 2/2, class 1 2/2, class 2 1/2.
    assert_eq!(col("all"), vec![Some(50.0), Some(100.0 * (1.0 + 1.0 + 0.5) / 3.0), col("all")[2]]);
    assert_eq!(col("many"), vec![Some(50.0), Some(100.0), col("many")[2]]);
    assert_eq!(col("few"), vec![Some(50.0), Some(50.0), col("few")[2]]);
    let methods: Vec<String> = (0..3).map(|i| df.column("method").unwrap().str().unwrap().get(i).unwrap().to_string()).collect();
    assert_eq!(methods, ["1-NN", "majority", "weighted"]);
    // Mismatched inputs are refused.
    assert!(rac_core::knn::retrieval_only_table(&neighbours, &truth[..2], &[1, 1, 1], 3, Metric::Cosine).is_err());
    assert!(rac_core::knn::retrieval_only_table(&neighbours, &truth, &[150, 50, 5], 4, Metric::Cosine).is_err());
}

#[test]
fn npy_and_feature_files_round_trip_and_name_their_errors() {
    use rac_core::data::npy;
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("x.npy");
    let data: Vec<f32> = (0..12).map(|i| i as f32 * 0.5).collect();
    npy::write_f32(&p, &data, &[3, 4]).unwrap();
    assert_eq!(npy::read_f32(&p).unwrap(), (data.clone(), vec![3, 4]));
    let bytes = std::fs::read(&p).unwrap();
    assert_eq!(bytes.len() % 16, 0, "header padded to 64, data 48 bytes");
    std::fs::write(&p, &bytes[..bytes.len() - 4]).unwrap();
    let err = npy::read_f32(&p).unwrap_err().to_string();
    assert!(err.contains("x.npy") && err.contains("data bytes"), "{err}");

    let f = dir.path().join("f.safetensors");
    write_features(&f, &data, 4);
    let ff = FeatureFile::read(&f).unwrap();
    assert_eq!((ff.dim, ff.len(), ff.labels.clone()), (4, 3, vec![0, 1, 2]));
    assert_eq!(ff.texts(), ["zero", "one", "two"]);
    let src = ff.to_source("train").unwrap();
    assert_eq!(src.len(), 3);
    let bad = dir.path().join("bad.safetensors");
    std::fs::write(&bad, b"not safetensors").unwrap();
    let err = FeatureFile::read(&bad).unwrap_err().to_string();
    assert!(err.contains("bad.safetensors"), "{err}");
    // The feature store's layout: `ids.txt` beside the tensors gives the item keys.
    let store_dir = dir.path().join("entry");
    write_features(&store_dir.join("features.safetensors"), &data, 4);
    std::fs::write(store_dir.join("ids.txt"), "img-a\nimg-b\nimg-c\n").unwrap();
    let ff = FeatureFile::read(&store_dir.join("features.safetensors")).unwrap();
    assert_eq!(ff.keys.as_deref().unwrap(), ["img-a", "img-b", "img-c"]);
    std::fs::write(store_dir.join("ids.txt"), "img-a\n").unwrap();
    let err = FeatureFile::read(&store_dir.join("features.safetensors")).unwrap_err().to_string();
    assert!(err.contains("ids.txt") && err.contains("1 lines for 3"), "{err}");
    let texts = dir.path().join("classes.txt");
    std::fs::write(&texts, "T-shirt\nTrouser\n").unwrap();
    let mut ff2 = FeatureFile::read(&f).unwrap();
    let err = ff2.set_class_texts_from(&texts).unwrap_err().to_string();
    assert!(err.contains("label 2"), "{err}");
    std::fs::write(&texts, "T-shirt\nTrouser\nPullover\n").unwrap();
    ff2.set_class_texts_from(&texts).unwrap();
    assert_eq!(ff2.texts(), ["T-shirt", "Trouser", "Pullover"]);
    let missing = FeatureFile::read(&dir.path().join("none.safetensors")).unwrap_err().to_string();
    assert!(missing.contains("none.safetensors"), "{missing}");
}

fn rac_in(dir: &Path, args: &[&str]) -> std::process::Output {
    Command::new(rac_bin()).args(args).current_dir(dir).output().unwrap()
}

fn ok(out: std::process::Output) -> String {
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn the_index_commands_work_end_to_end() {
    let dim = 16;
    let set = small_set(300, 20, dim, 12);
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    write_features(&w.join("train.safetensors"), &set.base, dim);
    write_features(&w.join("test.safetensors"), &set.queries, dim);
    write_features(&w.join("extra.safetensors"), &set.queries, dim);
    ok(rac_in(w, &["index", "build", "idx", "--features", "train.safetensors", "--backend", "exact"]));
    ok(rac_in(w, &["index", "add-source", "idx", "extra", "--features", "extra.safetensors"]));
    let stats: serde_json::Value = serde_json::from_str(&ok(rac_in(w, &["index", "stats", "idx", "--json"]))).unwrap();
    assert_eq!(stats["items"], 320);
    assert_eq!(stats["backend"], "exact");
    assert_eq!(stats["sources"][1]["name"], "extra");
    assert!(stats["size_on_disk"].as_u64().unwrap() > 0);
    let q: serde_json::Value =
        serde_json::from_str(&ok(rac_in(w, &["index", "query", "idx", "--features", "test.safetensors", "--rows", "2", "--k", "3", "--json"])))
            .unwrap();
    assert_eq!(q.as_array().unwrap().len(), 2);
    assert_eq!(q[0]["ids"][0], 300, "test row 0 finds its copy in `extra`");
    assert_eq!(q[0]["texts"][0], "zero");
    ok(rac_in(w, &["index", "remove-source", "idx", "extra"]));
    let text = ok(rac_in(w, &["index", "stats", "idx"]));
    assert!(text.contains("items           300"), "{text}");
    // Errors are reported, not panics.
    let out = rac_in(w, &["index", "remove-source", "idx", "extra"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no source named `extra`"));
    let out = rac_in(w, &["index", "stats", "nowhere"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("is not a retrieval index"));

    // The retrieval-only table.
    let table = ok(rac_in(w, &["index", "knn-eval", "--train", "train.safetensors", "--test", "test.safetensors", "--k", "5", "--backend", "exact"]));
    for word in ["1-NN", "majority", "weighted", "many", "medium", "few"] {
        assert!(table.contains(word), "{table}");
    }

    // The benchmark, as JSON, on a small synthetic set exported as .npy.
    ok(rac_in(w, &["index", "synth", "--out", "synth", "--n", "400", "--queries", "20", "--dim", "16", "--clusters", "10", "--subspace", "8"]));
    let out = ok(rac_in(w, &["index", "bench", "--npy", "synth", "--json", "--n-trees", "4", "--search-k", "200", "--single-queries", "5"]));
    let rows: serde_json::Value = serde_json::from_str(&out).unwrap();
    let rows = rows.as_array().unwrap();
    assert_eq!(rows.len(), 4);
    for r in rows {
        for key in ["backend", "recall_at_1", "recall_at_10", "recall_at_30", "build_s", "query_ms_p50", "query_ms_p99", "batched_qps"] {
            assert!(!r[key].is_null(), "{key} missing in {r}");
        }
    }
    assert_eq!(rows[0]["backend"], "exact");
    assert_eq!(rows[0]["recall_at_30"], 1.0);
    let out = rac_in(w, &["index", "bench", "--npy", "synth", "--limit-base", "29"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("at least 30 base vectors"), "{}", String::from_utf8_lossy(&out.stderr));
}

/// `rac index bench` without vector arguments benchmarks a data set's training features
/// (base) against its test features (queries), taken from the feature store and encoded on
/// a miss. Here: a small cut of the real Fashion-MNIST-LT, real EfficientNet-Lite0 weights,
/// a fresh store, and the limit flags.
#[test]
fn bench_on_feature_store_features_prints_one_json_array() {
    let data = tempfile::tempdir().unwrap();
    let manifest = rac_tests::tiny_fashion_set(data.path(), 8, 3);
    let store = data.path().join("store");
    let (m, st) = (manifest.to_str().unwrap(), store.to_str().unwrap());
    let args = ["index", "bench", "--manifest", m, "--store", st, "--limit-base", "60", "--limit-queries", "25"];
    let quick = ["--n-trees", "4", "--search-k", "200", "--single-queries", "5", "--json"];
    let out = rac_in(data.path(), &[&args[..], &quick[..]].concat());
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    let stdout = ok(out);
    assert!(stderr.contains("encoded") && stderr.contains("building hnsw"), "progress goes to stderr:\n{stderr}");
    let rows: serde_json::Value = serde_json::from_str(&stdout).expect("stdout is one JSON document");
    let rows = rows.as_array().expect("a JSON array");
    let backends: Vec<&str> = rows.iter().map(|r| r["backend"].as_str().unwrap()).collect();
    assert_eq!(backends, ["exact", "usearch", "hnsw", "arroy"]);
    for r in rows {
        assert_eq!(r["n_items"], 60, "{r}");
        assert_eq!(r["n_queries"], 25, "{r}");
        assert_eq!(r["dim"], 1280, "EfficientNet-Lite0 features: {r}");
        for key in ["recall_at_1", "recall_at_10", "recall_at_30"] {
            let v = r[key].as_f64().unwrap_or_else(|| panic!("{key} missing in {r}"));
            if r["backend"] == "exact" {
                assert_eq!(v, 1.0, "{r}");
            } else {
                assert!(v > 0.0 && v <= 1.0, "{key} of {r}");
            }
        }
        for key in ["build_s", "query_ms_p50", "query_ms_p99", "batched_qps"] {
            assert!(r[key].as_f64().is_some_and(|v| v >= 0.0), "{key} missing in {r}");
        }
        assert!(r["batched_qps"].as_f64().unwrap() > 0.0, "{r}");
        if cfg!(target_os = "linux") {
            let before = r["rss_before_bytes"].as_u64().unwrap_or_else(|| panic!("rss_before_bytes missing in {r}"));
            assert!(r["peak_rss_bytes"].as_u64().is_some_and(|p| p >= before && before > 0), "peak memory of {r}");
        }
    }
    // A second run reads the store instead of encoding.
    let out = rac_in(data.path(), &[&args[..], &quick[..]].concat());
    assert!(String::from_utf8_lossy(&out.stderr).contains("cache hit"), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn an_index_open_in_this_process_is_not_opened_twice_and_reopens_once_dropped() {
    let dim = 8;
    let set = small_set(50, 1, dim, 3);
    let dir = tempfile::tempdir().unwrap();
    let index = RetrievalIndex::build(dir.path(), &config(Backend::Usearch, Metric::Cosine), &[source("a", &set.base, dim, 0)]).unwrap();
    // LMDB forbids two environments of one folder in a process (a second open would reset
    // the lock file's reader table under the first); the error says what to do instead.
    let msg = RetrievalIndex::open(dir.path()).err().expect("a second open is refused").to_string();
    assert!(msg.contains("already open in this process") && msg.contains(&dir.path().display().to_string()), "{msg}");
    drop(index);
    assert_eq!(RetrievalIndex::open(dir.path()).unwrap().len(), 50, "closed, it opens again");
}

// ---- many processes, one index ------------------------------------------------------------

/// The vectors of a writer's own source: clusters of their own (a seed of their own), spread
/// in direction, so that each row answers its own item first. (A large shift along one axis
/// would set them apart but make their cosine distances near-ties that HNSW may swap.)
fn own_rows(n: usize, dim: usize, writer: usize) -> Vec<f32> {
    small_set(n, 1, dim, 500 + writer as u64).base
}

fn stderr_of(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn writers_and_readers_in_many_processes_keep_the_index_whole() {
    let dim = 16;
    let work = tempfile::tempdir().unwrap();
    let dir = work.path().join("shared");
    let (d, base) = (dir.to_str().unwrap().to_string(), work.path().join("base.safetensors"));
    let set = small_set(400, 1, dim, 11);
    write_features(&base, &set.base, dim);
    let b = base.to_str().unwrap().to_string();
    let ok = |args: &[&str]| {
        let out = Command::new(rac_bin()).args(args).output().unwrap();
        assert!(out.status.success(), "rac {args:?}: {}", stderr_of(&out));
        out
    };
    // Deterministic builds (stored in the index, so every later add inserts one item at a
    // time too): usearch's parallel insertion can leave a node unreachable, found only by a
    // query that is its own vector at about 1 in 300 (12-14 of 3,600 on 580 items; none when
    // deterministic): a recall matter, not this test's.
    ok(&["index", "build", &d, "--features", &b, "--deterministic"]);
    let writers = 3;
    let files: Vec<String> = (0..writers)
        .map(|w| {
            let f = work.path().join(format!("w{w}.safetensors"));
            write_features(&f, &own_rows(60, dim, w), dim);
            f.to_str().unwrap().to_string()
        })
        .collect();
    // Flags, not barriers: a thread that fails must fail the test, not leave others waiting.
    let (done, rebuilt) = (std::sync::atomic::AtomicBool::new(false), std::sync::atomic::AtomicBool::new(false));
    std::thread::scope(|scope| {
        // Readers: `rac index query` in a loop; every answer is whole (its nearest item is the
        // query's own training row, which no writer removes) and no query fails.
        let readers: Vec<_> = (0..2)
            .map(|reader| {
                let (d, b, done) = (&d, &b, &done);
                scope.spawn(move || {
                    let mut answered = 0;
                    while !done.load(std::sync::atomic::Ordering::SeqCst) {
                        // The second reader also verifies: a change in progress is no damage.
                        if reader == 1 && answered % 3 == 0 {
                            let out = Command::new(rac_bin()).args(["index", "verify", d]).output().unwrap();
                            assert!(
                                out.status.success(),
                                "verify failed while writers worked: {}{}",
                                String::from_utf8_lossy(&out.stdout),
                                stderr_of(&out)
                            );
                        }
                        let out = Command::new(rac_bin())
                            .args(["index", "query", d, "--features", b, "--rows", "4", "--k", "3", "--json"])
                            .output()
                            .unwrap();
                        assert!(out.status.success(), "a reader failed while writers worked: {}", stderr_of(&out));
                        let hits: Vec<rac_core::index::Neighbours> = serde_json::from_slice(&out.stdout).unwrap();
                        for (i, h) in hits.iter().enumerate() {
                            assert!(h.distances[0] < 1e-4, "query {i} did not find its own item first: {h:?}");
                            assert_eq!(h.labels[0], (i % 3) as u32, "query {i}: {h:?}");
                        }
                        answered += 1;
                    }
                    answered
                })
            })
            .collect();
        // The rebuilder: whole builds of the index (from the training rows only) while the
        // writers change it; the writers' last adds come after its last build.
        let rebuilder = scope.spawn(|| {
            for _ in 0..4 {
                ok(&["index", "build", &d, "--features", &b, "--deterministic"]);
                std::thread::sleep(Duration::from_millis(150));
            }
        });
        // Writers: each adds and removes its own source in turn, racing every other writer.
        let handles: Vec<_> = (0..writers)
            .map(|w| {
                let (d, f, rebuilt) = (&d, &files[w], &rebuilt);
                scope.spawn(move || {
                    let name = format!("src{w}");
                    let mut rng = 0x9e37_79b9_7f4a_7c15u64.wrapping_mul(w as u64 + 1);
                    for _ in 0..8 {
                        // Add or remove, in a random order of its own.
                        rng ^= rng << 13;
                        rng ^= rng >> 7;
                        rng ^= rng << 17;
                        let args: Vec<&str> = if rng.is_multiple_of(2) {
                            vec!["index", "add-source", d, &name, "--features", f]
                        } else {
                            vec!["index", "remove-source", d, &name]
                        };
                        let out = Command::new(rac_bin()).args(&args).output().unwrap();
                        if stderr_of(&out).contains("waiting for") {
                            eprintln!("{name}: waited for another writer");
                        }
                        // Removing a source that is not there (never added, or taken away by a
                        // build) and adding one that is: named errors, never damage.
                        if !out.status.success() {
                            let e = stderr_of(&out);
                            assert!(e.contains("no source named") || e.contains("is already in the index"), "rac {args:?}: {e}");
                        }
                    }
                    let start = Instant::now();
                    while !rebuilt.load(std::sync::atomic::Ordering::SeqCst) {
                        assert!(start.elapsed() < Duration::from_secs(300), "the rebuilds never ended");
                        std::thread::sleep(Duration::from_millis(20));
                    }
                    // After the last build: whatever its own rounds left, the source ends added.
                    let out = Command::new(rac_bin()).args(["index", "remove-source", d, &name]).output().unwrap();
                    assert!(out.status.success() || stderr_of(&out).contains("no source named"), "{}", stderr_of(&out));
                    let out = Command::new(rac_bin()).args(["index", "add-source", d, &name, "--features", f]).output().unwrap();
                    assert!(out.status.success(), "the last add of {name}: {}", stderr_of(&out));
                })
            })
            .collect();
        let rebuilds = rebuilder.join();
        rebuilt.store(true, std::sync::atomic::Ordering::SeqCst);
        let writes: Vec<_> = handles.into_iter().map(|h| h.join()).collect();
        done.store(true, std::sync::atomic::Ordering::SeqCst);
        let reads: Vec<_> = readers.into_iter().map(|r| r.join()).collect();
        rebuilds.expect("the rebuilder");
        writes.into_iter().for_each(|w| w.expect("a writer"));
        for r in reads {
            assert!(r.expect("a reader") > 0, "every reader answered at least once");
        }
    });
    ok(&["index", "verify", &d]);
    let index = RetrievalIndex::open(&dir).unwrap();
    assert!(index.notes().is_empty(), "{:?}", index.notes());
    assert_eq!(index.len(), 400 + writers * 60);
    for w in 0..writers {
        let ids: Vec<ItemId> = index.source_ids(&format!("src{w}")).unwrap().collect();
        let hits = index.search(&Queries::vectors(&own_rows(60, dim, w), dim), &SearchRequest::top(1).unwrap()).unwrap();
        assert_eq!(hits.iter().map(|h| h[0].0).collect::<Vec<_>>(), ids, "src{w} answers its own items first");
    }
    // Only the committed generation's graph file is left (and the lock, free).
    let graphs = std::fs::read_dir(&dir).unwrap().flatten().filter(|e| e.file_name().to_string_lossy().starts_with("graph.")).count();
    assert_eq!(graphs, 1);
}

#[test]
fn a_waiting_writer_names_the_holder_and_a_killed_holder_frees_the_lock() {
    let dim = 16;
    let set = small_set(3000, 10, dim, 21);
    let work = tempfile::tempdir().unwrap();
    let (dir, a, extra) = (work.path().join("ix"), work.path().join("a.safetensors"), work.path().join("extra.safetensors"));
    write_features(&a, &set.base, dim);
    write_features(&extra, &own_rows(50, dim, 1), dim);
    let (d, a, extra) = (dir.to_str().unwrap(), a.to_str().unwrap(), extra.to_str().unwrap());
    let built = Command::new(rac_bin()).args(["index", "build", d, "--features", a]).output().unwrap();
    assert!(built.status.success(), "{}", stderr_of(&built));
    let before = RetrievalIndex::open(&dir).unwrap().neighbours(&Queries::vectors(&set.queries, dim), &SearchRequest::top(5).unwrap()).unwrap();
    // A writer that holds the lock (hung before its commit): a second one gives up after
    // the wait it was given, naming who holds the lock; nothing changed.
    let marker = work.path().join("ready");
    let mut holder = Command::new(rac_bin())
        .args(["index", "add-source", d, "held", "--features", extra])
        .env("RAC_INDEX_FAILPOINT", format!("hang-before-commit={}", marker.display()))
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    wait_for(&marker, &mut holder);
    let out = Command::new(rac_bin()).args(["index", "add-source", d, "second", "--features", extra]).env("RAC_LOCK_WAIT_S", "0.5").output().unwrap();
    let e = stderr_of(&out);
    assert_eq!(out.status.code(), Some(1), "{e}");
    assert!(e.contains(&format!("process {}", holder.id())) && e.contains("adding a source") && e.contains("RAC_LOCK_WAIT_S"), "{e}");
    let bad = Command::new(rac_bin()).args(["index", "remove-source", d, "train"]).env("RAC_LOCK_WAIT_S", "soon").output().unwrap();
    assert!(bad.status.code() == Some(1) && stderr_of(&bad).contains("RAC_LOCK_WAIT_S"), "{}", stderr_of(&bad));
    holder.kill().unwrap();
    holder.wait().unwrap();
    assert_unchanged(&dir, &set.queries, dim, &before, 3000);
    // Killed at random moments of its change, a writer leaves the lock free for the next
    // one and the index as before the change.
    let mut rng = 7u64;
    for round in 0..6 {
        rng = rng.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        let args: &[&str] =
            if round % 2 == 0 { &["index", "add-source", d, "extra", "--features", extra] } else { &["index", "build", d, "--features", a] };
        let mut child = Command::new(rac_bin()).args(args).stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null()).spawn().unwrap();
        std::thread::sleep(Duration::from_millis(5 + (rng >> 33) % 300));
        let finished = child.try_wait().unwrap().is_some();
        child.kill().ok();
        child.wait().unwrap();
        let index = RetrievalIndex::open(&dir).unwrap();
        let expect = if finished && round % 2 == 0 { 3050 } else { index.len() };
        assert!(index.len() == 3000 || index.len() == 3050, "round {round}: {} items", index.len());
        assert_eq!(index.len(), expect);
        drop(index);
        let v = Command::new(rac_bin()).args(["index", "verify", d]).env("RAC_LOCK_WAIT_S", "5").output().unwrap();
        assert!(v.status.success(), "round {round}: {}", stderr_of(&v));
        // The next writer gets the lock at once.
        let next = Command::new(rac_bin()).args(["index", "remove-source", d, "extra"]).env("RAC_LOCK_WAIT_S", "5").output().unwrap();
        let e = stderr_of(&next);
        assert!(next.status.success() || e.contains("no source named"), "round {round}: {e}");
    }
    let index = RetrievalIndex::open(&dir).unwrap();
    assert_eq!((index.len(), index.notes().len()), (3000, 0));
}
