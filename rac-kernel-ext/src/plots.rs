//! The paper's views as charts, each built from the table a notebook already has (a sweep
//! table, a per-class table, a bench table). Every helper names the column it misses.

use polars::prelude::{DataFrame, DataType, PolarsError};
use rac_core::{Error, Result};

use crate::figure::{Chart, SeriesKind};

/// The first of `names` that `df` has.
fn pick<'a>(df: &DataFrame, names: &[&'a str], plot: &str) -> Result<&'a str> {
    names.iter().copied().find(|n| df.column(n).is_ok()).ok_or_else(|| {
        let have: Vec<String> = df.get_column_names().iter().map(|c| c.to_string()).collect();
        Error::MissingColumn { what: plot.to_string(), wanted: names.join(" or "), have: have.join(", ") }
    })
}

/// The error of a column `df` lacks.
fn missing(df: &DataFrame, name: &str) -> Error {
    let have: Vec<String> = df.get_column_names().iter().map(|c| c.to_string()).collect();
    Error::MissingColumn { what: "a plot".into(), wanted: format!("`{name}`"), have: have.join(", ") }
}

/// A column as f64 (numbers, or strings that hold numbers, as sweep tables do).
pub fn f64_column(df: &DataFrame, name: &str) -> Result<Vec<f64>> {
    let col = df.column(name).map_err(|_| missing(df, name))?;
    let not_numbers = |e: PolarsError| Error::Shape { what: format!("column `{name}`"), expected: "numbers".into(), found: e.to_string() };
    let cast = col.cast(&DataType::Float64).map_err(not_numbers)?;
    let ca = cast.f64().map_err(not_numbers)?;
    Ok((0..ca.len()).map(|i| ca.get(i).unwrap_or(f64::NAN)).collect())
}

/// A column as strings (numbers are formatted).
pub fn str_column(df: &DataFrame, name: &str) -> Result<Vec<String>> {
    let col = df.column(name).map_err(|_| missing(df, name))?;
    (0..col.len()).map(|i| Ok(col.get(i).map(|v| rac_core::eval::format_value(&v)).unwrap_or_default())).collect()
}

/// The row labels `method · branch` (or whichever of the two the table has).
fn row_groups(df: &DataFrame) -> Result<Vec<String>> {
    let n = df.height();
    let method = if df.column("method").is_ok() { str_column(df, "method")? } else { vec![String::new(); n] };
    let branch = if df.column("branch").is_ok() { str_column(df, "branch")? } else { vec![String::new(); n] };
    Ok(method
        .into_iter()
        .zip(branch)
        .map(|(m, b)| match (m.is_empty(), b.is_empty()) {
            (false, false) => format!("{m} · {b}"),
            (false, true) => m,
            _ => b,
        })
        .collect())
}

/// Rows kept as a method's own output: `fused` for RAC, the only branch otherwise.
fn primary_rows(df: &DataFrame) -> Result<Vec<bool>> {
    let n = df.height();
    if df.column("branch").is_err() {
        return Ok(vec![true; n]);
    }
    let branch = str_column(df, "branch")?;
    let method = if df.column("method").is_ok() { str_column(df, "method")? } else { vec![String::new(); n] };
    let has_fused = |m: &str| (0..n).any(|i| method[i] == m && branch[i] == "fused");
    Ok((0..n).map(|i| if has_fused(&method[i]) { branch[i] == "fused" } else { true }).collect())
}

/// Points of `y` against `x`, one series per group (in order of first appearance), sorted by x.
fn by_group(groups: &[String], keep: &[bool], x: &[f64], y: &[f64]) -> Vec<(String, Vec<f64>, Vec<f64>)> {
    let mut out: Vec<(String, Vec<(f64, f64)>)> = Vec::new();
    for i in 0..groups.len() {
        if !keep[i] {
            continue;
        }
        match out.iter_mut().find(|(g, _)| *g == groups[i]) {
            Some((_, pts)) => pts.push((x[i], y[i])),
            None => out.push((groups[i].clone(), vec![(x[i], y[i])])),
        }
    }
    out.into_iter()
        .map(|(g, mut pts)| {
            pts.sort_by(|a, b| a.0.total_cmp(&b.0));
            let (xs, ys) = pts.into_iter().unzip();
            (g, xs, ys)
        })
        .collect()
}

/// A line chart of metric columns against `x_col`, one solid line per group for `top1` and
/// a dashed one for `few`.
fn sweep_lines(df: &DataFrame, mut chart: Chart, x_col: &str, groups: &[String], keep: &[bool]) -> Result<Chart> {
    let x = f64_column(df, x_col)?;
    let all = pick(df, &["top1", "all"], &chart.title)?;
    for (metric, kind, label) in [(all, SeriesKind::Line, "all"), ("few", SeriesKind::DashedLine, "few")] {
        let y = f64_column(df, metric)?;
        for (g, xs, ys) in by_group(groups, keep, &x, &y) {
            let name = if g.is_empty() { label.to_string() } else { format!("{g} ({label})") };
            chart = chart.with_series(name, xs, ys, kind);
        }
    }
    Ok(chart)
}

