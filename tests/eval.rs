//! Balanced accuracy and shot-bucket accuracy on hand-made logits.

use candle_core::{Device, Tensor};
use rac_core::eval::{Branch, evaluate, metrics_frame, per_class_frame};

#[test]
fn accuracies_are_means_of_per_class_accuracies() {
    // Classes: 0 many (200 train), 1 medium (50), 2 few (5), 3 few (1).
    let counts = [200, 50, 5, 1];
    // Test items: class 0 x3 (all right), class 1 x1 (wrong: predicts 0),
    // class 2 x2 (one right), class 3 x1 (right). Logits are one-hot-ish rows.
    let rows: [[f32; 4]; 7] = [
        [9.0, 1.0, 0.0, 0.0],
        [9.0, 1.0, 0.0, 0.0],
        [9.0, 1.0, 0.0, 0.0],
        [9.0, 8.0, 0.0, 0.0],
        [0.0, 0.0, 9.0, 0.0],
        [9.0, 0.0, 0.0, 0.0],
        [0.0, 0.0, 0.0, 9.0],
    ];
    let labels = [0, 0, 0, 1, 2, 2, 3];
    let logits = Tensor::new(&rows, &Device::Cpu).unwrap();
    let m = evaluate(Branch::Fused, &logits, &labels, &counts).unwrap();
    assert_eq!(m.per_class_top1, [100.0, 0.0, 50.0, 100.0]);
    assert_eq!(m.top1, 62.5, "balanced: (100 + 0 + 50 + 100) / 4, not 5/7 of the items");
    assert_eq!((m.many, m.medium, m.few), (100.0, 0.0, 75.0));
    // Top-5 with 4 classes contains everything.
    assert_eq!(m.top5, 100.0);

    let df = metrics_frame(&[("run-a".into(), m.clone())]).unwrap();
    assert_eq!(df.shape(), (1, 7));
    assert_eq!(df.column("few").unwrap().f64().unwrap().get(0), Some(75.0));
    let texts: Vec<String> = ["a", "b", "c", "d"].iter().map(|s| s.to_string()).collect();
    let pc = per_class_frame(&texts, &counts, &[m]).unwrap();
    assert_eq!(pc.shape(), (4, 5));
    assert_eq!(pc.column("bucket").unwrap().str().unwrap().get(2), Some("few"));
}

#[test]
fn an_empty_bucket_is_nan_and_bad_shapes_are_errors() {
    let logits = Tensor::new(&[[1f32, 0.0], [0.0, 1.0]], &Device::Cpu).unwrap();
    let m = evaluate(Branch::Base, &logits, &[0, 1], &[500, 300]).unwrap();
    assert_eq!(m.top1, 100.0);
    assert!(m.medium.is_nan() && m.few.is_nan());
    assert!(evaluate(Branch::Base, &logits, &[0], &[500, 300]).is_err());
    assert!(evaluate(Branch::Base, &logits, &[0, 1], &[500]).is_err());
}

#[test]
fn the_cli_and_the_notebooks_round_numbers_alike() {
    use polars::prelude::*;
    use rac_core::eval::{format_value, text_table};
    assert_eq!(format_value(&AnyValue::Float64(89.766667)), "89.77");
    assert_eq!(format_value(&AnyValue::Float64(0.123456)), "0.1235");
    assert_eq!(format_value(&AnyValue::Float64(1.5e-5)), "1.500e-5");
    assert_eq!(format_value(&AnyValue::Null), "");
    let df = df!("method" => ["RAC", "CE"], "all" => [89.766667, 78.19], "n" => [10u32, 2]).unwrap();
    let text = text_table(&df);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "method    all   n");
    assert_eq!(lines[2], "RAC     89.77  10");
    assert_eq!(lines[3], "CE      78.19   2");
    assert!(!text.contains("89.766667"), "{text}");
    assert_eq!(lines[4], "(2 rows × 3 columns)");
}
