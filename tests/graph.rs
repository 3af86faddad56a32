//! The usearch backend's graph file beside LMDB, and index changes over time on every
//! backend: a graph file that is missing, truncated or edited is rebuilt from LMDB (never
//! searched); a deterministic build is bit-reproducible; any sequence of added and removed
//! sources answers like an index that only ever held what is left.

use std::path::{Path, PathBuf};

use rac_core::Error;
use rac_core::bench::recall_at;
use rac_core::data::synthetic::{SyntheticSet, SyntheticSpec, generate};
use rac_core::index::{Backend, IndexConfig, ItemId, Metric, Queries, RetrievalIndex, SearchRequest, Source, Storage};

fn set(n_base: usize, n_queries: usize, dim: usize, seed: u64) -> SyntheticSet {
    generate(&SyntheticSpec { n_base, n_queries, dim, clusters: 40, subspace: 12.min(dim), spread: 0.35, noise: 0.02, seed }).unwrap()
}

fn source(name: &str, vectors: &[f32], dim: usize) -> Source {
    let n = vectors.len() / dim;
    let labels: Vec<u32> = (0..n as u32).map(|i| i % 5).collect();
    let texts = labels.iter().map(|l| format!("{name} {l}")).collect();
    Source::from_vecs(name, vectors.to_vec(), dim, texts, labels).unwrap()
}

fn usearch(deterministic: bool) -> IndexConfig {
    IndexConfig { backend: Backend::Usearch, deterministic, map_size: 64 << 20, ..IndexConfig::default() }
}

/// The one graph file of an index folder.
fn graph_file(dir: &Path) -> PathBuf {
    let files: Vec<PathBuf> =
        std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).filter(|p| p.extension().is_some_and(|x| x == "usearch")).collect();
    assert_eq!(files.len(), 1, "one graph generation on disk: {files:?}");
    files.into_iter().next().unwrap()
}

#[test]
fn a_damaged_graph_file_is_rebuilt_from_lmdb_and_never_searched() {
    let dim = 24;
    let s = set(1200, 20, dim, 1);
    let dir = tempfile::tempdir().unwrap();
    let index = RetrievalIndex::build(dir.path(), &usearch(true), &[source("a", &s.base, dim)]).unwrap();
    let before = index.neighbours(&Queries::vectors(&s.queries, dim), &SearchRequest::top(10).unwrap()).unwrap();
    assert!(index.notes().is_empty());
    drop(index);
    let file = graph_file(dir.path());
    let full = std::fs::read(&file).unwrap();

    type Damage = fn(&Path, &[u8]);
    let damages: [(&str, Damage, &str); 4] = [
        ("truncated", |f, b| std::fs::write(f, &b[..b.len() / 2]).unwrap(), "bytes, but the index recorded"),
        (
            "zeroed block",
            |f, b| {
                let mut b = b.to_vec();
                let mid = b.len() / 2;
                b[mid..mid + 4096].fill(0);
                std::fs::write(f, b).unwrap()
            },
            "does not match the checksum",
        ),
        (
            "one byte edited",
            |f, b| {
                let mut b = b.to_vec();
                let last = b.len() - 1;
                b[last] ^= 0x40;
                std::fs::write(f, b).unwrap()
            },
            "does not match the checksum",
        ),
        ("deleted", |f, _| std::fs::remove_file(f).unwrap(), "cannot be read"),
    ];
    for (what, damage, reason) in damages {
        let file = graph_file(dir.path());
        damage(&file, &full);
        let index = RetrievalIndex::open(dir.path()).unwrap();
        assert_eq!(index.notes().len(), 1, "{what}: one warning");
        let note = &index.notes()[0];
        assert!(note.contains(reason) && note.contains("rebuilt it from the vectors in LMDB"), "{what}: {note}");
        // A deterministic rebuild from LMDB's vectors is the graph that was built.
        assert_eq!(index.neighbours(&Queries::vectors(&s.queries, dim), &SearchRequest::top(10).unwrap()).unwrap(), before, "{what}");
        drop(index);
        // The repair was recorded: the next open finds a good graph.
        let index = RetrievalIndex::open(dir.path()).unwrap();
        assert!(index.notes().is_empty(), "{what}: {:?}", index.notes());
        assert_eq!(std::fs::read(graph_file(dir.path())).unwrap(), full, "{what}: the same bytes again");
    }
}