/// Fig 3: top-1 (solid) and few-shot top-1 (dashed) against k, one line per method and
/// branch. Takes a sweep table over `retrieval.k` (or any table with `k`, `top1`, `few`).
pub fn plot_effect_of_k(df: &DataFrame) -> Result<Chart> {
    let x = pick(df, &["retrieval.k", "k"], "plot_effect_of_k")?;
    let chart = Chart::new("Effect of k (Fig 3)", "k (neighbours)", "balanced top-1 (%)");
    let groups = row_groups(df)?;
    sweep_lines(df, chart, x, &groups, &vec![true; df.height()])
}

/// Fig 5: top-1 (solid) and few-shot top-1 (dashed) against the number of items in the
/// index (log scale), one line per `setting` (index size, samples per class, number of
/// classes), so that settings are compared at the same index size. Takes
/// [`index_content`](rac_core::experiment::index_content)'s table; a method's own output
/// is drawn (the retrieval branch of a retrieval-only run, the fused one of RAC).
pub fn plot_index_content(df: &DataFrame) -> Result<Chart> {
    let x = pick(df, &["index_items"], "plot_index_content")?;
    let setting = pick(df, &["setting"], "plot_index_content")?;
    let mut chart = Chart::new("Index content (Fig 5)", "items in the index", "balanced top-1 (%)");
    chart.x_log = true;
    let groups = str_column(df, setting)?;
    sweep_lines(df, chart, x, &groups, &primary_rows(df)?)
}

/// Memory added at run time: few-shot top-1 (solid) and all-class top-1 (dashed) of the
/// fused branch at each step (1 trained index, 2 source added, 3 source removed), one line
/// per case. Takes [`runtime_memory`](rac_core::experiment::runtime_memory)'s table.
pub fn plot_memory_steps(df: &DataFrame) -> Result<Chart> {
    let (case, step) = (pick(df, &["case"], "plot_memory_steps")?, pick(df, &["step"], "plot_memory_steps")?);
    let cases = str_column(df, case)?;
    let steps = str_column(df, step)?;
    let keep = primary_rows(df)?;
    let mut categories: Vec<String> = Vec::new();
    for (s, &k) in steps.iter().zip(&keep) {
        if k && !categories.contains(s) {
            categories.push(s.clone());
        }
    }
    let x: Vec<f64> = steps.iter().map(|s| categories.iter().position(|c| c == s).unwrap_or(0) as f64).collect();
    let mut chart = Chart::new("Memory added at run time", "step (weights fixed)", "balanced top-1 (%)");
    for (metric, kind, label) in [("few", SeriesKind::Line, "few"), ("top1", SeriesKind::DashedLine, "all")] {
        let y = f64_column(df, metric)?;
        for (g, xs, ys) in by_group(&cases, &keep, &x, &y) {
            chart = chart.with_series(format!("{g} ({label})"), xs, ys, kind);
        }
    }
    chart.categories = categories;
    Ok(chart)
}

/// Fig S1: top-1 overall and per shot bucket against LACE's tau, for each method's own
/// output (fused for RAC).
pub fn plot_tau_sweep(df: &DataFrame) -> Result<Chart> {
    let x_col = pick(df, &["loss.tau", "tau"], "plot_tau_sweep")?;
    let x = f64_column(df, x_col)?;
    let groups = row_groups(df)?;
    let keep = primary_rows(df)?;
    let mut chart = Chart::new("Effect of tau (Fig S1)", "tau", "balanced top-1 (%)");
    let multi = by_group(&groups, &keep, &x, &x).len() > 1;
    for (metric, kind) in
        [("top1", SeriesKind::Line), ("many", SeriesKind::DashedLine), ("medium", SeriesKind::DashedLine), ("few", SeriesKind::DashedLine)]
    {
        let y = f64_column(df, metric)?;
        for (g, xs, ys) in by_group(&groups, &keep, &x, &y) {
            let label = if metric == "top1" { "all" } else { metric };
            chart = chart.with_series(if multi { format!("{g} ({label})") } else { label.to_string() }, xs, ys, kind);
        }
    }
    Ok(chart)
}

