//! `rac index …`: build and change retrieval indexes, query them, benchmark the backends,
//! export the synthetic set, and print the retrieval-only (k-NN) table.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};

use crate::data_cmd::PathArgs;
use crate::encode_cmd;
use rac_core::assets::AssetCache;
use rac_core::bench::{self, BenchSpec};
use rac_core::data::npy;
use rac_core::data::synthetic::{SyntheticSpec, generate};
use rac_core::data::{Dataset, SplitKind};
use rac_core::features::EncodeOptions;
use rac_core::features::FeatureFile;
use rac_core::index::internals::Failpoint;
use rac_core::index::{Backend, IndexConfig, Metric, Queries, QuerySet, RetrievalIndex, SearchRequest, Storage};
use rac_core::knn::retrieval_only_table;

/// The `index` command group.
#[derive(Subcommand)]
pub enum IndexCmd {
    /// Build an index from a feature file (replaces an index already there, atomically).
    Build {
        /// The index folder.
        dir: PathBuf,
        /// Safetensors with `features` [n, d] and `labels` [n] (metadata `class_texts`, `keys` optional).
        #[arg(long)]
        features: PathBuf,
        /// The source name of these items.
        #[arg(long, default_value = "train")]
        source: String,
        /// The text of each label, one per line (label 0 first); overrides the file's metadata.
        #[arg(long)]
        class_texts: Option<PathBuf>,
        #[command(flatten)]
        config: ConfigArgs,
    },
    /// Add a whole source to an index.
    AddSource {
        /// The index folder.
        dir: PathBuf,
        /// The new source's name.
        name: String,
        /// Its feature file.
        #[arg(long)]
        features: PathBuf,
        /// The text of each label, one per line (label 0 first).
        #[arg(long)]
        class_texts: Option<PathBuf>,
    },
    /// Remove a whole source from an index.
    RemoveSource {
        /// The index folder.
        dir: PathBuf,
        /// The source's name.
        name: String,
    },
    /// Read back every source and the graph file and check them against the checksums their
    /// commits recorded; exits with an error naming what is damaged.
    Verify {
        /// The index folder.
        dir: PathBuf,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Items per source, dimension, backend, size on disk.
    Stats {
        /// The index folder.
        dir: PathBuf,
        /// Print machine-readable JSON.
        #[arg(long)]
        json: bool,
    },
    /// Print the neighbours of the first rows of a feature file.
    Query {
        /// The index folder.
        dir: PathBuf,
        /// The queries' feature file.
        #[arg(long)]
        features: PathBuf,
        /// How many rows of it to query.
        #[arg(long, default_value_t = 5)]
        rows: usize,
        /// Neighbours per query.
        #[arg(long, default_value_t = 10)]
        k: usize,
        /// Drop each query's own item from its hits, when the index holds it: row `i` is the
        /// item of `--source` with the file's key `i` (its `ids.txt`, else `<source>/<i>`).
        #[arg(long)]
        drop_self: bool,
        /// The source the query rows are items of, for `--drop-self`.
        #[arg(long, default_value = "train")]
        source: String,
        /// Print machine-readable JSON.
        #[arg(long)]
        json: bool,
    },
    /// Benchmark every backend on the same vectors: build time, size, recall@1/10/30
    /// against exact, single-query latency, batched queries/s.
    Bench(Box<BenchArgs>),
    /// Write the clustered synthetic set as `.npy` (base.npy, queries.npy) for the FAISS comparison.
    Synth {
        /// The output folder.
        #[arg(long)]
        out: PathBuf,
        #[command(flatten)]
        spec: SynthArgs,
    },
    /// The retrieval-only table (paper Table 4): 1-NN, majority and weighted vote over k,
    /// overall and per shot bucket, for test features against an index of training features.
    KnnEval {
        /// Training features (the index content; class counts give the shot buckets).
        #[arg(long)]
        train: PathBuf,
        /// Test features (the queries).
        #[arg(long)]
        test: PathBuf,
        /// Neighbours voted over.
        #[arg(long, default_value_t = 30)]
        k: usize,
        /// Keep the index (and its neighbour cache) here; a temporary folder otherwise.
        #[arg(long)]
        index: Option<PathBuf>,
        /// The text of each label, one per line (label 0 first).
        #[arg(long)]
        class_texts: Option<PathBuf>,
        #[command(flatten)]
        config: ConfigArgs,
    },
}

/// Index settings on the command line.
#[derive(Args, Clone, Debug)]
pub struct ConfigArgs {
    /// usearch, hnsw (hannoy), arroy or exact.
    #[arg(long, default_value_t = IndexConfig::default().backend)]
    backend: Backend,
    /// cosine or l2.
    #[arg(long, default_value = "cosine")]
    metric: Metric,
    /// arroy: number of trees.
    #[arg(long)]
    n_trees: Option<usize>,
    /// arroy: nodes inspected per query.
    #[arg(long)]
    search_k: Option<usize>,
    /// HNSW: ef_construction.
    #[arg(long)]
    ef_construction: Option<usize>,
    /// HNSW: ef_search.
    #[arg(long)]
    ef_search: Option<usize>,
    /// usearch: the vectors' storage in the graph (f32, f16, i8).
    #[arg(long)]
    storage: Option<Storage>,
    /// Build bit-reproducibly (one thread, id order).
    #[arg(long)]
    deterministic: bool,
    /// Seed of the build.
    #[arg(long)]
    seed: Option<u64>,
}

impl ConfigArgs {
    fn config(&self) -> IndexConfig {
        let mut c = IndexConfig::with_backend(self.backend);
        c.metric = self.metric;
        if let Some(v) = self.n_trees {
            c.arroy.n_trees = v;
        }
        if let Some(v) = self.search_k {
            c.arroy.search_k = v;
        }
        if let Some(v) = self.ef_construction {
            c.hnsw.ef_construction = v;
        }
        if let Some(v) = self.ef_search {
            c.hnsw.ef_search = v;
        }
        if let Some(v) = self.storage {
            c.usearch.storage = v;
        }
        c.deterministic = self.deterministic;
        if let Some(v) = self.seed {
            c.seed = v;
        }
        c
    }
}

/// The synthetic set's shape on the command line (defaults: the acceptance set).
#[derive(Args, Clone, Debug)]
pub struct SynthArgs {
    /// Base vectors.
    #[arg(long, default_value_t = 100_000)]
    n: usize,
    /// Queries.
    #[arg(long, default_value_t = 1_000)]
    queries: usize,
    /// Dimension.
    #[arg(long, default_value_t = 768)]
    dim: usize,
    /// Clusters.
    #[arg(long, default_value_t = 1_000)]
    clusters: usize,
    /// Dimension of the subspace holding the clusters.
    #[arg(long, default_value_t = 32)]
    subspace: usize,
    /// Seed.
    #[arg(long, default_value_t = 7)]
    synth_seed: u64,
}

impl SynthArgs {
    fn spec(&self) -> SyntheticSpec {
        SyntheticSpec {
            n_base: self.n,
            n_queries: self.queries,
            dim: self.dim,
            clusters: self.clusters,
            subspace: self.subspace,
            seed: self.synth_seed,
            ..SyntheticSpec::default()
        }
    }
}

/// Arguments of `rac index bench`. Without `--npy`, `--features` or `--synthetic`, the
/// vectors are a data set's features from the feature store (encoded on a miss): the
/// training split as the base, the test split as the queries; by default Fashion-MNIST-LT
/// with EfficientNet-Lite0.
#[derive(Args, Clone, Debug)]
pub struct BenchArgs {
    /// Read `base.npy` and `queries.npy` from this folder (as written by `rac index synth`).
    #[arg(long, conflicts_with_all = ["features", "synthetic", "manifest"])]
    npy: Option<PathBuf>,
    /// Index these features (safetensors) ...
    #[arg(long, requires = "queries_from", conflicts_with_all = ["synthetic", "manifest"])]
    features: Option<PathBuf>,
    /// ... and query with these.
    #[arg(long)]
    queries_from: Option<PathBuf>,
    /// Generate the synthetic set in memory.
    #[arg(long, conflicts_with = "manifest")]
    synthetic: bool,
    #[command(flatten)]
    spec: SynthArgs,
    /// The data set whose train / test features are benchmarked (default: the embedded
    /// Fashion-MNIST-LT).
    #[arg(long)]
    manifest: Option<PathBuf>,
    /// The image encoder of those features.
    #[arg(long, default_value = "efficientnet-lite0")]
    encoder: String,
    /// The feature store folder (default: `features/` in the asset cache).
    #[arg(long, env = "RAC_FEATURE_STORE")]
    store: Option<PathBuf>,
    #[command(flatten)]
    paths: PathArgs,
    /// Index only the first N base vectors.
    #[arg(long)]
    limit_base: Option<usize>,
    /// Query only the first N query vectors.
    #[arg(long)]
    limit_queries: Option<usize>,
    /// Backends to run (comma-separated); exact always runs, as the ground truth.
    #[arg(long, value_delimiter = ',', default_value = "exact,usearch,hnsw,arroy")]
    backends: Vec<Backend>,
    /// cosine or l2.
    #[arg(long, default_value = "cosine")]
    metric: Metric,
    /// HNSW ef_construction.
    #[arg(long, default_value_t = IndexConfig::default().hnsw.ef_construction)]
    ef_construction: usize,
    /// HNSW ef_search values (comma-separated), one row each.
    #[arg(long, value_delimiter = ',', default_values_t = vec![IndexConfig::default().hnsw.ef_search])]
    ef_search: Vec<usize>,
    /// usearch storages (comma-separated: f32, f16, i8), one build each.
    #[arg(long, value_delimiter = ',', default_value = "f32")]
    storage: Vec<Storage>,
    /// Build every index with `deterministic = true` (one thread, id order).
    #[arg(long)]
    deterministic: bool,
    /// Also time adding the queries to each index as a source, and removing it again.
    #[arg(long)]
    incremental: bool,
    /// arroy tree counts (comma-separated), one build each.
    #[arg(long, value_delimiter = ',', default_values_t = vec![IndexConfig::default().arroy.n_trees])]
    n_trees: Vec<usize>,
    /// arroy search_k values (comma-separated), one row each.
    #[arg(long, value_delimiter = ',', default_values_t = vec![IndexConfig::default().arroy.search_k])]
    search_k: Vec<usize>,
    /// Queries timed one at a time for the latency columns.
    #[arg(long, default_value_t = 200)]
    single_queries: usize,
    /// Where the indexes are built (a temporary folder by default).
    #[arg(long)]
    work_dir: Option<PathBuf>,
    /// Print one JSON array on stdout, one object per row (progress goes to stderr).
    #[arg(long)]
    json: bool,
}

fn failpoint() -> Result<Option<Failpoint>> {
    match std::env::var("RAC_INDEX_FAILPOINT") {
        Ok(v) if !v.is_empty() => Ok(Some(Failpoint::parse(&v)?)),
        _ => Ok(None),
    }
}

fn read_features(path: &Path) -> Result<FeatureFile> {
    FeatureFile::read(path).with_context(|| format!("reading features from {}", path.display()))
}

fn read_features_with_texts(path: &Path, class_texts: Option<&Path>) -> Result<FeatureFile> {
    let mut f = read_features(path)?;
    if let Some(t) = class_texts {
        f.set_class_texts_from(t)?;
    }
    Ok(f)
}

pub fn run(cmd: IndexCmd, cache: &AssetCache) -> Result<()> {
    match cmd {
        IndexCmd::Build { dir, features, source, class_texts, config } => {
            let f = read_features_with_texts(&features, class_texts.as_deref())?;
            let src = f.to_source(&source)?;
            let index = RetrievalIndex::build_with(&dir, &config.config(), &[src], failpoint()?)?;
            print!("{}", index.stats()?.report());
        }
        IndexCmd::AddSource { dir, name, features, class_texts } => {
            let mut index = RetrievalIndex::open(&dir)?;
            index.set_failpoint(failpoint()?);
            let f = read_features_with_texts(&features, class_texts.as_deref())?;
            index.add_source(&f.to_source(&name)?)?;
            print!("{}", index.stats()?.report());
        }
        IndexCmd::RemoveSource { dir, name } => {
            let mut index = RetrievalIndex::open(&dir)?;
            index.set_failpoint(failpoint()?);
            index.remove_source(&name)?;
            print!("{}", index.stats()?.report());
        }
        IndexCmd::Verify { dir, json } => {
            let report = rac_core::index::verify(&dir)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{}", report.report());
            }
            if !report.is_ok() {
                bail!("index {} is damaged: {}; rebuild it with `rac index build`", dir.display(), report.damage().join("; "));
            }
        }
        IndexCmd::Stats { dir, json } => {
            let stats = RetrievalIndex::open(&dir)?.stats()?;
            if json {
                println!("{}", serde_json::to_string_pretty(&stats)?);
            } else {
                print!("{}", stats.report());
            }
        }
        IndexCmd::Query { dir, features, rows, k, drop_self, source, json } => {
            let index = RetrievalIndex::open(&dir)?;
            let f = read_features(&features)?;
            let rows = rows.min(f.len());
            let keys: Vec<String> = match &f.keys {
                Some(keys) => keys[..rows].to_vec(),
                None => (0..rows).map(|i| format!("{source}/{i}")).collect(),
            };
            let queries = Queries::Keyed { vectors: &f.vectors[..rows * f.dim], dim: f.dim, source: &source, keys: &keys };
            let res = index.neighbours(&queries, &SearchRequest::top(k)?.dropping_self(drop_self))?;
            if json {
                println!("{}", serde_json::to_string_pretty(&res)?);
            } else {
                for (i, n) in res.iter().enumerate() {
                    println!("query {i} (label {})", f.labels[i]);
                    for r in 0..n.ids.len() {
                        println!("  {:>2}  {:>8}  {:.4}  {:>4}  {}", r + 1, n.ids[r], n.distances[r], n.labels[r], n.texts[r]);
                    }
                }
            }
        }
        IndexCmd::Bench(args) => bench_cmd(*args, cache)?,
        IndexCmd::Synth { out, spec } => {
            let spec = spec.spec();
            let set = generate(&spec)?;
            npy::write_f32(&out.join("base.npy"), &set.base, &[spec.n_base, spec.dim])?;
            npy::write_f32(&out.join("queries.npy"), &set.queries, &[spec.n_queries, spec.dim])?;
            std::fs::write(out.join("spec.json"), serde_json::to_string_pretty(&spec)?)?;
            eprintln!("wrote {} and {}", out.join("base.npy").display(), out.join("queries.npy").display());
        }
        IndexCmd::KnnEval { train, test, k, index, class_texts, config } => {
            let train_f = read_features_with_texts(&train, class_texts.as_deref())?;
            let test_f = read_features(&test)?;
            let cfg = config.config();
            // Checked here, against the files, so that an error names them and not the
            // (temporary) index folder.
            train_f.check_for(&train, cfg.metric, train_f.dim)?;
            test_f
                .check_for(&test, cfg.metric, train_f.dim)
                .with_context(|| format!("the training features in {} are of dimension {}", train.display(), train_f.dim))?;
            let tmp;
            let dir = match index {
                Some(d) => d,
                None => {
                    tmp = tempfile::tempdir()?;
                    tmp.path().join("index")
                }
            };
            let mut idx = match RetrievalIndex::open(&dir) {
                Ok(i) if i.config() == &cfg && i.source("train").is_ok_and(|s| s.count as usize == train_f.len()) => i,
                _ => RetrievalIndex::build(&dir, &cfg, &[train_f.to_source("train")?])?,
            };
            let num_classes = train_f.labels.iter().chain(&test_f.labels).map(|&l| l as usize + 1).max().unwrap_or(0);
            let train_labels: Vec<usize> = train_f.labels.iter().map(|&l| l as usize).collect();
            let counts = rac_core::data::class_counts(&train_labels, num_classes);
            let set = QuerySet::Features { name: "test", vectors: &test_f.vectors, dim: test_f.dim };
            let request = SearchRequest::at_default_depth(k, idx.len())?;
            let neighbours = idx.neighbour_cache().neighbours(&set, request)?;
            let df = retrieval_only_table(&neighbours, &test_f.labels, &counts, k, cfg.metric)?;
            println!("retrieval-only top-1 accuracy (mean of per-class accuracy, %), {} backend, k = {k}", cfg.backend);
            println!("{}", rac_core::eval::text_table(&df));
        }
    }
    Ok(())
}