#[test]
fn a_deterministic_build_is_bit_identical_across_runs() {
    let dim = 32;
    let s = set(5000, 50, dim, 2);
    let extra = set(300, 1, dim, 3);
    assert!(rayon_threads() >= 2, "the test runs with several threads available");
    for backend in [Backend::Usearch, Backend::Hnsw, Backend::Arroy] {
        // A build, then a change of each kind: the same history gives the same answers.
        let run = || {
            let dir = tempfile::tempdir().unwrap();
            let cfg = IndexConfig { backend, ..usearch(true) };
            let mut index = RetrievalIndex::build(dir.path(), &cfg, &[source("a", &s.base, dim)]).unwrap();
            let built = index.search(&Queries::vectors(&s.queries, dim), &SearchRequest::top(30).unwrap()).unwrap();
            index.add_source(&source("b", &extra.base, dim)).unwrap();
            index.remove_source("a").unwrap();
            let changed = index.search(&Queries::vectors(&s.queries, dim), &SearchRequest::top(30).unwrap()).unwrap();
            let graph = (backend == Backend::Usearch).then(|| std::fs::read(graph_file(dir.path())).unwrap());
            (built, changed, graph)
        };
        let (built_a, changed_a, graph_a) = run();
        let (built_b, changed_b, graph_b) = run();
        let bits = |h: &Vec<Vec<(ItemId, f32)>>| h.iter().flatten().map(|(id, d)| (*id, d.to_bits())).collect::<Vec<_>>();
        assert_eq!(bits(&built_a), bits(&built_b), "{backend}: the same ids and the same distance bits");
        assert_eq!(bits(&changed_a), bits(&changed_b), "{backend}: the same after an addition and a removal");
        assert!(graph_a == graph_b, "{backend}: the same graph file, byte for byte");
    }
}

fn rayon_threads() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
}