/// Fig 4: grouped bars of top-1 overall and per bucket, one group per text encoder. Takes a
/// sweep table over `retrieval.text_encoder` (optionally also `retrieval.finetune_text`).
pub fn plot_text_encoders(df: &DataFrame) -> Result<Chart> {
    let enc_col = pick(df, &["retrieval.text_encoder", "text_encoder"], "plot_text_encoders")?;
    let mut names = str_column(df, enc_col)?;
    for ft in ["retrieval.finetune_text", "finetune_text"] {
        if df.column(ft).is_ok() {
            for (n, f) in names.iter_mut().zip(str_column(df, ft)?) {
                if f == "true" {
                    n.push_str(" (fine-tuned)");
                }
            }
        }
    }
    let keep = primary_rows(df)?;
    let mut categories: Vec<String> = Vec::new();
    for (n, &k) in names.iter().zip(&keep) {
        if k && !categories.contains(n) {
            categories.push(n.clone());
        }
    }
    let mut chart = Chart::new("Text encoders (Fig 4)", "text encoder T", "balanced top-1 (%)");
    for (metric, label) in [("top1", "all"), ("many", "many"), ("medium", "medium"), ("few", "few")] {
        let y = f64_column(df, metric)?;
        let (mut xs, mut ys) = (Vec::new(), Vec::new());
        for (i, n) in names.iter().enumerate() {
            if keep[i] {
                xs.push(categories.iter().position(|c| c == n).unwrap_or(0) as f64);
                ys.push(y[i]);
            }
        }
        chart = chart.with_series(label, xs, ys, SeriesKind::Bar);
    }
    chart.categories = categories;
    Ok(chart)
}

/// Fig 2: per-class top-1 of each branch, classes sorted by training count (most frequent
/// first), as points with a moving average. Takes a run's per-class table
/// (`train_count` and `acc_<branch>` columns).
pub fn plot_per_class_accuracy(per_class: &DataFrame) -> Result<Chart> {
    pick(per_class, &["train_count"], "plot_per_class_accuracy")?;
    let counts = f64_column(per_class, "train_count")?;
    let mut order: Vec<usize> = (0..counts.len()).collect();
    order.sort_by(|&a, &b| counts[b].total_cmp(&counts[a]).then(a.cmp(&b)));
    let branches: Vec<String> = per_class.get_column_names().iter().map(|c| c.to_string()).filter(|c| c.starts_with("acc_")).collect();
    if branches.is_empty() {
        let have: Vec<String> = per_class.get_column_names().iter().map(|c| c.to_string()).collect();
        return Err(Error::MissingColumn { what: "plot_per_class_accuracy".into(), wanted: "`acc_<branch>`".into(), have: have.join(", ") });
    }
    let n = order.len();
    let window = (n / 10).max(1) | 1;
    let mut chart = Chart::new("Per-class accuracy by branch (Fig 2)", "classes, most frequent first (rank)", "top-1 (%)");
    if n <= 30 && per_class.column("text").is_ok() {
        let texts = str_column(per_class, "text")?;
        chart.categories = order.iter().map(|&i| texts[i].clone()).collect();
    }
    let x: Vec<f64> = (0..n).map(|r| r as f64).collect();
    for (c, b) in branches.iter().enumerate() {
        let acc = f64_column(per_class, b)?;
        let y: Vec<f64> = order.iter().map(|&i| acc[i]).collect();
        let name = b.trim_start_matches("acc_");
        if window == 1 {
            // Few classes: every class is a point, joined in frequency order.
            chart = chart.with_colored_series(name, x.clone(), y, SeriesKind::Line, c);
        } else {
            chart = chart.with_colored_series(name, x.clone(), y.clone(), SeriesKind::Markers, c);
            chart =
                chart.with_colored_series(format!("{name} (moving average of {window})"), x.clone(), moving_average(&y, window), SeriesKind::Line, c);
        }
    }
    Ok(chart)
}

/// A centred moving average over `window` points (shorter at the ends), skipping NaN.
pub fn moving_average(y: &[f64], window: usize) -> Vec<f64> {
    let h = window / 2;
    (0..y.len())
        .map(|i| {
            let vals: Vec<f64> = y[i.saturating_sub(h)..(i + h + 1).min(y.len())].iter().copied().filter(|v| v.is_finite()).collect();
            if vals.is_empty() { f64::NAN } else { vals.iter().sum::<f64>() / vals.len() as f64 }
        })
        .collect()
}

/// Recall@30 against batched queries/s, one line per backend (its parameter settings are
/// the points). Takes [`crate::bench_frame`]'s table.
pub fn plot_index_tradeoff(bench: &DataFrame) -> Result<Chart> {
    let backend = pick(bench, &["backend"], "plot_index_tradeoff")?;
    let recall = pick(bench, &["recall_at_30"], "plot_index_tradeoff")?;
    let qps = pick(bench, &["batched_qps"], "plot_index_tradeoff")?;
    let groups = str_column(bench, backend)?;
    let (x, y) = (f64_column(bench, recall)?, f64_column(bench, qps)?);
    let mut chart = Chart::new("Index backends: recall vs speed", "recall@30 against exact", "batched queries/s");
    chart.y_log = true;
    for (g, xs, ys) in by_group(&groups, &vec![true; groups.len()], &x, &y) {
        chart = chart.with_series(g, xs, ys, SeriesKind::Line);
    }
    Ok(chart)
}
