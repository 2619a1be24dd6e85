//! Classification and regression metrics, defined as scikit-learn defines them so a number
//! printed by kiln can be compared with one from a Python notebook without caveats.
//!
//! Single-label classification starts from a [`ConfusionMatrix`] (rows are true labels,
//! columns predictions); precision, recall and F1 are read off it per class or averaged
//! ([`Average`]), and [`ClassificationReport`] gathers them like sklearn's
//! `classification_report`. A ratio whose denominator is zero (a class never predicted, or
//! never present) is 0.0: sklearn's default `zero_division="warn"` yields the same value,
//! with a warning this library leaves to the caller. `tests/metrics_sklearn.rs` checks every
//! function against a fixture written by scikit-learn.

use serde::Serialize;

use crate::error::{Error, Result};

/// Decimal places in [`ClassificationReport::render_text`].
const REPORT_DIGITS: usize = 4;

/// Counts of (true label, predicted label) pairs for `num_classes` classes.
///
/// Every class in `0..num_classes` has a row and a column, whether or not it occurs, so
/// averages over classes match sklearn called with `labels=range(num_classes)`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ConfusionMatrix {
    num_classes: usize,
    /// Row-major `num_classes × num_classes`: row = true label, column = predicted label.
    counts: Vec<u64>,
}

impl ConfusionMatrix {
    /// Counts the pairs `(y_true[i], y_pred[i])`. Fails on empty or mismatched inputs and on
    /// labels outside `0..num_classes`, since any of those would make every metric a lie.
    pub fn new(y_true: &[u32], y_pred: &[u32], num_classes: usize) -> Result<Self> {
        check_same_len("y_true", y_true.len(), "y_pred", y_pred.len())?;
        check_non_empty("y_true", y_true.len())?;
        check_labels(y_true, num_classes)?;
        check_labels(y_pred, num_classes)?;
        let mut counts = vec![0u64; num_classes * num_classes];
        for (&t, &p) in y_true.iter().zip(y_pred) {
            counts[t as usize * num_classes + p as usize] += 1;
        }
        Ok(ConfusionMatrix { num_classes, counts })
    }

    pub fn num_classes(&self) -> usize {
        self.num_classes
    }

    /// The counts, row-major: row = true label, column = predicted label.
    pub fn counts(&self) -> &[u64] {
        &self.counts
    }

    /// Samples of class `true_class` predicted as `pred_class`. Panics when either index is
    /// not below `num_classes`, like slice indexing.
    pub fn get(&self, true_class: usize, pred_class: usize) -> u64 {
        assert!(
            true_class < self.num_classes && pred_class < self.num_classes,
            "confusion matrix index ({true_class}, {pred_class}) out of range for {} classes",
            self.num_classes
        );
        self.counts[true_class * self.num_classes + pred_class]
    }

    /// Number of samples counted.
    pub fn total(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// Samples of `class` predicted as `class`.
    pub fn true_positives(&self, class: usize) -> u64 {
        self.get(class, class)
    }

    /// Samples whose true label is `class` (the row sum).
    pub fn support(&self, class: usize) -> u64 {
        (0..self.num_classes).map(|p| self.get(class, p)).sum()
    }

    /// Samples predicted as `class` (the column sum).
    pub fn predicted(&self, class: usize) -> u64 {
        (0..self.num_classes).map(|t| self.get(t, class)).sum()
    }

    /// Fraction of samples on the diagonal.
    pub fn accuracy(&self) -> f64 {
        let correct: u64 = (0..self.num_classes).map(|c| self.true_positives(c)).sum();
        ratio(correct, self.total())
    }
}

/// How per-class scores are combined into one number (sklearn's `average=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Average {
    /// Pooled counts over all classes. For single-label multi-class data every sample is one
    /// prediction, so micro precision, recall and F1 all equal accuracy.
    Micro,
    /// Unweighted mean over all `num_classes` classes, absent ones included.
    Macro,
    /// Mean weighted by each class's support (number of true samples).
    Weighted,
}

/// Precision of each class: true positives / samples predicted as that class.
/// Index of the largest value (the first on ties).
pub fn argmax(row: &[f32]) -> usize {
    let mut best = 0;
    for (i, &v) in row.iter().enumerate() {
        if v > row[best] {
            best = i;
        }
    }
    best
}

