//! The notebook extension on real data: DataFrame tables, charts with their static
//! fallback, image grids, the retrieval panel and the Fig-5 index-content sweep.

use std::path::Path;

use polars::prelude::*;
use rac_core::data::{DataOverrides, Dataset, SplitKind};
use rac_core::experiment::{Experiment, Prepared, RunEnv, run};
use rac_core::index::{Backend, IndexConfig, RetrievalIndex};
use rac_kernel_ext::prelude::*;
use rac_tests::{cache, manifest, places_split_dir, tiny_fashion_set, tiny_fashion_set_with_external};

fn fashion() -> Dataset {
    Dataset::load(&manifest("fashion-mnist-lt.toml"), &DataOverrides::default(), &cache()).unwrap()
}

#[test]
fn a_dataframe_shows_as_an_html_table_with_a_text_fallback() {
    let stats = stats_frame(&fashion()).unwrap();
    let b = stats.mime_bundle();
    let html = b.get("text/html").unwrap();
    assert!(html.contains("<table") && html.contains("<th"), "{html}");
    assert!(html.contains("train_count") && html.contains("T-shirt/top"));
    assert_eq!(html.matches("<tr>").count(), 1 + 10, "header + one row per class");
    assert!(html.contains(">5000<") && html.contains(">10<"), "the real long-tail counts");
    assert!(html.contains("10 rows × 5 columns"));
    assert!(b.get("text/plain").unwrap().contains("5000"));
    let wire = b.to_evcxr();
    assert_eq!(wire.matches("EVCXR_BEGIN_CONTENT").count(), 2);
    assert!(wire.starts_with("EVCXR_BEGIN_CONTENT text/html\n"));
}

#[test]
fn large_frames_are_cut_to_the_row_limit_and_numbers_are_formatted() {
    let overrides = DataOverrides { split_dir: Some(places_split_dir()), image_root: None };
    let places = Dataset::load(&manifest("places365-lt.toml"), &overrides, &cache()).unwrap();
    let mut stats = stats_frame(&places).unwrap();
    assert_eq!(stats.height(), 365);
    let share: Vec<f64> = (0..365).map(|i| i as f64 / 3.0).collect();
    stats.with_column(Column::new("share".into(), share)).unwrap();
    let html = html_table(&stats, TableLimits { max_rows: 10, max_cols: 16 });
    assert_eq!(html.matches("<tr>").count(), 1 + 10 + 1, "header, 10 rows and the ellipsis row");
    assert!(html.contains("<td style=\"text-align:left\">…</td>"));
    assert!(html.contains("365 rows × 6 columns"));
    assert!(html.contains(">0.3333<") && html.contains(">121.33<"), "floats are rounded: {html}");
    let narrow = html_table(&stats, TableLimits { max_rows: 5, max_cols: 2 });
    assert!(narrow.contains("<th>…</th>") && !narrow.contains("train_count"));
}

#[test]
fn an_image_grid_holds_the_real_images_as_png() {
    let ds = fashion();
    let grid = class_samples(&ds, SplitKind::Train, 2).unwrap();
    assert_eq!(grid.cells.len(), 20);
    let html = grid.mime_bundle().get("text/html").unwrap().to_string();
    let first = html.split("base64,").nth(1).unwrap().split('"').next().unwrap();
    use base64::Engine;
    let png = base64::engine::general_purpose::STANDARD.decode(first).unwrap();
    let img = image::load_from_memory(&png).unwrap();
    assert_eq!((img.width(), img.height()), (28, 28));
    assert_eq!(img.to_luma8().as_raw(), ds.train.image(0).unwrap().to_luma8().as_raw(), "the first training image, unchanged");
    assert!(html.contains("T-shirt/top") && html.contains("Ankle boot"));
}