/// Row-major base and query vectors of the benchmark, and their dimension.
type BenchVectors = (Vec<f32>, Vec<f32>, usize);

fn bench_vectors(args: &BenchArgs, cache: &AssetCache) -> Result<BenchVectors> {
    if let Some(dir) = &args.npy {
        let (b, bs) = npy::read_f32(&dir.join("base.npy"))?;
        let (q, qs) = npy::read_f32(&dir.join("queries.npy"))?;
        if bs.len() != 2 || qs.len() != 2 || bs[1] != qs[1] {
            bail!("{}: base.npy {bs:?} and queries.npy {qs:?} must be matrices of one dimension", dir.display());
        }
        return Ok((b, q, bs[1]));
    }
    if let (Some(f), Some(q)) = (&args.features, &args.queries_from) {
        let f = read_features(f)?;
        let q = read_features(q)?;
        if f.dim != q.dim {
            bail!("features have dimension {} but queries {}", f.dim, q.dim);
        }
        return Ok((f.vectors, q.vectors, f.dim));
    }
    if args.synthetic {
        let set = generate(&args.spec.spec())?;
        return Ok((set.base, set.queries, args.spec.dim));
    }
    let ds = match &args.manifest {
        Some(m) => Dataset::load(m, &args.paths.overrides(), cache)?,
        None => rac_core::data::embedded_default(cache)?,
    };
    let encoder = encode_cmd::load_encoder(&args.encoder, None, cache)?;
    let store = encode_cmd::feature_store(args.store.as_deref(), cache);
    let split = |kind: SplitKind| -> Result<(Vec<f32>, usize)> {
        let (f, report) = encode_cmd::features(&store, &ds, kind, encoder.as_ref(), EncodeOptions::default().batch_size)?;
        encode_cmd::print_line(&report);
        Ok((f.vectors.flatten_all()?.to_vec1::<f32>()?, f.dim()))
    };
    let (base, dim) = split(SplitKind::Train)?;
    let (queries, _) = split(SplitKind::Test)?;
    eprintln!("{} ({}): train features as the base, test features as the queries", ds.name(), encoder.name());
    Ok((base, queries, dim))
}

fn bench_cmd(args: BenchArgs, cache: &AssetCache) -> Result<()> {
    let (mut base, mut queries, dim) = bench_vectors(&args, cache)?;
    if let Some(n) = args.limit_base {
        base.truncate(n * dim);
    }
    if let Some(n) = args.limit_queries {
        queries.truncate(n * dim);
    }
    let spec = BenchSpec {
        backends: args.backends.clone(),
        metric: args.metric,
        hnsw_ef_construction: args.ef_construction,
        hnsw_ef_search: args.ef_search.clone(),
        usearch_storage: args.storage.clone(),
        deterministic: args.deterministic,
        arroy_trees: args.n_trees.clone(),
        arroy_search_k: args.search_k.clone(),
        single_queries: args.single_queries,
        incremental: args.incremental,
    };
    let tmp;
    let work = match &args.work_dir {
        Some(d) => d.clone(),
        None => {
            tmp = tempfile::tempdir()?;
            tmp.path().to_path_buf()
        }
    };
    let rows = bench::run(&base, &queries, dim, &spec, &work, &mut |line| eprintln!("{line}"))?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
    } else {
        print!("{}", bench::table(&rows));
    }
    Ok(())
}