#[test]
fn any_sequence_of_adds_and_removes_answers_like_an_index_of_what_is_left() {
    let dim = 24;
    let sizes = [1500, 400, 400, 400, 400, 150];
    let parts: Vec<SyntheticSet> = sizes.iter().zip(10..).map(|(&n, seed)| set(n, 40, dim, seed)).collect();
    let queries = &parts[0].queries;
    // Add b, c; remove b (usearch: past its deleted-item threshold, a rebuild); add f, remove
    // it (below the threshold: its nodes stay as deleted ones); add d; remove a (the first
    // and biggest); add e; remove c.
    let steps: [(&str, Option<usize>); 9] =
        [("b", Some(1)), ("c", Some(2)), ("b", None), ("f", Some(5)), ("f", None), ("d", Some(3)), ("a", None), ("e", Some(4)), ("c", None)];
    for backend in Backend::ALL {
        let dir = tempfile::tempdir().unwrap();
        // Deterministic: a parallel build's recall moves from run to run (0.987 seen once at
        // step 2 on usearch), and a test of a floor must give the same verdict every time.
        let mut cfg = IndexConfig { backend, map_size: 64 << 20, deterministic: true, ..IndexConfig::with_backend(backend) };
        // arroy: what is asserted is its recall at these settings, through incremental changes.
        cfg.arroy.n_trees = 16;
        cfg.arroy.search_k = 1500;
        let mut index = RetrievalIndex::build(dir.path(), &cfg, &[source("a", &parts[0].base, dim)]).unwrap();
        let mut live: Vec<(String, Rows)> = vec![("a".into(), ids_and_rows(&index, "a", &parts[0].base, dim))];
        for (step, (name, add)) in steps.iter().enumerate() {
            match add {
                Some(p) => {
                    index.add_source(&source(name, &parts[*p].base, dim)).unwrap();
                    live.push((name.to_string(), ids_and_rows(&index, name, &parts[*p].base, dim)));
                }
                None => {
                    index.remove_source(name).unwrap();
                    live.retain(|(n, _)| n != name);
                }
            }
            let items: Vec<(ItemId, Vec<f32>)> = live.iter().flat_map(|(_, v)| v.iter().cloned()).collect();
            assert_eq!(index.len(), items.len(), "{backend} step {step}");
            if backend == Backend::Usearch {
                // f's nodes stay deleted through the next addition, until removing a rebuilds.
                let held = if [4, 5].contains(&step) { sizes[5] } else { 0 };
                assert_eq!(index.stats().unwrap().deleted_items, held as u64, "usearch step {step}: deleted nodes it still holds");
            }
            let got = index.search(&Queries::vectors(queries, dim), &SearchRequest::top(30).unwrap()).unwrap();
            let refs: Vec<(ItemId, &[f32])> = items.iter().map(|(id, v)| (*id, v.as_slice())).collect();
            let want = rac_tests::brute_force(&refs, queries, dim, 30, Metric::Cosine);
            let r = recall_at(&got, &want, 30);
            if backend == Backend::Exact {
                let ids = |h: &[Vec<(ItemId, f32)>]| h.iter().map(|l| l.iter().map(|x| x.0).collect::<Vec<_>>()).collect::<Vec<_>>();
                assert_eq!(ids(&got), ids(&want), "exact step {step}");
            } else {
                let floor = if backend == Backend::Arroy { 0.95 } else { 0.99 };
                assert!(r >= floor, "{backend} step {step} ({name}): recall@30 {r} against exact over what is left");
            }
            // No removed item is ever returned.
            let alive: std::collections::HashSet<ItemId> = items.iter().map(|x| x.0).collect();
            assert!(got.iter().flatten().all(|(id, _)| alive.contains(id)), "{backend} step {step}: a removed item came back");
        }
        // And it all holds across a reopen.
        let before = index.search(&Queries::vectors(queries, dim), &SearchRequest::top(30).unwrap()).unwrap();
        drop(index);
        let index = RetrievalIndex::open(dir.path()).unwrap();
        assert!(index.notes().is_empty(), "{backend}: {:?}", index.notes());
        assert_eq!(index.search(&Queries::vectors(queries, dim), &SearchRequest::top(30).unwrap()).unwrap(), before, "{backend} after reopening");
    }
}

/// Items with their vectors.
type Rows = Vec<(ItemId, Vec<f32>)>;

/// The ids of a source's items with their rows.
fn ids_and_rows(index: &RetrievalIndex, name: &str, rows: &[f32], dim: usize) -> Rows {
    index.source_ids(name).unwrap().zip(rows.chunks(dim).map(|r| r.to_vec())).collect()
}

#[test]
fn usearch_refuses_bad_queries_and_settings_by_name() {
    let dim = 16;
    let s = set(300, 4, dim, 3);
    let dir = tempfile::tempdir().unwrap();
    let mut index = RetrievalIndex::build(dir.path(), &usearch(false), &[source("a", &s.base, dim)]).unwrap();
    let before = index.neighbours(&Queries::vectors(&s.queries, dim), &SearchRequest::top(5).unwrap()).unwrap();
    let err = index.neighbours(&Queries::vectors(&s.base[..8 * 3], 8), &SearchRequest::top(5).unwrap()).unwrap_err();
    assert!(matches!(err, Error::IndexDimension { expected: 16, received: 8, .. }), "{err}");
    let err = index.add_source(&source("b", &s.base[..17 * 10], 17)).unwrap_err();
    assert!(matches!(err, Error::IndexDimension { expected: 16, received: 17, .. }), "{err}");
    let err = SearchRequest::top(0).unwrap_err();
    assert!(matches!(&err, Error::Setting { field, .. } if field == "k"), "{err}");
    let err = index.neighbours(&Queries::vectors(&s.queries, dim), &SearchRequest::top(301).unwrap()).unwrap_err();
    assert!(err.to_string().contains("holds only 300 items"), "{err}");
    assert_eq!(index.neighbours(&Queries::vectors(&s.queries, dim), &SearchRequest::top(5).unwrap()).unwrap(), before);
    // i8 storage holds unit vectors only.
    let mut c = usearch(false);
    c.metric = Metric::L2;
    c.usearch.storage = Storage::I8;
    assert!(c.validate().unwrap_err().to_string().contains("usearch.storage"));
    c.usearch.storage = Storage::F32;
    c.usearch.rebuild_deleted_fraction = 0.0;
    assert!(c.validate().unwrap_err().to_string().contains("usearch.rebuild_deleted_fraction"));
}