/// Correct predictions in a batch: argmax per row, or a threshold for one output unit
/// (0 on logits, 0.5 on probabilities).
pub fn count_correct(output: &[f32], labels: &[u32], logits: bool) -> usize {
    let width = output.len() / labels.len().max(1);
    if width == 1 {
        let threshold = if logits { 0.0 } else { 0.5 };
        return output
            .iter()
            .zip(labels)
            .filter(|(&o, &l)| (o > threshold) as u32 == l)
            .count();
    }
    output
        .chunks_exact(width.max(1))
        .zip(labels)
        .filter(|(row, &label)| argmax(row) == label as usize)
        .count()
}

pub fn precision_per_class(cm: &ConfusionMatrix) -> Vec<f64> {
    per_class(cm, |c| ratio(cm.true_positives(c), cm.predicted(c)))
}

/// Recall of each class: true positives / samples of that class.
pub fn recall_per_class(cm: &ConfusionMatrix) -> Vec<f64> {
    per_class(cm, |c| ratio(cm.true_positives(c), cm.support(c)))
}

/// F1 of each class, as `2·tp / (support + predicted)`: the harmonic mean of precision and
/// recall written so that it is defined (0.0) whenever either of them is zero.
pub fn f1_per_class(cm: &ConfusionMatrix) -> Vec<f64> {
    per_class(cm, |c| {
        ratio(2 * cm.true_positives(c), cm.support(c) + cm.predicted(c))
    })
}

/// Precision averaged over classes.
pub fn precision(cm: &ConfusionMatrix, average: Average) -> f64 {
    combine(cm, average, &precision_per_class(cm))
}

/// Recall averaged over classes.
pub fn recall(cm: &ConfusionMatrix, average: Average) -> f64 {
    combine(cm, average, &recall_per_class(cm))
}

/// F1 averaged over classes. Macro and weighted F1 average the per-class F1 scores (as
/// sklearn does), which is not the F1 of the averaged precision and recall.
pub fn f1(cm: &ConfusionMatrix, average: Average) -> f64 {
    combine(cm, average, &f1_per_class(cm))
}

/// Precision, recall, F1 and support of one class or one average; `f1` is sklearn's
/// `f1-score`. An average's support is the total number of samples.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ClassMetrics {
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
    pub support: u64,
}

/// Everything sklearn's `classification_report` shows, as data (serializable for `--json`)
/// and as its text table ([`render_text`](Self::render_text)).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ClassificationReport {
    /// One entry per class, indexed by label.
    pub classes: Vec<ClassMetrics>,
    pub accuracy: f64,
    /// Equal to accuracy in all three scores; kept so consumers need not know that.
    pub micro_avg: ClassMetrics,
    pub macro_avg: ClassMetrics,
    pub weighted_avg: ClassMetrics,
}

impl ClassificationReport {
    pub fn new(cm: &ConfusionMatrix) -> Self {
        let (p, r, f) = (precision_per_class(cm), recall_per_class(cm), f1_per_class(cm));
        let classes = (0..cm.num_classes())
            .map(|c| ClassMetrics {
                precision: p[c],
                recall: r[c],
                f1: f[c],
                support: cm.support(c),
            })
            .collect();
        let averaged = |average| ClassMetrics {
            precision: combine(cm, average, &p),
            recall: combine(cm, average, &r),
            f1: combine(cm, average, &f),
            support: cm.total(),
        };
        ClassificationReport {
            classes,
            accuracy: cm.accuracy(),
            micro_avg: averaged(Average::Micro),
            macro_avg: averaged(Average::Macro),
            weighted_avg: averaged(Average::Weighted),
        }
    }

