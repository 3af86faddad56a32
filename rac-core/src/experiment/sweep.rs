//! Sweeps: a grid over dotted keys of an experiment (`retrieval.k=1,5,10`), run into one
//! DataFrame. Runs that share data, encoder and index settings share one [`Prepared`].
//! Axes are typed ([`Sweep::modes`], [`Sweep::ks`], …) or parsed from the CLI's text; both
//! apply through the same edits, so `retrieval.k` grows `k_max` and `train.epochs` shortens
//! the warm-up either way.

use polars::prelude::*;
use serde::Serialize;

use super::config::Experiment;
use super::edit::TextEncoderKind;
use super::prepared::{Prepared, RunEnv};
use super::record::{self, RunRecord};
use super::run::run_prepared;
use crate::error::{Error, Result};
use crate::eval::vstack_all;
use crate::model::{LossKind, Mode, Reweighting};

/// One axis of a grid: a dotted key and its values (as TOML text).
#[derive(Debug, Clone, PartialEq)]
pub struct Sweep {
    /// The dotted key, e.g. `retrieval.k`.
    pub key: String,
    /// Its values.
    pub values: Vec<String>,
}

impl Sweep {
    /// Parse `key=v1,v2,...`.
    pub fn parse(s: &str) -> Result<Self> {
        let bad = |field: &str, message: String| Error::InvalidField { path: "--set".into(), field: field.into(), message };
        let (key, values) = s.split_once('=').ok_or_else(|| bad(s, "expects key=v1,v2,...".into()))?;
        let values: Vec<String> = values.split(',').map(|v| v.trim().to_string()).filter(|v| !v.is_empty()).collect();
        if values.is_empty() {
            return Err(bad(key.trim(), "has no values".into()));
        }
        Ok(Sweep { key: key.trim().to_string(), values })
    }

    /// An axis over any key, its values typed (serialised as the experiment file would).
    pub fn over<T: Serialize>(key: &str, values: &[T]) -> Self {
        let text = |v: &T| toml::Value::try_from(v).expect("sweep values serialise").to_string();
        Sweep { key: key.into(), values: values.iter().map(text).collect() }
    }

    /// `model.mode`: base, retrieval, RAC.
    pub fn modes(modes: &[Mode]) -> Self {
        Self::over("model.mode", modes)
    }

    /// `retrieval.k`, the neighbours read.
    pub fn ks(ks: &[usize]) -> Self {
        Self::over("retrieval.k", ks)
    }

    /// `loss.kind`.
    pub fn losses(kinds: &[LossKind]) -> Self {
        Self::over("loss.kind", kinds)
    }

    /// `loss.tau`, LACE's temperature.
    pub fn taus(taus: &[f64]) -> Self {
        Self::over("loss.tau", taus)
    }

    /// `loss.reweighting`.
    pub fn reweightings(weights: &[Reweighting]) -> Self {
        Self::over("loss.reweighting", weights)
    }

    /// `retrieval.text_encoder`.
    pub fn text_encoders(encoders: &[TextEncoderKind]) -> Self {
        Self::over("retrieval.text_encoder", &encoders.iter().map(|e| e.to_string()).collect::<Vec<_>>())
    }

    /// `train.epochs` (each point's warm-up shortened to fit).
    pub fn epochs(epochs: &[usize]) -> Self {
        Self::over("train.epochs", epochs)
    }
}

/// A value of an axis as a table shows it: text unquoted, numbers as written.
fn label(value: &str) -> String {
    match toml::from_str::<toml::Table>(&format!("v = {value}")).ok().and_then(|mut t| t.remove("v")) {
        Some(toml::Value::String(s)) => s,
        _ => value.to_string(),
    }
}

/// `exp` with `key` set to `value` (TOML text): the typed edit where there is one.
fn apply(exp: &Experiment, key: &str, value: &str) -> Result<Experiment> {
    let number = || {
        value.parse::<usize>().map_err(|_| Error::InvalidField {
            path: "--set".into(),
            field: key.into(),
            message: format!("`{value}` is not a count"),
        })
    };
    match key {
        "retrieval.k" => exp.with_k(number()?),
        "train.epochs" => exp.with_epochs(number()?),
        _ => exp.with(key, value),
    }
}

/// The (key, value) settings of one point of a grid.
pub type GridPoint = Vec<(String, String)>;

/// Every experiment of the grid, each named `<name>-<key>=<value>...`.
pub fn grid(base: &Experiment, axes: &[Sweep]) -> Result<Vec<(GridPoint, Experiment)>> {
    let mut out = vec![(Vec::new(), base.clone())];
    for axis in axes {
        let mut next = Vec::new();
        for (set, exp) in &out {
            for v in &axis.values {
                let mut e = apply(exp, &axis.key, v)?;
                let mut set = set.clone();
                set.push((axis.key.clone(), v.clone()));
                e.name = format!("{}-{}", base.name, set.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("-"));
                next.push((set, e));
            }
        }
        out = next;
    }
    Ok(out)
}

/// Run experiments in order, re-using the prepared data, features and index between
/// consecutive runs that share them; complete records are loaded instead (unless forced).
pub fn sweep_list(exps: &[Experiment], env: &RunEnv) -> Result<(Vec<RunRecord>, DataFrame)> {
    let mut records = Vec::with_capacity(exps.len());
    let mut prepared: Option<(String, Prepared)> = None;
    for exp in exps {
        if !env.force
            && let Some(rec) = record::reuse(&env.runs_dir, exp)?
        {
            records.push(rec);
            continue;
        }
        let key = serde_json::to_string(&(&exp.data, &exp.encoder, &exp.index, &exp.memory, exp.train.seed)).expect("sections serialise");
        if prepared.as_ref().is_none_or(|(k, _)| *k != key) {
            prepared = Some((key.clone(), Prepared::new(exp, env)?));
        }
        let (_, prep) = prepared.as_mut().expect("just set");
        records.push(run_prepared(exp, prep, env)?);
    }
    let frames = records.iter().map(|r| r.metrics_with_run()).collect::<Result<Vec<_>>>()?;
    let table = vstack_all(frames, "no experiments to run")?;
    Ok((records, table))
}

/// Run a grid and return its records and one table: the metrics of every run with one
/// column per swept key.
pub fn sweep(base: &Experiment, axes: &[Sweep], env: &RunEnv) -> Result<(Vec<RunRecord>, DataFrame)> {
    let runs = grid(base, axes)?;
    let exps: Vec<Experiment> = runs.iter().map(|(_, e)| e.clone()).collect();
    let (records, _) = sweep_list(&exps, env)?;
    let mut frames = Vec::with_capacity(records.len());
    for ((set, _), rec) in runs.iter().zip(&records) {
        let mut df = rec.metrics_with_run()?;
        let n = df.height();
        for (k, v) in set {
            df.with_column(Column::new(k.as_str().into(), vec![label(v); n]))?;
        }
        frames.push(df);
    }
    let table = vstack_all(frames, "the sweep has no runs")?;
    Ok((records, table))
}
