//! Criterion benchmarks of the retrieval index on a small clustered synthetic set:
//! batched search per backend, and the neighbour cache read against a fresh search.
//! The full 100k x 768 comparison (with FAISS) is `rac index bench` and
//! `benches/faiss/compare.sh`.

use criterion::{Criterion, criterion_group, criterion_main};
use rac_core::data::synthetic::{SyntheticSpec, generate};
use rac_core::index::{Backend, IndexConfig, Queries, QuerySet, RetrievalIndex, SearchRequest, Source};

fn index_search(c: &mut Criterion) {
    let spec = SyntheticSpec { n_base: 20_000, n_queries: 200, dim: 256, clusters: 200, ..SyntheticSpec::default() };
    let set = generate(&spec).expect("valid spec");
    let n = spec.n_base;
    let source = Source::from_vecs("bench", set.base.clone(), spec.dim, vec![String::new(); n], set.base_labels.clone()).expect("source");
    let mut group = c.benchmark_group("index_search_200_queries_k30");
    group.sample_size(10);
    let request = SearchRequest::top(30).expect("k = 30");
    for backend in Backend::ALL {
        let dir = tempfile::tempdir().expect("temp dir");
        let index = RetrievalIndex::build(dir.path(), &IndexConfig::with_backend(backend), std::slice::from_ref(&source)).expect("build");
        group.bench_function(backend.name(), |b| b.iter(|| index.search(&Queries::vectors(&set.queries, spec.dim), &request).expect("search")));
    }
    group.finish();

    let dir = tempfile::tempdir().expect("temp dir");
    let mut index = RetrievalIndex::build(dir.path(), &IndexConfig::with_backend(Backend::Hnsw), &[source]).expect("build");
    let test = QuerySet::Features { name: "test", vectors: &set.queries, dim: spec.dim };
    let query = SearchRequest::new(30, 50, false).expect("30 of 50");
    index.neighbour_cache().lists(&test, query).expect("fill the cache");
    c.bench_function("neighbour_cache_read_200x30", |b| b.iter(|| index.neighbour_cache().lists(&test, query).expect("read")));
}

criterion_group!(benches, index_search);
criterion_main!(benches);