    /// The table sklearn's `classification_report(..., digits=4)` prints, character for
    /// character. Class `i` is labelled `class_names[i]`, or its index when the list is
    /// shorter, so the caller can pass `&[]` when classes have no names.
    pub fn render_text(&self, class_names: &[String]) -> String {
        let names: Vec<String> = (0..self.classes.len())
            .map(|i| class_names.get(i).cloned().unwrap_or_else(|| i.to_string()))
            .collect();
        let longest = names.iter().map(|n| n.chars().count()).max().unwrap_or(0);
        let width = longest.max("weighted avg".len()).max(REPORT_DIGITS);
        let mut out = format!("{:>width$} ", "");
        for header in ["precision", "recall", "f1-score", "support"] {
            out += &format!(" {header:>9}");
        }
        out += "\n\n";
        for (name, m) in names.iter().zip(&self.classes) {
            out += &report_row(name, m, width);
        }
        out += "\n";
        let total = self.weighted_avg.support;
        let d = REPORT_DIGITS;
        out += &format!(
            "{:>width$}  {:>9} {:>9} {:>9.d$} {total:>9}\n",
            "accuracy", "", "", self.accuracy
        );
        out += &report_row("macro avg", &self.macro_avg, width);
        out += &report_row("weighted avg", &self.weighted_avg, width);
        out
    }
}

/// Top-k accuracy: the fraction of samples whose true label is among the `k` highest of its
/// row of `scores` (row-major, `y_true.len() × num_classes`).
///
/// Ties rank as in sklearn's `top_k_accuracy_score` (a stable ascending sort, reversed):
/// among equal scores the higher class index ranks first. So the true label `t` is a hit
/// when fewer than `k` classes `j` have `s[j] > s[t]`, or `s[j] == s[t]` with `j > t`. A `k`
/// of `num_classes` or more counts every sample (sklearn warns that this is meaningless).
/// NaN scores are rejected because they have no rank.
pub fn top_k_accuracy(scores: &[f32], num_classes: usize, y_true: &[u32], k: usize) -> Result<f64> {
    check_non_empty("y_true", y_true.len())?;
    check_labels(y_true, num_classes)?;
    if y_true.len().checked_mul(num_classes) != Some(scores.len()) {
        return Err(Error::shape(
            "scores",
            format!("{} samples × {num_classes} classes", y_true.len()),
            format!("{} values", scores.len()),
        ));
    }
    if k == 0 {
        return Err(Error::setting("top-k accuracy k", k, "k ≥ 1"));
    }
    if let Some(i) = scores.iter().position(|s| s.is_nan()) {
        return Err(Error::setting(format!("scores[{i}]"), "NaN", "a number"));
    }
    let hits = y_true
        .iter()
        .zip(scores.chunks_exact(num_classes))
        .filter(|(&t, row)| rank_of(row, t as usize) < k)
        .count();
    Ok(hits as f64 / y_true.len() as f64)
}

/// Hard labels from probabilities of the positive class: 1 where `p > threshold`, else 0.
///
/// Strictly greater, as Keras's `BinaryAccuracy` and sklearn's own thresholding in
/// `top_k_accuracy_score` do, so a probability equal to the threshold is a 0. NaN is a 0.
pub fn binary_predictions(probabilities: &[f32], threshold: f32) -> Vec<u32> {
    probabilities.iter().map(|&p| u32::from(p > threshold)).collect()
}

/// Precision of the positive class 1 for labels in {0, 1} (sklearn's `average="binary"`).
pub fn binary_precision(y_true: &[u32], y_pred: &[u32]) -> Result<f64> {
    Ok(precision_per_class(&binary_matrix(y_true, y_pred)?)[POSITIVE])
}

/// Recall of the positive class 1 for labels in {0, 1}.
pub fn binary_recall(y_true: &[u32], y_pred: &[u32]) -> Result<f64> {
    Ok(recall_per_class(&binary_matrix(y_true, y_pred)?)[POSITIVE])
}

/// F1 of the positive class 1 for labels in {0, 1}.
pub fn binary_f1(y_true: &[u32], y_pred: &[u32]) -> Result<f64> {
    Ok(f1_per_class(&binary_matrix(y_true, y_pred)?)[POSITIVE])
}

/// Mean of `(y_true − y_pred)²`, computed in f64 so long inputs lose no precision.
pub fn mean_squared_error(y_true: &[f32], y_pred: &[f32]) -> Result<f64> {
    mean_of_differences(y_true, y_pred, |d| d * d)
}

/// Mean of `|y_true − y_pred|`, computed in f64.
pub fn mean_absolute_error(y_true: &[f32], y_pred: &[f32]) -> Result<f64> {
    mean_of_differences(y_true, y_pred, f64::abs)
}