#[test]
fn reduced_storage_keeps_recall_at_a_fraction_of_the_memory() {
    let spec = SyntheticSpec { n_base: 4000, n_queries: 100, dim: 96, clusters: 100, subspace: 32, spread: 0.35, noise: 0.02, seed: 4 };
    let s = generate(&spec).unwrap();
    let dim = spec.dim;
    let exact_dir = tempfile::tempdir().unwrap();
    let exact = RetrievalIndex::build(exact_dir.path(), &IndexConfig::with_backend(Backend::Exact), &[source("a", &s.base, dim)]).unwrap();
    let want = exact.search(&Queries::vectors(&s.queries, dim), &SearchRequest::top(30).unwrap()).unwrap();
    let mut sizes = Vec::new();
    for (storage, floor) in [(Storage::F32, 0.99), (Storage::F16, 0.99), (Storage::I8, 0.95)] {
        let dir = tempfile::tempdir().unwrap();
        let mut c = usearch(false);
        c.usearch.storage = storage;
        let index = RetrievalIndex::build(dir.path(), &c, &[source("a", &s.base, dim)]).unwrap();
        let r = recall_at(&index.search(&Queries::vectors(&s.queries, dim), &SearchRequest::top(30).unwrap()).unwrap(), &want, 30);
        assert!(r >= floor, "{storage:?}: recall@30 {r}");
        sizes.push(std::fs::metadata(graph_file(dir.path())).unwrap().len());
    }
    assert!(sizes[1] < sizes[0] && sizes[2] < sizes[1], "graph files shrink with the storage: {sizes:?}");
}

// ---- the index's invariants as properties, on every backend ------------------------------
//
// Cases that build an index (a sequence of changes) run `RAC_PROPTEST_INDEX_CASES` times per
// backend (default 12: each builds and changes an index several times); the cheap ones
// (searches and cache reads of one index per backend) run `RAC_PROPTEST_CASES` times in all
// (default 10,000), shared between the backends.

use proptest::prelude::*;
use rac_core::index::QuerySet;