#[test]
fn plots_carry_plotly_and_an_svg_fallback_and_name_missing_columns() {
    let df = df!(
        "method" => ["retrieval", "retrieval", "RAC", "RAC"],
        "branch" => ["retrieval", "retrieval", "fused", "fused"],
        "retrieval.k" => ["1", "10", "1", "10"],
        "top1" => [60.0, 70.0, 80.0, 85.0],
        "few" => [40.0, 55.0, 70.0, 78.0],
    )
    .unwrap();
    let chart = plot_effect_of_k(&df).unwrap();
    let b = chart.mime_bundle();
    let fig: serde_json::Value = serde_json::from_str(b.get("application/vnd.plotly.v1+json").unwrap()).unwrap();
    let traces = fig["data"].as_array().unwrap();
    assert_eq!(traces.len(), 4, "all and few for two method/branch groups");
    assert_eq!(traces[0]["x"], serde_json::json!([1.0, 10.0]));
    assert_eq!(traces[0]["y"], serde_json::json!([60.0, 70.0]));
    let svg = b.get("image/svg+xml").unwrap();
    assert!(svg.starts_with("<svg") && svg.contains("Effect of k"), "{}", &svg[..200.min(svg.len())]);
    assert!(svg.contains("<polyline") || svg.contains("<path"), "lines are drawn");

    let err = plot_tau_sweep(&df).unwrap_err().to_string();
    assert!(err.contains("loss.tau") && err.contains("retrieval.k"), "{err}");
    let err = plot_index_tradeoff(&df).unwrap_err().to_string();
    assert!(err.contains("backend"), "{err}");
}

fn small(manifest: &Path) -> Experiment {
    let text = format!(
        "name = \"nb\"\n[data]\nmanifest = \"{}\"\n[index]\nbackend = \"exact\"\n[retrieval]\nk = 5\nk_max = 8\ntext_encoder = \"bow-random\"\n\
         [optim]\nlr = 0.01\n[train]\nepochs = 2\nbatch_size = 16\nwarmup_epochs = 1\n",
        manifest.display()
    );
    Experiment::parse(Path::new("nb.toml"), &text).unwrap()
}

#[test]
fn a_run_record_its_per_class_plot_and_the_retrieval_panel() {
    let data = tempfile::tempdir().unwrap();
    let manifest = tiny_fashion_set(data.path(), 12, 4);
    let runs = tempfile::tempdir().unwrap();
    let env = RunEnv { runs_dir: runs.path().to_path_buf(), cache: cache(), ..RunEnv::from_env() };
    let exp = small(&manifest);
    let rec = run(&exp, &env).unwrap();
    let html = rec.mime_bundle().get("text/html").unwrap().to_string();
    assert!(html.contains("run nb") && html.contains(&exp.config_hash()) && html.contains("fused"));

    let chart = plot_per_class_accuracy(&rec.per_class).unwrap();
    assert_eq!(chart.series.len(), 3, "one line per branch (10 classes: no smoothing)");
    assert_eq!(chart.series.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(), ["base", "retrieval", "fused"]);
    let counts = f64_column(&rec.per_class, "train_count").unwrap();
    let texts = str_column(&rec.per_class, "text").unwrap();
    let max = counts.iter().cloned().fold(f64::MIN, f64::max);
    let most = counts.iter().position(|&c| c == max).unwrap();
    assert_eq!(chart.categories[0], texts[most], "the most frequent class comes first (ties by class id)");
    let least = counts.iter().cloned().fold(f64::MAX, f64::min);
    assert_eq!(chart.categories[9], texts[counts.iter().rposition(|&c| c == least).unwrap()], "the rarest class comes last");
    assert_eq!(chart.categories.len(), 10, "few classes: named on the axis");
    assert!(chart.mime_bundle().get("image/svg+xml").unwrap().contains("<svg"));

    let prep = Prepared::new(&exp, &env).unwrap();
    let panel = retrieval_panel(&prep, 3, 5).unwrap();
    assert_eq!(panel.neighbours.len(), 5);
    assert!(panel.neighbours.windows(2).all(|w| w[0].distance <= w[1].distance), "sorted by distance");
    assert_eq!(panel.true_label, prep.eval.labels[3] as u32);
    assert!(panel.neighbours.iter().all(|n| n.image.is_some()), "every neighbour maps back to its training image");
    assert_eq!(panel.counts.iter().map(|c| c.1).sum::<usize>(), 5);
    let html = panel.mime_bundle().get("text/html").unwrap().to_string();
    let hits = panel.neighbours.iter().filter(|n| n.label == panel.true_label).count();
    assert_eq!(html.matches(" ✓").count(), hits, "exact matches are marked");
    assert_eq!(html.matches("<img").count(), 1 + 5);

    // A source built from rows of the training split is the prepared index's own.
    let cfg = IndexConfig { backend: Backend::Exact, ..IndexConfig::default() };
    let work = tempfile::tempdir().unwrap();
    let full = RetrievalIndex::build(
        &work.path().join("full"),
        &cfg,
        &[train_source(&prep, "train", &(0..prep.train.ids.len()).collect::<Vec<_>>()).unwrap()],
    )
    .unwrap();
    assert_eq!(knn_table_of(&prep, &full, 5).unwrap(), knn_table_of(&prep, &prep.index, 5).unwrap());
}

