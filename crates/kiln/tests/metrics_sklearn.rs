//! kiln's metrics give scikit-learn's numbers: every value in `fixtures/sklearn_metrics.json`
//! (written by `fixtures/make_metrics_fixture.py`) agrees to 1e-9, counts and the text
//! report exactly.

use kiln::metrics::{self, Average, ClassMetrics, ClassificationReport, ConfusionMatrix};
use serde::Deserialize;

const TOLERANCE: f64 = 1e-9;

#[derive(Deserialize)]
struct Fixture {
    sklearn_version: String,
    multiclass: Vec<Multiclass>,
    top_k: TopK,
    top_k_ties: TopK,
    binary: Binary,
    regression: Regression,
}

#[derive(Deserialize)]
struct Multiclass {
    name: String,
    num_classes: usize,
    y_true: Vec<u32>,
    y_pred: Vec<u32>,
    confusion_matrix: Vec<Vec<u64>>,
    classes: Vec<Scores>,
    accuracy: f64,
    macro_avg: Scores,
    weighted_avg: Scores,
    averages: Averages,
    target_names: Vec<String>,
    report_text: String,
}

#[derive(Deserialize)]
struct Scores {
    precision: f64,
    recall: f64,
    f1: f64,
    support: u64,
}

#[derive(Deserialize)]
struct Averages {
    micro: Prf,
    #[serde(rename = "macro")]
    macro_: Prf,
    weighted: Prf,
}

#[derive(Deserialize)]
struct Prf {
    precision: f64,
    recall: f64,
    f1: f64,
}

#[derive(Deserialize)]
struct TopK {
    num_classes: usize,
    y_true: Vec<u32>,
    scores: Vec<Vec<f32>>,
    accuracy: Vec<TopKAccuracy>,
}

#[derive(Deserialize)]
struct TopKAccuracy {
    k: usize,
    accuracy: f64,
}

#[derive(Deserialize)]
struct Binary {
    y_true: Vec<u32>,
    probabilities: Vec<f32>,
    cases: Vec<BinaryCase>,
}

#[derive(Deserialize)]
struct BinaryCase {
    threshold: f32,
    y_pred: Vec<u32>,
    precision: f64,
    recall: f64,
    f1: f64,
}

#[derive(Deserialize)]
struct Regression {
    y_true: Vec<f32>,
    y_pred: Vec<f32>,
    mean_squared_error: f64,
    mean_absolute_error: f64,
}

fn fixture() -> Fixture {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/sklearn_metrics.json");
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let fixture: Fixture = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"));
    assert!(!fixture.sklearn_version.is_empty());
    fixture
}

fn assert_close(what: &str, got: f64, want: f64) {
    assert!(
        (got - want).abs() <= TOLERANCE,
        "{what}: kiln {got}, scikit-learn {want}"
    );
}

fn assert_scores(what: &str, got: &ClassMetrics, want: &Scores) {
    assert_close(&format!("{what} precision"), got.precision, want.precision);
    assert_close(&format!("{what} recall"), got.recall, want.recall);
    assert_close(&format!("{what} f1"), got.f1, want.f1);
    assert_eq!(got.support, want.support, "{what} support");
}

fn assert_prf(what: &str, cm: &ConfusionMatrix, average: Average, want: &Prf) {
    assert_close(
        &format!("{what} precision"),
        metrics::precision(cm, average),
        want.precision,
    );
    assert_close(
        &format!("{what} recall"),
        metrics::recall(cm, average),
        want.recall,
    );
    assert_close(&format!("{what} f1"), metrics::f1(cm, average), want.f1);
}

#[test]
fn confusion_matrices_match() {
    for case in fixture().multiclass {
        let cm = ConfusionMatrix::new(&case.y_true, &case.y_pred, case.num_classes).unwrap();
        let want: Vec<u64> = case.confusion_matrix.concat();
        assert_eq!(cm.counts(), want, "{}", case.name);
    }
}

#[test]
fn classification_reports_match() {
    for case in fixture().multiclass {
        let cm = ConfusionMatrix::new(&case.y_true, &case.y_pred, case.num_classes).unwrap();
        let report = ClassificationReport::new(&cm);
        assert_eq!(report.classes.len(), case.classes.len(), "{}", case.name);
        for (c, (got, want)) in report.classes.iter().zip(&case.classes).enumerate() {
            assert_scores(&format!("{} class {c}", case.name), got, want);
        }
        assert_close(&format!("{} accuracy", case.name), report.accuracy, case.accuracy);
        assert_scores(
            &format!("{} macro avg", case.name),
            &report.macro_avg,
            &case.macro_avg,
        );
        assert_scores(
            &format!("{} weighted avg", case.name),
            &report.weighted_avg,
            &case.weighted_avg,
        );
        assert_eq!(
            report.render_text(&case.target_names),
            case.report_text,
            "{}",
            case.name
        );
    }
}

#[test]
fn averaged_scores_match() {
    for case in fixture().multiclass {
        let cm = ConfusionMatrix::new(&case.y_true, &case.y_pred, case.num_classes).unwrap();
        assert_prf(
            &format!("{} micro", case.name),
            &cm,
            Average::Micro,
            &case.averages.micro,
        );
        assert_prf(
            &format!("{} macro", case.name),
            &cm,
            Average::Macro,
            &case.averages.macro_,
        );
        assert_prf(
            &format!("{} weighted", case.name),
            &cm,
            Average::Weighted,
            &case.averages.weighted,
        );
    }
}

#[test]
fn top_k_accuracy_matches() {
    let fixture = fixture();
    for (name, case) in [("top_k", &fixture.top_k), ("top_k_ties", &fixture.top_k_ties)] {
        let scores: Vec<f32> = case.scores.concat();
        for want in &case.accuracy {
            let got = metrics::top_k_accuracy(&scores, case.num_classes, &case.y_true, want.k).unwrap();
            assert_close(&format!("{name} k={}", want.k), got, want.accuracy);
        }
    }
}

#[test]
fn binary_thresholds_and_scores_match() {
    let binary = fixture().binary;
    for case in &binary.cases {
        let what = format!("threshold {}", case.threshold);
        let y_pred = metrics::binary_predictions(&binary.probabilities, case.threshold);
        assert_eq!(y_pred, case.y_pred, "{what} predictions");
        let y_true = &binary.y_true;
        assert_close(
            &format!("{what} precision"),
            metrics::binary_precision(y_true, &y_pred).unwrap(),
            case.precision,
        );
        assert_close(
            &format!("{what} recall"),
            metrics::binary_recall(y_true, &y_pred).unwrap(),
            case.recall,
        );
        assert_close(
            &format!("{what} f1"),
            metrics::binary_f1(y_true, &y_pred).unwrap(),
            case.f1,
        );
    }
}

#[test]
fn regression_errors_match() {
    let r = fixture().regression;
    let mse = metrics::mean_squared_error(&r.y_true, &r.y_pred).unwrap();
    let mae = metrics::mean_absolute_error(&r.y_true, &r.y_pred).unwrap();
    assert_close("mean_squared_error", mse, r.mean_squared_error);
    assert_close("mean_absolute_error", mae, r.mean_absolute_error);
}