fn env_cases(var: &str, default: u32) -> u32 {
    std::env::var(var).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn prop_config(cases: u32) -> ProptestConfig {
    ProptestConfig { cases, failure_persistence: None, ..ProptestConfig::default() }
}

/// An index of a few hundred items per backend, small enough that every backend's search is
/// exhaustive at these settings (arroy's search_k and HNSW's ef_search pass the item count).
fn small_config(backend: Backend) -> IndexConfig {
    let mut cfg = IndexConfig { backend, map_size: 64 << 20, deterministic: true, ..IndexConfig::with_backend(backend) };
    cfg.arroy.n_trees = 8;
    cfg.arroy.search_k = 4000;
    cfg.hnsw.ef_search = 400;
    cfg
}

/// One change of a sequence: add part `p` (if not in the index), or remove the `i`-th live
/// source (mod the count; nothing when one is left).
#[derive(Debug, Clone)]
enum Step {
    Add(usize),
    Remove(usize),
}

fn steps() -> impl Strategy<Value = Vec<Step>> {
    proptest::collection::vec(prop_oneof![(0..5usize).prop_map(Step::Add), any::<usize>().prop_map(Step::Remove)], 1..6)
}

/// For each backend, any sequence of adds and removes answers like brute force over what is
/// left (exact: the same ids; approximate: recall@10 at least 0.97), never returns a removed
/// item, and removing a source gives back the fingerprint the index had before it was added.
#[test]
fn prop_changes_answer_like_brute_force_and_removal_restores_the_fingerprint() {
    let dim = 16;
    let parts: Vec<SyntheticSet> = (0..5).map(|p| set(60 + 40 * p, 12, dim, 100 + p as u64)).collect();
    let queries = parts[0].queries.clone();
    for backend in Backend::ALL {
        let mut runner = proptest::test_runner::TestRunner::new(prop_config(env_cases("RAC_PROPTEST_INDEX_CASES", 12)));
        runner
            .run(&steps(), |steps| {
                let dir = tempfile::tempdir().unwrap();
                let mut index = RetrievalIndex::build(dir.path(), &small_config(backend), &[source("p0", &parts[0].base, dim)]).unwrap();
                let mut live: Vec<(String, Rows)> = vec![("p0".into(), ids_and_rows(&index, "p0", &parts[0].base, dim))];
                // The fingerprint of every set of live sources seen: it depends on what the
                // index holds, so a set seen again (a source added, then removed) gives it back.
                let mut seen: std::collections::HashMap<Vec<(String, ItemId)>, String> = std::collections::HashMap::new();
                let held = |live: &[(String, Rows)]| live.iter().map(|(n, rows)| (n.clone(), rows[0].0)).collect::<Vec<_>>();
                seen.insert(held(&live), index.fingerprint().to_string());
                for step in &steps {
                    match *step {
                        Step::Add(p) => {
                            let name = format!("p{p}");
                            if live.iter().any(|(n, _)| *n == name) {
                                continue;
                            }
                            index.add_source(&source(&name, &parts[p].base, dim)).unwrap();
                            live.push((name.clone(), ids_and_rows(&index, &name, &parts[p].base, dim)));
                        }
                        Step::Remove(i) if live.len() > 1 => {
                            let (name, _) = live.remove(i % live.len());
                            index.remove_source(&name).unwrap();
                        }
                        Step::Remove(_) => continue,
                    }
                    let fingerprint = index.fingerprint().to_string();
                    let earlier = seen.entry(held(&live)).or_insert_with(|| fingerprint.clone());
                    prop_assert_eq!(&*earlier, &fingerprint, "{}: the same sources, another fingerprint", backend);
                    let items: Vec<(ItemId, &[f32])> = live.iter().flat_map(|(_, rows)| rows.iter().map(|(id, v)| (*id, v.as_slice()))).collect();
                    prop_assert_eq!(index.len(), items.len());
                    let got = index.search(&Queries::vectors(&queries, dim), &SearchRequest::top(10).unwrap()).unwrap();
                    let want = rac_tests::brute_force(&items, &queries, dim, 10, Metric::Cosine);
                    let alive: std::collections::HashSet<ItemId> = items.iter().map(|x| x.0).collect();
                    prop_assert!(got.iter().flatten().all(|(id, _)| alive.contains(id)), "{}: a removed item came back", backend);
                    if backend == Backend::Exact {
                        let ids = |h: &[Vec<(ItemId, f32)>]| h.iter().map(|l| l.iter().map(|x| x.0).collect::<Vec<_>>()).collect::<Vec<_>>();
                        prop_assert_eq!(ids(&got), ids(&want));
                    } else {
                        let r = recall_at(&got, &want, 10);
                        prop_assert!(r >= 0.97, "{}: recall@10 {} against brute force over what is left", backend, r);
                    }
                }
                Ok(())
            })
            .unwrap_or_else(|e| panic!("{backend}: {e}"));
    }
}

/// One index of 300 items per backend, with its source's ids, for the cheap properties.
fn one_index_per_backend(dim: usize) -> (Vec<(tempfile::TempDir, RetrievalIndex)>, SyntheticSet) {
    let s = set(300, 40, dim, 77);
    let indexes = Backend::ALL
        .iter()
        .map(|&backend| {
            let dir = tempfile::tempdir().unwrap();
            let index = RetrievalIndex::build(dir.path(), &small_config(backend), &[source("train", &s.base, dim)]).unwrap();
            (dir, index)
        })
        .collect();
    (indexes, s)
}

/// The neighbour cache: any `k` of a `k_max`-deep entry equals that entry cut to `k`, and
/// is a hit once the entry is stored; with drop_self, no list holds its query's own item.
#[test]
fn prop_cached_lists_of_any_k_are_the_deepest_lists_cut_to_k() {
    let dim = 16;
    let (indexes, s) = one_index_per_backend(dim);
    let n_backends = indexes.len() as u32;
    let mut runner = proptest::test_runner::TestRunner::new(prop_config(env_cases("RAC_PROPTEST_CASES", 10_000) / n_backends));
    for (_, index) in indexes {
        let backend = index.config().backend;
        let ids: Vec<ItemId> = index.source_ids("train").unwrap().collect();
        // The runner takes a `Fn`; the cache writes through the index.
        let index = std::cell::RefCell::new(index);
        runner
            .run(&(1..=30usize, 0..3usize, any::<bool>(), any::<bool>()), |(k, depth, drop_self, by_item)| {
                let k_max = [10, 20, 30][depth].max(k);
                let request = SearchRequest::new(k, k_max, drop_self && by_item).unwrap();
                let name = format!("q{k_max}");
                let set = if by_item { QuerySet::Source("train") } else { QuerySet::Features { name: &name, vectors: &s.queries, dim } };
                let mut index = index.borrow_mut();
                let (deepest, _) = index.neighbour_cache().lists(&set, SearchRequest::new(k_max, k_max, request.drop_self()).unwrap()).unwrap();
                let (lists, outcome) = index.neighbour_cache().lists(&set, request).unwrap();
                prop_assert_eq!(outcome, rac_core::index::CacheOutcome::Hit);
                prop_assert_eq!(lists.k, k);
                for (row, (cut, deep)) in lists.hits().iter().zip(deepest.hits()).enumerate() {
                    prop_assert_eq!(&cut[..], &deep[..k], "{} row {}", backend, row);
                    if request.drop_self() {
                        prop_assert!(cut.iter().all(|(id, _)| *id != ids[row]), "{}: item {} in its own list", backend, ids[row]);
                    }
                }
                Ok(())
            })
            .unwrap_or_else(|e| panic!("{backend}: {e}"));
    }
}

/// drop_self drops a query's own item and nothing else: the list of `k` equals the list of
/// `k + 1` kept, with the query's own item taken out (and cut to `k` when it was not there);
/// queries whose item the index does not hold keep their first `k`.
#[test]
fn prop_drop_self_drops_the_query_item_and_no_other() {
    let dim = 16;
    let (indexes, s) = one_index_per_backend(dim);
    let n_backends = indexes.len() as u32;
    let mut runner = proptest::test_runner::TestRunner::new(prop_config(env_cases("RAC_PROPTEST_CASES", 10_000) / n_backends));
    for (_, index) in &indexes {
        let backend = index.config().backend;
        let first = index.source_ids("train").unwrap().start;
        runner
            .run(&(proptest::collection::vec(0..300u32, 1..8), 1..40usize, any::<bool>()), |(rows, k, keyed)| {
                let items: Vec<ItemId> = rows.iter().map(|r| first + r).collect();
                let kept = index.search(&Queries::Items(&items), &SearchRequest::top(k + 1).unwrap()).unwrap();
                let dropped = if keyed {
                    // The same queries by vector and key; a key the source lacks drops nothing.
                    let keys: Vec<String> =
                        rows.iter().enumerate().map(|(i, r)| if i == 0 { "train/none".to_string() } else { format!("train/{r}") }).collect();
                    let vectors = index.vectors(&items).unwrap();
                    let q = Queries::Keyed { vectors: &vectors, dim, source: "train", keys: &keys };
                    index.search(&q, &SearchRequest::top(k).unwrap().dropping_self(true)).unwrap()
                } else {
                    index.search(&Queries::Items(&items), &SearchRequest::top(k).unwrap().dropping_self(true)).unwrap()
                };
                for (i, ((me, kept), dropped)) in items.iter().zip(&kept).zip(&dropped).enumerate() {
                    let own = !(keyed && i == 0);
                    let want: Vec<(ItemId, f32)> = kept.iter().copied().filter(|(id, _)| !own || id != me).take(k).collect();
                    prop_assert_eq!(dropped, &want, "{} query item {} (own item known: {})", backend, me, own);
                }
                Ok(())
            })
            .unwrap_or_else(|e| panic!("{backend}: {e}"));
    }
    let _ = s;
}

// ---- an index written by an earlier version opens and answers ----------------------------

/// The committed fixture indexes: one folder per backend, written by format version 1 of
/// the layout (`FORMAT_VERSION`), with the answers they gave then. Every later version must
/// open them and answer the same; a new format version adds a folder of its own beside them
/// (or a test of the named error that says how to rebuild), as arroy keeps its old databases.
fn fixture_root() -> PathBuf {
    rac_tests::workspace_root().join("tests").join("fixtures").join("index-format-1")
}

/// The fixture's data: 240 items of 16 dimensions in 3 sources, and 6 queries.
fn fixture_set() -> SyntheticSet {
    set(240, 6, 16, 4242)
}

fn fixture_sources(s: &SyntheticSet) -> Vec<Source> {
    let dim = 16;
    vec![source("a", &s.base[..100 * dim], dim), source("b", &s.base[100 * dim..180 * dim], dim), source("c", &s.base[180 * dim..], dim)]
}

#[test]
#[ignore = "writes tests/fixtures/index-format-1; run once, when a format version is new"]
fn write_the_fixture_indexes() {
    let s = fixture_set();
    for backend in Backend::ALL {
        let dir = fixture_root().join(backend.name());
        let _ = std::fs::remove_dir_all(&dir);
        let cfg = IndexConfig { map_size: 1 << 20, ..small_config(backend) };
        let sources = fixture_sources(&s);
        // Built with a, b and c, then b removed and added again: the history a user's index has.
        let mut index = RetrievalIndex::build(&dir, &cfg, &sources).unwrap();
        index.remove_source("b").unwrap();
        index.add_source(&sources[1]).unwrap();
        let answers = index.neighbours(&Queries::vectors(&s.queries, 16), &SearchRequest::top(8).unwrap()).unwrap();
        drop(index);
        let _ = std::fs::remove_file(dir.join("lock.mdb"));
        std::fs::write(dir.join("answers.json"), serde_json::to_string_pretty(&answers).unwrap()).unwrap();
    }
}

#[test]
fn the_fixture_indexes_of_format_1_open_verify_and_answer_as_they_did() {
    let s = fixture_set();
    for backend in Backend::ALL {
        let committed = fixture_root().join(backend.name());
        // A copy: opening writes LMDB's lock file, and the checkout may be read-only.
        let dir = tempfile::tempdir().unwrap();
        for entry in std::fs::read_dir(&committed).unwrap_or_else(|e| panic!("{}: {e}", committed.display())) {
            let entry = entry.unwrap();
            std::fs::copy(entry.path(), dir.path().join(entry.file_name())).unwrap();
        }
        let answers: Vec<rac_core::index::Neighbours> = serde_json::from_slice(&std::fs::read(dir.path().join("answers.json")).unwrap()).unwrap();
        let report = rac_core::index::verify(dir.path()).unwrap();
        assert!(report.is_ok(), "{backend}: {report:?}");
        let index = RetrievalIndex::open(dir.path()).unwrap();
        assert!(index.notes().is_empty(), "{backend}: opened with repairs: {:?}", index.notes());
        assert_eq!(index.config().backend, backend);
        assert_eq!(index.sources().unwrap().iter().map(|s| s.name.as_str()).collect::<Vec<_>>(), ["a", "c", "b"], "{backend}");
        assert_eq!(index.len(), 240);
        let got = index.neighbours(&Queries::vectors(&s.queries, 16), &SearchRequest::top(8).unwrap()).unwrap();
        assert_eq!(got, answers, "{backend}: the answers the fixture gave when it was written");
        // It stays writable: a source added and removed gives back its fingerprint.
        let before = index.fingerprint().to_string();
        let mut index = index;
        index.add_source(&source("d", &s.queries, 16)).unwrap();
        index.remove_source("d").unwrap();
        assert_eq!(index.fingerprint(), before, "{backend}");
    }
}
