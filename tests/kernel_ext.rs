//! The notebook extension on real data: DataFrame tables, charts with their static
//! fallback, image grids, the retrieval panel and the index-content sweep.

use std::path::Path;

use polars::prelude::*;
use rac_core::data::{DataOverrides, Dataset, SplitKind};
use rac_core::experiment::{Experiment, Prepared, RunEnv, run};
use rac_core::index::{Backend, IndexConfig, RetrievalIndex};
use rac_kernel_ext::prelude::*;
use rac_tests::{cache, manifest, places_split_dir, tiny_fashion_set};

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
fn a_run_record_its_per_class_plot_the_retrieval_panel_and_index_content() {
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

    let cfg = IndexConfig { backend: Backend::Exact, ..IndexConfig::default() };
    let work = tempfile::tempdir().unwrap();
    let content = index_content_sweep(&prep, &cfg, &[0.5, 1.0], 5, 0, work.path()).unwrap();
    assert_eq!(content.height(), 6, "three thinnings at two fractions");
    let chart = plot_index_content(&content).unwrap();
    assert_eq!(chart.series.len(), 6, "all and few for each of the three settings");
    assert!(chart.series.iter().all(|s| s.x == vec![0.5, 1.0]));
    let full = RetrievalIndex::build(
        &work.path().join("full"),
        &cfg,
        &[train_source(&prep, "train", &(0..prep.train.ids.len()).collect::<Vec<_>>()).unwrap()],
    )
    .unwrap();
    let weighted = rows_with(&knn_table_of(&prep, &full, 5).unwrap(), "method", |m| m == "weighted").unwrap();
    let at_full = content.filter(&content.column("fraction").unwrap().f64().unwrap().equal(1.0)).unwrap();
    for i in 0..3 {
        assert_eq!(
            at_full.column("all").unwrap().get(i).unwrap(),
            weighted.column("all").unwrap().get(0).unwrap(),
            "fraction 1 keeps the whole index"
        );
    }
    let half = content.filter(&content.column("fraction").unwrap().f64().unwrap().equal(0.5)).unwrap();
    let items: Vec<u64> = half.column("index_items").unwrap().u64().unwrap().into_no_null_iter().collect();
    let n = prep.train.ids.len();
    assert_eq!(items[0], (n as f64 / 2.0).round() as u64, "half of the items");
    let rows = thin_rows(&prep, Thinning::Classes, 0.5, 0);
    let mut classes: Vec<usize> = rows.iter().map(|&r| prep.train.labels[r]).collect();
    classes.sort_unstable();
    classes.dedup();
    assert_eq!(classes.len(), 5, "half of the 10 classes, all of their items");
    assert_eq!(items[2], rows.len() as u64);
    assert_eq!(rows.len(), prep.train.labels.iter().filter(|l| classes.contains(l)).count());
}