#[test]
fn fig5_trains_one_run_per_index_content_and_plots_it_against_index_size() {
    let data = tempfile::tempdir().unwrap();
    let manifest = tiny_fashion_set_with_external(data.path(), 6, 2, 4);
    let runs = tempfile::tempdir().unwrap();
    let env = RunEnv { runs_dir: runs.path().to_path_buf(), cache: cache(), ..RunEnv::from_env() };
    let exp = small(&manifest).with("model.mode", "\"retrieval\"").unwrap();
    let grid =
        ContentGrid { source: "external".into(), fractions: vec![0.5, 1.0], per_class: vec![2], classes: vec![5], classes_per_class: 2, seed: 0 };
    let (records, table) = index_content(&exp, &grid, &env).unwrap();
    assert_eq!(records.len(), 4);
    assert_eq!(table.height(), 4, "one retrieval row per point");
    let items: Vec<u64> = table.column("index_items").unwrap().u64().unwrap().into_no_null_iter().collect();
    assert_eq!(items, vec![20, 40, 20, 10], "half and all of 40 external images; 2 of each of 10 classes; 2 of each of 5");
    assert!(records.iter().all(|r| r.meta.experiment.memory.sources == ["external"]));
    let chart = plot_index_content(&table).unwrap();
    assert!(chart.x_log);
    assert_eq!(chart.series.len(), 6, "all and few for each of the three settings");
    assert_eq!(chart.series[0].x, vec![20.0, 40.0], "index size, sorted");
    // Every point's record is read back on a second call: nothing is trained again.
    let (again, table2) = index_content(&exp, &grid, &env).unwrap();
    assert!(again.iter().zip(&records).all(|(a, b)| a.dir == b.dir && a.meta.wall_s == b.meta.wall_s));
    assert!(table2.equals_missing(&table));
}

/// `tables.py` (what `run_notebooks.py --verify` compares with) on two copies of notebook
/// 03's committed outputs, one of them with an accuracy changed.
fn verify_tables(change: &str) -> std::process::Output {
    let dir = tempfile::tempdir().unwrap();
    let committed = rac_tests::workspace_root().join("notebooks/03-effect-of-k.ipynb");
    let text = std::fs::read_to_string(&committed).unwrap();
    let cell = r#"right\">52.75</td>"#;
    assert_eq!(text.matches(cell).count(), 1, "notebook 03 shows `medium` 52.75 once (the retrieval row at k = 1)");
    let got = dir.path().join("got.ipynb");
    std::fs::write(&got, text.replace(cell, &cell.replace("52.75", change))).unwrap();
    std::process::Command::new("python3")
        .arg(rac_tests::workspace_root().join("tests/notebooks/tables.py"))
        .args([committed.as_os_str(), got.as_os_str()])
        .output()
        .unwrap()
}

#[test]
fn verify_tells_identical_from_within_tolerance_from_different() {
    let same = verify_tables("52.75");
    let out = String::from_utf8_lossy(&same.stdout);
    assert!(same.status.success() && out.contains("table 0: identical"), "{out}");
    // 0.01 point: another CPU's rounding, within the default 0.1 point.
    let near = verify_tables("52.76");
    let out = String::from_utf8_lossy(&near.stdout);
    assert!(near.status.success() && out.contains("within tolerance (largest difference 0.01"), "{out}");
    // 1 point: a different result, named by cell, table, row, column and both values.
    let far = verify_tables("53.75");
    let out = String::from_utf8_lossy(&far.stdout);
    assert_eq!(far.status.code(), Some(1), "{out}");
    assert!(out.contains("table 0: different") && out.contains("cell 3 (") && out.contains("row 1 `medium f64`: expected 52.75, got 53.75"), "{out}");
}