/// The label whose precision, recall and F1 the binary functions report.
const POSITIVE: usize = 1;

fn binary_matrix(y_true: &[u32], y_pred: &[u32]) -> Result<ConfusionMatrix> {
    ConfusionMatrix::new(y_true, y_pred, 2)
}

/// Classes ranked above `t` in `row` under sklearn's tie order (see [`top_k_accuracy`]).
fn rank_of(row: &[f32], t: usize) -> usize {
    let s = row[t];
    row.iter()
        .enumerate()
        .filter(|&(j, &v)| v > s || (v == s && j > t))
        .count()
}

fn mean_of_differences(y_true: &[f32], y_pred: &[f32], f: impl Fn(f64) -> f64) -> Result<f64> {
    check_same_len("y_true", y_true.len(), "y_pred", y_pred.len())?;
    check_non_empty("y_true", y_true.len())?;
    let sum: f64 = y_true
        .iter()
        .zip(y_pred)
        .map(|(&t, &p)| f(t as f64 - p as f64))
        .sum();
    Ok(sum / y_true.len() as f64)
}

fn per_class(cm: &ConfusionMatrix, score: impl Fn(usize) -> f64) -> Vec<f64> {
    (0..cm.num_classes()).map(score).collect()
}

/// Combines per-class scores. The matrix is never empty, so the weighted mean is defined.
fn combine(cm: &ConfusionMatrix, average: Average, per_class: &[f64]) -> f64 {
    match average {
        Average::Micro => cm.accuracy(),
        Average::Macro => per_class.iter().sum::<f64>() / per_class.len() as f64,
        Average::Weighted => {
            let weighted: f64 = per_class
                .iter()
                .enumerate()
                .map(|(c, v)| v * cm.support(c) as f64)
                .sum();
            weighted / cm.total() as f64
        }
    }
}

/// `num / den`, or 0.0 when `den` is 0: sklearn's default `zero_division` result.
fn ratio(num: u64, den: u64) -> f64 {
    if den == 0 {
        0.0
    } else {
        num as f64 / den as f64
    }
}

fn report_row(name: &str, m: &ClassMetrics, width: usize) -> String {
    let d = REPORT_DIGITS;
    format!(
        "{name:>width$}  {:>9.d$} {:>9.d$} {:>9.d$} {:>9}\n",
        m.precision, m.recall, m.f1, m.support
    )
}

fn check_same_len(a: &str, a_len: usize, b: &str, b_len: usize) -> Result<()> {
    if a_len != b_len {
        return Err(Error::mismatch(
            format!("{a} and {b}"),
            "the same length",
            format!("{a_len} and {b_len} values"),
        ));
    }
    Ok(())
}

fn check_non_empty(name: &str, len: usize) -> Result<()> {
    if len == 0 {
        return Err(Error::too_few(format!("samples in {name}"), 0, 1));
    }
    Ok(())
}

fn check_labels(labels: &[u32], num_classes: usize) -> Result<()> {
    if num_classes == 0 {
        return Err(Error::setting("num_classes", 0, "at least 1 class"));
    }
    match labels.iter().find(|&&l| l as usize >= num_classes) {
        Some(&label) => Err(Error::LabelOutOfRange {
            label: label.into(),
            classes: num_classes,
        }),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn counts_argmax_and_threshold_hits() {
        assert_eq!(count_correct(&[0.1, 0.9, 0.8, 0.2], &[1, 1], false), 1);
        assert_eq!(count_correct(&[0.7, 0.2], &[1, 1], false), 1);
        assert_eq!(count_correct(&[-0.5, 0.3], &[0, 1], true), 2);
        assert_eq!(argmax(&[1.0, 3.0, 3.0]), 1);
    }

    use super::*;

    /// y_true = [0,0,1,1,1,2], y_pred = [0,1,1,1,0,1]: rows [1,1,0], [1,2,0], [0,1,0].
    /// Class 2 is never predicted, so its precision is 0/0.
    fn small() -> ConfusionMatrix {
        ConfusionMatrix::new(&[0, 0, 1, 1, 1, 2], &[0, 1, 1, 1, 0, 1], 3).unwrap()
    }

    fn assert_close(a: f64, b: f64) {
        assert!((a - b).abs() < 1e-12, "{a} != {b}");
    }

    fn assert_all_close(a: &[f64], b: &[f64]) {
        assert_eq!(a.len(), b.len());
        a.iter().zip(b).for_each(|(&x, &y)| assert_close(x, y));
    }

    fn error(r: Result<impl std::fmt::Debug>) -> Error {
        r.expect_err("expected an error")
    }

    #[test]
    fn confusion_matrix_counts_rows_as_true_and_columns_as_predicted() {
        let cm = small();
        assert_eq!(cm.counts(), &[1, 1, 0, 1, 2, 0, 0, 1, 0]);
        assert_eq!(cm.get(2, 1), 1);
        assert_eq!((cm.support(1), cm.predicted(1), cm.total()), (3, 4, 6));
        assert_close(cm.accuracy(), 0.5);
    }

    #[test]
    fn per_class_scores_use_zero_for_zero_division() {
        let cm = small();
        assert_all_close(&precision_per_class(&cm), &[0.5, 0.5, 0.0]);
        assert_all_close(&recall_per_class(&cm), &[0.5, 2.0 / 3.0, 0.0]);
        assert_all_close(&f1_per_class(&cm), &[0.5, 4.0 / 7.0, 0.0]);
    }

    #[test]
    fn averages_match_hand_computed_values() {
        let cm = small();
        assert_close(precision(&cm, Average::Micro), 0.5);
        assert_close(recall(&cm, Average::Micro), 0.5);
        assert_close(f1(&cm, Average::Micro), 0.5);
        assert_close(precision(&cm, Average::Macro), 1.0 / 3.0);
        assert_close(recall(&cm, Average::Macro), 7.0 / 18.0);
        assert_close(f1(&cm, Average::Macro), 5.0 / 14.0);
        assert_close(precision(&cm, Average::Weighted), 5.0 / 12.0);
        assert_close(recall(&cm, Average::Weighted), 0.5);
        assert_close(f1(&cm, Average::Weighted), 19.0 / 42.0);
    }

    #[test]
    fn report_gathers_classes_and_averages() {
        let report = ClassificationReport::new(&small());
        assert_eq!(report.classes.len(), 3);
        assert_eq!(report.classes[1].support, 3);
        assert_close(report.accuracy, 0.5);
        assert_close(report.micro_avg.f1, 0.5);
        assert_close(report.macro_avg.f1, 5.0 / 14.0);
        assert_eq!(report.weighted_avg.support, 6);
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(json["classes"][2]["precision"], 0.0);
        assert_eq!(json["macro_avg"]["support"], 6);
    }

    #[test]
    fn report_text_matches_sklearn_character_for_character() {
        // classification_report(y_true, y_pred, labels=[0, 1, 2], digits=4,
        //                       target_names=["cat", "dog", "2"]) from scikit-learn 1.9.1.
        let expected = [
            "              precision    recall  f1-score   support",
            "",
            "         cat     0.5000    0.5000    0.5000         2",
            "         dog     0.5000    0.6667    0.5714         3",
            "           2     0.0000    0.0000    0.0000         1",
            "",
            "    accuracy                         0.5000         6",
            "   macro avg     0.3333    0.3889    0.3571         6",
            "weighted avg     0.4167    0.5000    0.4524         6",
            "",
        ]
        .join("\n");
        let names = ["cat".to_string(), "dog".to_string()];
        assert_eq!(ClassificationReport::new(&small()).render_text(&names), expected);
    }

    #[test]
    fn top_k_counts_the_true_label_among_the_k_highest() {
        let scores = [0.1, 0.7, 0.2, 0.5, 0.3, 0.2];
        assert_close(top_k_accuracy(&scores, 3, &[2, 0], 1).unwrap(), 0.5);
        assert_close(top_k_accuracy(&scores, 3, &[2, 0], 2).unwrap(), 1.0);
        assert_close(top_k_accuracy(&scores, 3, &[1, 2], 5).unwrap(), 1.0);
    }

    #[test]
    fn top_k_ties_favour_the_higher_class_index() {
        let scores = [0.4, 0.4, 0.2];
        assert_close(top_k_accuracy(&scores, 3, &[0], 1).unwrap(), 0.0);
        assert_close(top_k_accuracy(&scores, 3, &[1], 1).unwrap(), 1.0);
        assert_close(top_k_accuracy(&scores, 3, &[0], 2).unwrap(), 1.0);
    }

    #[test]
    fn threshold_is_strict() {
        assert_eq!(
            binary_predictions(&[0.2, 0.5, 0.7, f32::NAN], 0.5),
            vec![0, 0, 1, 0]
        );
    }

    #[test]
    fn binary_scores_are_for_class_one() {
        let y_true = [0, 1, 1, 0];
        let y_pred = binary_predictions(&[0.2, 0.5, 0.7, 0.9], 0.5);
        assert_close(binary_precision(&y_true, &y_pred).unwrap(), 0.5);
        assert_close(binary_recall(&y_true, &[0, 1, 1, 1]).unwrap(), 1.0);
        assert_close(binary_f1(&y_true, &y_pred).unwrap(), 0.5);
        let none = binary_predictions(&[0.2, 0.5, 0.7, 0.9], 1.0);
        assert_eq!(binary_precision(&y_true, &none).unwrap(), 0.0);
        assert_eq!(binary_f1(&y_true, &none).unwrap(), 0.0);
    }

    #[test]
    fn regression_errors_match_hand_computed_values() {
        let (t, p) = ([1.0, 2.0, 3.0], [1.5, 2.0, 1.0]);
        assert_close(mean_squared_error(&t, &p).unwrap(), 4.25 / 3.0);
        assert_close(mean_absolute_error(&t, &p).unwrap(), 2.5 / 3.0);
    }

    #[test]
    fn bad_classification_inputs_are_errors() {
        let e = error(ConfusionMatrix::new(&[0, 1], &[0], 2));
        assert!(matches!(e, Error::Mismatch { .. }), "{e}");
        assert!(
            e.to_string()
                .contains("y_true and y_pred: expected the same length, found 2 and 1"),
            "{e}"
        );
        let e = error(ConfusionMatrix::new(&[], &[], 2));
        assert!(
            matches!(&e, Error::TooFew { what, found: 0, needed: 1 } if what.contains("y_true")),
            "{e}"
        );
        let e = error(ConfusionMatrix::new(&[0, 1], &[0, 3], 3));
        assert!(
            matches!(e, Error::LabelOutOfRange { label: 3, classes: 3 }),
            "{e}"
        );
        let e = error(ConfusionMatrix::new(&[0], &[0], 0));
        assert!(
            matches!(&e, Error::InvalidSetting { field, .. } if field == "num_classes"),
            "{e}"
        );
        let e = error(binary_precision(&[0, 2], &[0, 1]));
        assert!(
            matches!(e, Error::LabelOutOfRange { label: 2, classes: 2 }),
            "{e}"
        );
    }

    #[test]
    fn bad_top_k_inputs_are_errors() {
        let scores = [0.1, 0.9, 0.5, 0.5];
        let e = error(top_k_accuracy(&scores, 2, &[0, 1], 0));
        assert!(e.to_string().contains("k = 0"), "{e}");
        let e = error(top_k_accuracy(&scores, 3, &[0, 1], 1));
        assert!(matches!(e, Error::ShapeMismatch { .. }), "{e}");
        assert!(
            e.to_string()
                .contains("expected 2 samples × 3 classes, got 4 values"),
            "{e}"
        );
        let e = error(top_k_accuracy(&scores, 2, &[0, 2], 1));
        assert!(
            matches!(e, Error::LabelOutOfRange { label: 2, classes: 2 }),
            "{e}"
        );
        let e = error(top_k_accuracy(&[], 2, &[], 1));
        assert!(matches!(e, Error::TooFew { found: 0, .. }), "{e}");
        let e = error(top_k_accuracy(&[0.1, f32::NAN], 2, &[0], 1));
        assert!(e.to_string().contains("scores[1] = NaN"), "{e}");
    }

    #[test]
    fn bad_regression_inputs_are_errors() {
        let e = error(mean_squared_error(&[1.0], &[1.0, 2.0]));
        assert!(
            e.to_string()
                .contains("y_true and y_pred: expected the same length, found 1 and 2"),
            "{e}"
        );
        let e = error(mean_absolute_error(&[], &[]));
        assert!(e.to_string().contains("samples in y_true"), "{e}");
    }
}
