//! Cleaning tabular data: missing values (drop the row, or impute mean / median / most
//! frequent), outliers (by z-score or IQR, dropped or clipped) and duplicate rows. Every
//! statistic is fitted on the training split only and saved with the model, so evaluation
//! and prediction clean new rows exactly as training did; each step reports what it did.
//!
//! Order, as a user would do it by hand: outlier bounds from the observed training values;
//! outliers dropped or clipped; imputation statistics from what remains; gaps filled or
//! their rows dropped; then exact duplicates (features and label) dropped.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

use super::Dataset;

/// What to do with a missing value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MissingValues {
    /// Drop training and test rows with a gap (prediction rows with one are an error).
    Drop,
    Mean,
    Median,
    /// The commonest value; categorical columns always use this.
    MostFrequent,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OutlierMethod {
    /// |value − mean| > threshold × std (population std); threshold default 3.
    ZScore,
    /// value outside [Q1 − threshold × IQR, Q3 + threshold × IQR]; threshold default 1.5.
    Iqr,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OutlierAction {
    /// Replace an outlier by the nearest bound, in every split and at prediction.
    #[default]
    Clip,
    /// Drop training rows with an outlier (test and prediction rows are kept as they are).
    Drop,
}

/// `outliers = { method = "iqr", threshold = 1.5, action = "clip" }` in a spec.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Outliers {
    pub method: OutlierMethod,
    #[serde(default)]
    pub threshold: Option<f32>,
    #[serde(default)]
    pub action: OutlierAction,
}

/// The cleaning a spec asks for.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Cleaning {
    pub missing: Option<MissingValues>,
    pub outliers: Option<Outliers>,
    pub drop_duplicates: bool,
}

/// Cleaning with its statistics, saved with a model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FittedCleaning {
    pub missing: Option<MissingValues>,
    /// Per column, the value that fills a gap (empty unless imputing).
    #[serde(default)]
    pub fill: Vec<f32>,
    /// Per column, the [low, high] values outside which a value is an outlier (numeric
    /// columns only; empty without outlier handling).
    #[serde(default)]
    pub bounds: Vec<Option<[f32; 2]>>,
    #[serde(default)]
    pub outlier_action: OutlierAction,
    #[serde(default)]
    pub drop_duplicates: bool,
}

/// Which data is being cleaned: training rows may be dropped for any reason, held-out
/// rows only for a gap (under `missing = "drop"`), prediction rows never.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    Train,
    Evaluate,
    Predict,
}

/// What cleaning did to one split.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct CleaningReport {
    pub rows_in: usize,
    pub rows_out: usize,
    pub dropped_for_missing: usize,
    pub dropped_for_outliers: usize,
    pub dropped_duplicates: usize,
    pub columns: Vec<ColumnReport>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ColumnReport {
    pub name: String,
    pub missing: usize,
    pub imputed: usize,
    /// The value gaps were filled with (a category's index for categorical columns).
    pub fill: Option<f32>,
    pub clipped: usize,
    /// Values outside the bounds (rows dropped for them, or values clipped).
    pub outliers: usize,
}

impl Cleaning {
    /// Fits the statistics on the raw training split (NaN = missing). `categorical[c]`
    /// marks one-hot columns: no outlier bounds, and gaps filled with the commonest value.
    /// `first_missing` names the first gap, for the error when the spec says nothing of
    /// missing values.
    pub fn fit(
        &self,
        train: &Dataset,
        categorical: &[bool],
        first_missing: Option<&str>,
    ) -> Result<FittedCleaning> {
        let width = train.sample_size();
        let first_gap = || train.features.iter().position(|v| v.is_nan());
        if let Some(at) = self.missing.is_none().then(first_gap).flatten() {
            let gaps = train.features.iter().filter(|v| v.is_nan()).count();
            return Err(Error::MissingValue {
                row: at / width + 1,
                column: format!("feature column {}", at % width + 1),
                hint: format!(
                    "the training data has {gaps} missing value(s) (first: {}); set preprocessing.missing to \"drop\", \"mean\", \"median\" or \"most_frequent\"",
                    first_missing.unwrap_or("unknown place")
                ),
            });
        }
        let column = |c: usize| -> Vec<f32> {
            (0..train.len())
                .map(|i| train.features[i * width + c])
                .filter(|v| !v.is_nan())
                .collect()
        };
        let bounds: Vec<Option<[f32; 2]>> = match self.outliers {
            None => Vec::new(),
            Some(o) => (0..width)
                .map(|c| match categorical[c] {
                    true => None,
                    false => outlier_bounds(&column(c), o),
                })
                .collect(),
        };
        let mut fitted = FittedCleaning {
            missing: self.missing,
            fill: Vec::new(),
            bounds,
            outlier_action: self.outliers.map(|o| o.action).unwrap_or_default(),
            drop_duplicates: self.drop_duplicates,
        };
        if let Some(how) = self.missing.filter(|&m| m != MissingValues::Drop) {
            // Imputation statistics from the training rows as outlier handling leaves them.
            let mut scratch = fitted.empty_report(width, &[]);
            let kept: Vec<Vec<f32>> = (0..train.len())
                .filter_map(|i| {
                    let mut row = train.sample(i).to_vec();
                    fitted
                        .handle_outliers(&mut row, Stage::Train, &mut scratch)
                        .then_some(row)
                })
                .collect();
            fitted.fill = (0..width)
                .map(|c| {
                    let values: Vec<f32> = kept.iter().map(|r| r[c]).filter(|v| !v.is_nan()).collect();
                    let how = if categorical[c] {
                        MissingValues::MostFrequent
                    } else {
                        how
                    };
                    fill_value(values, how).ok_or_else(|| {
                        Error::too_few(
                            format!(
                                "values in feature column {} of the training data to impute from",
                                c + 1
                            ),
                            0,
                            1,
                        )
                    })
                })
                .collect::<Result<_>>()?;
        }
        Ok(fitted)
    }
}

impl FittedCleaning {
    fn empty_report(&self, width: usize, names: &[String]) -> CleaningReport {
        CleaningReport {
            columns: (0..width)
                .map(|c| ColumnReport {
                    name: names
                        .get(c)
                        .cloned()
                        .unwrap_or_else(|| format!("column {}", c + 1)),
                    fill: self.fill.get(c).copied(),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }
    }

    /// Cleans raw features (NaN = missing) at `stage`; `names` label the report's columns.
    pub fn apply(&self, data: &Dataset, stage: Stage, names: &[String]) -> Result<(Dataset, CleaningReport)> {
        let width = data.sample_size();
        let mut report = CleaningReport {
            rows_in: data.len(),
            ..self.empty_report(width, names)
        };
        let mut keep = Vec::with_capacity(data.len());
        let mut features = Vec::with_capacity(data.features.len());
        let mut seen = std::collections::HashSet::new();
        for i in 0..data.len() {
            let mut row = data.sample(i).to_vec();
            if !self.clean_row(&mut row, i, stage, &mut report)? {
                continue;
            }
            if self.drop_duplicates && stage == Stage::Train {
                let key: Vec<u32> = row.iter().map(|v| v.to_bits()).chain([data.labels[i]]).collect();
                if !seen.insert(key) {
                    report.dropped_duplicates += 1;
                    continue;
                }
            }
            keep.push(data.labels[i]);
            features.extend_from_slice(&row);
        }
        report.rows_out = keep.len();
        Ok((Dataset::new(features, data.sample_shape.clone(), keep)?, report))
    }

    /// Cleans one row in place; false when the row is dropped.
    fn clean_row(
        &self,
        row: &mut [f32],
        index: usize,
        stage: Stage,
        report: &mut CleaningReport,
    ) -> Result<bool> {
        if !self.handle_outliers(row, stage, report) {
            report.dropped_for_outliers += 1;
            return Ok(false);
        }
        self.handle_missing(row, index, stage, report)
    }

    /// Clips a row's outliers in place; false when they drop it.
    fn handle_outliers(&self, row: &mut [f32], stage: Stage, report: &mut CleaningReport) -> bool {
        let mut is_outlier = false;
        for (c, v) in row.iter_mut().enumerate() {
            let Some([low, high]) = self.bounds.get(c).copied().flatten() else {
                continue;
            };
            if v.is_nan() || (low..=high).contains(v) {
                continue;
            }
            report.columns[c].outliers += 1;
            match (self.outlier_action, stage) {
                (OutlierAction::Clip, _) => {
                    *v = v.clamp(low, high);
                    report.columns[c].clipped += 1;
                }
                (OutlierAction::Drop, Stage::Train) => is_outlier = true,
                (OutlierAction::Drop, _) => {}
            }
        }
        !is_outlier
    }

    /// Fills a row's gaps in place; false when they drop it.
    fn handle_missing(
        &self,
        row: &mut [f32],
        index: usize,
        stage: Stage,
        report: &mut CleaningReport,
    ) -> Result<bool> {
        let gaps: Vec<usize> = (0..row.len()).filter(|&c| row[c].is_nan()).collect();
        for &c in &gaps {
            report.columns[c].missing += 1;
        }
        if gaps.is_empty() {
            return Ok(true);
        }
        match (self.missing, stage) {
            (Some(MissingValues::Drop), Stage::Predict) | (None, Stage::Predict) => {
                Err(Error::MissingValue {
                    row: index + 1,
                    column: report.columns[gaps[0]].name.clone(),
                    hint: match self.missing {
                        Some(_) => "the model was trained dropping such rows, so it cannot fill the gap",
                        None => {
                            "the model was trained without missing values and has nothing to fill it with"
                        }
                    }
                    .into(),
                })
            }
            (Some(MissingValues::Drop), _) => {
                report.dropped_for_missing += 1;
                Ok(false)
            }
            (None, _) => Err(Error::MissingValue {
                row: index + 1,
                column: report.columns[gaps[0]].name.clone(),
                hint: "set preprocessing.missing to handle gaps".into(),
            }),
            (Some(_), _) => {
                for c in gaps {
                    row[c] = self.fill[c];
                    report.columns[c].imputed += 1;
                }
                Ok(true)
            }
        }
    }
}

/// `data` without its rows (features and label) that `reference` holds too, and how many
/// went: with `drop_duplicates`, a held-out row that repeats a training row would let the
/// model be judged on what it was trained on.
pub fn drop_rows_seen_in(reference: &Dataset, data: &Dataset) -> (Dataset, usize) {
    let key = |d: &Dataset, i: usize| -> Vec<u32> {
        d.sample(i)
            .iter()
            .map(|v| v.to_bits())
            .chain([d.labels[i]])
            .collect()
    };
    let seen: std::collections::HashSet<Vec<u32>> = (0..reference.len()).map(|i| key(reference, i)).collect();
    let kept: Vec<usize> = (0..data.len())
        .filter(|&i| !seen.contains(&key(data, i)))
        .collect();
    let dropped = data.len() - kept.len();
    (data.subset(&kept), dropped)
}

/// The [low, high] range of ordinary values; None for a column without values.
/// None also for a column of at most two distinct values (an indicator: its rare value
/// is not an outlier) or with no spread (zero IQR or std), where every other value would be.
fn outlier_bounds(values: &[f32], outliers: Outliers) -> Option<[f32; 2]> {
    let mut distinct: Vec<u32> = values.iter().map(|v| v.to_bits()).collect();
    distinct.sort_unstable();
    distinct.dedup();
    if distinct.len() <= 2 {
        return None;
    }
    match outliers.method {
        OutlierMethod::ZScore => {
            let k = f64::from(outliers.threshold.unwrap_or(3.0));
            let n = values.len() as f64;
            let mean = values.iter().map(|&v| f64::from(v)).sum::<f64>() / n;
            let var = values.iter().map(|&v| (f64::from(v) - mean).powi(2)).sum::<f64>() / n;
            let reach = k * var.sqrt();
            (var > 0.0).then_some([(mean - reach) as f32, (mean + reach) as f32])
        }
        OutlierMethod::Iqr => {
            let k = f64::from(outliers.threshold.unwrap_or(1.5));
            let mut sorted: Vec<f64> = values.iter().map(|&v| f64::from(v)).collect();
            sorted.sort_by(f64::total_cmp);
            let (q1, q3) = (quantile(&sorted, 0.25), quantile(&sorted, 0.75));
            let reach = k * (q3 - q1);
            (q3 > q1).then_some([(q1 - reach) as f32, (q3 + reach) as f32])
        }
    }
}

/// The q-quantile of sorted values, interpolating linearly (NumPy's default).
fn quantile(sorted: &[f64], q: f64) -> f64 {
    let at = q * (sorted.len() - 1) as f64;
    let (lo, frac) = (at.floor() as usize, at.fract());
    let hi = (lo + 1).min(sorted.len() - 1);
    sorted[lo] + frac * (sorted[hi] - sorted[lo])
}

/// The value that fills a gap; None when there are no values.
fn fill_value(mut values: Vec<f32>, how: MissingValues) -> Option<f32> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(f32::total_cmp);
    Some(match how {
        MissingValues::Mean => {
            (values.iter().map(|&v| f64::from(v)).sum::<f64>() / values.len() as f64) as f32
        }
        MissingValues::Median => {
            let sorted: Vec<f64> = values.iter().map(|&v| f64::from(v)).collect();
            quantile(&sorted, 0.5) as f32
        }
        // The longest run in sorted order; on a tie the smallest value, as pandas' mode()[0].
        MissingValues::MostFrequent | MissingValues::Drop => {
            let mut best = (values[0], 0);
            let mut run = (values[0], 0);
            for &v in &values {
                run = if v == run.0 { (v, run.1 + 1) } else { (v, 1) };
                if run.1 > best.1 {
                    best = run;
                }
            }
            best.0
        }
    })
}

impl CleaningReport {
    /// Whether cleaning changed nothing (no row dropped, no value filled or clipped).
    pub fn changed_nothing(&self) -> bool {
        self.rows_in == self.rows_out && self.columns.iter().all(|c| c.imputed == 0 && c.clipped == 0)
    }
}

impl std::fmt::Display for CleaningReport {
    /// A few lines: rows kept and dropped, then one line per column that something happened to.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} of {} rows kept", self.rows_out, self.rows_in)?;
        let dropped = [
            (self.dropped_for_missing, "with missing values"),
            (self.dropped_for_outliers, "with outliers"),
            (self.dropped_duplicates, "duplicates"),
        ];
        for (n, why) in dropped.iter().filter(|(n, _)| *n > 0) {
            write!(f, "; {n} dropped {why}")?;
        }
        for c in &self.columns {
            let mut parts = Vec::new();
            if c.missing > 0 {
                parts.push(format!("{} missing", c.missing));
            }
            if c.imputed > 0 {
                parts.push(format!(
                    "{} imputed with {}",
                    c.imputed,
                    c.fill.unwrap_or(f32::NAN)
                ));
            }
            if c.outliers > 0 {
                parts.push(format!("{} outliers", c.outliers));
            }
            if c.clipped > 0 {
                parts.push(format!("{} clipped", c.clipped));
            }
            if !parts.is_empty() {
                write!(f, "\n  {}: {}", c.name, parts.join(", "))?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const N: f32 = f32::NAN;

    fn data(rows: &[[f32; 2]]) -> Dataset {
        let features = rows.iter().flatten().copied().collect();
        Dataset::new(features, vec![2], (0..rows.len() as u32).map(|i| i % 2).collect()).unwrap()
    }

    fn names() -> Vec<String> {
        vec!["a".into(), "b".into()]
    }

    #[test]
    fn imputes_mean_median_and_most_frequent_from_training_values() {
        let train = data(&[[1.0, 5.0], [2.0, N], [6.0, 5.0], [N, 7.0]]);
        let fit = |m| {
            Cleaning {
                missing: Some(m),
                ..Default::default()
            }
            .fit(&train, &[false, false], None)
            .unwrap()
        };
        assert_eq!(fit(MissingValues::Mean).fill, vec![3.0, 17.0 / 3.0]);
        assert_eq!(fit(MissingValues::Median).fill, vec![2.0, 5.0]);
        assert_eq!(fit(MissingValues::MostFrequent).fill, vec![1.0, 5.0]);
        let (clean, report) = fit(MissingValues::Median)
            .apply(&train, Stage::Train, &names())
            .unwrap();
        assert_eq!(clean.features, vec![1.0, 5.0, 2.0, 5.0, 6.0, 5.0, 2.0, 7.0]);
        assert_eq!(
            (
                report.rows_out,
                report.columns[0].imputed,
                report.columns[1].imputed
            ),
            (4, 1, 1)
        );
        assert_eq!(report.columns[1].fill, Some(5.0));
    }

    #[test]
    fn categorical_columns_fill_with_the_commonest_category() {
        let train = data(&[[1.0, 2.0], [1.0, 0.0], [3.0, 2.0], [N, N]]);
        let cleaning = Cleaning {
            missing: Some(MissingValues::Mean),
            ..Default::default()
        };
        let fitted = cleaning.fit(&train, &[false, true], None).unwrap();
        assert_eq!(fitted.fill, vec![5.0 / 3.0, 2.0]);
    }

    #[test]
    fn drops_rows_with_gaps_in_training_and_evaluation_but_not_at_prediction() {
        let train = data(&[[1.0, 5.0], [N, 1.0], [3.0, 4.0]]);
        let cleaning = Cleaning {
            missing: Some(MissingValues::Drop),
            ..Default::default()
        };
        let fitted = cleaning.fit(&train, &[false, false], None).unwrap();
        let (clean, report) = fitted.apply(&train, Stage::Train, &names()).unwrap();
        assert_eq!(
            (clean.labels.clone(), report.dropped_for_missing),
            (vec![0, 0], 1)
        );
        assert_eq!(report.columns[0].missing, 1);
        assert_eq!(
            fitted
                .apply(&train, Stage::Evaluate, &names())
                .unwrap()
                .1
                .rows_out,
            2
        );
        let e = fitted.apply(&train, Stage::Predict, &names()).unwrap_err();
        assert!(
            matches!(&e, Error::MissingValue { row: 2, column, .. } if column == "a"),
            "{e}"
        );
    }

    #[test]
    fn missing_values_without_a_strategy_are_an_error_naming_the_first() {
        let train = data(&[[1.0, N]]);
        let e = Cleaning::default()
            .fit(&train, &[false, false], Some("t.csv line 2, column \"b\""))
            .unwrap_err();
        assert!(matches!(e, Error::MissingValue { row: 1, .. }), "{e}");
        assert!(
            e.to_string().contains(
                "1 missing value(s) (first: t.csv line 2, column \"b\"); set preprocessing.missing"
            ),
            "{e}"
        );
    }

    #[test]
    fn iqr_outliers_are_clipped_everywhere_or_dropped_from_training() {
        // Column a: 1..=8 and 100; Q1 = 3, Q3 = 7, IQR 4 → bounds [-3, 13].
        let mut rows: Vec<[f32; 2]> = (1..=8).map(|v| [v as f32, 0.0]).collect();
        rows.push([100.0, 0.0]);
        let train = data(&rows);
        let clip = Outliers {
            method: OutlierMethod::Iqr,
            threshold: None,
            action: OutlierAction::Clip,
        };
        let fitted = Cleaning {
            outliers: Some(clip),
            ..Default::default()
        }
        .fit(&train, &[false, false], None)
        .unwrap();
        assert_eq!(fitted.bounds, vec![Some([-3.0, 13.0]), None]);
        let (clean, report) = fitted.apply(&train, Stage::Train, &names()).unwrap();
        assert_eq!(clean.sample(8), &[13.0, 0.0]);
        assert_eq!((report.columns[0].clipped, report.rows_out), (1, 9));
        let test = data(&[[-50.0, 0.0]]);
        assert_eq!(
            fitted.apply(&test, Stage::Predict, &names()).unwrap().0.features,
            vec![-3.0, 0.0]
        );

        let drop = Outliers {
            action: OutlierAction::Drop,
            ..clip
        };
        let fitted = Cleaning {
            outliers: Some(drop),
            ..Default::default()
        }
        .fit(&train, &[false, false], None)
        .unwrap();
        let (clean, report) = fitted.apply(&train, Stage::Train, &names()).unwrap();
        assert_eq!(
            (
                clean.len(),
                report.dropped_for_outliers,
                report.columns[0].outliers
            ),
            (8, 1, 1)
        );
        // Held-out rows are judged, not dropped.
        assert_eq!(fitted.apply(&test, Stage::Evaluate, &names()).unwrap().0.len(), 1);
    }

    #[test]
    fn z_score_bounds_use_the_population_std() {
        let train = data(&[
            [2.0, 0.0],
            [4.0, 0.0],
            [4.0, 0.0],
            [4.0, 0.0],
            [5.0, 0.0],
            [5.0, 0.0],
            [7.0, 0.0],
            [9.0, 0.0],
        ]);
        let z = Outliers {
            method: OutlierMethod::ZScore,
            threshold: Some(1.0),
            action: OutlierAction::Clip,
        };
        let fitted = Cleaning {
            outliers: Some(z),
            ..Default::default()
        }
        .fit(&train, &[false, false], None)
        .unwrap();
        assert_eq!(fitted.bounds[0], Some([3.0, 7.0])); // mean 5, std 2
    }

    #[test]
    fn imputation_comes_after_outliers_and_duplicates_last() {
        let train = data(&[
            [1.0, 1.0],
            [1.0, 1.0],
            [2.0, 1.0],
            [N, 1.0],
            [1.0, 1.0],
            [9.0, 1.0],
            [9.0, 1.0],
        ]);
        let drop = Outliers {
            method: OutlierMethod::Iqr,
            threshold: Some(0.0),
            action: OutlierAction::Drop,
        };
        let cleaning = Cleaning {
            missing: Some(MissingValues::Mean),
            outliers: Some(drop),
            drop_duplicates: true,
        };
        let fitted = cleaning.fit(&train, &[false, false], None).unwrap();
        // Q1 = 1, Q3 = 7.25: the 9s are outliers, so the mean of what remains is 1.25.
        assert_eq!(fitted.fill[0], 1.25);
        let (clean, report) = fitted.apply(&train, Stage::Train, &names()).unwrap();
        // Labels alternate 0,1,0,1,…: row 4 ([1, 1], label 0) repeats row 0.
        assert_eq!(
            (
                report.dropped_for_outliers,
                report.dropped_duplicates,
                clean.len()
            ),
            (2, 1, 4)
        );
        let text = report.to_string();
        assert!(
            text.starts_with("4 of 7 rows kept; 2 dropped with outliers; 1 dropped duplicates"),
            "{text}"
        );
        assert!(
            text.contains("\n  a: 1 missing, 1 imputed with 1.25, 2 outliers"),
            "{text}"
        );
    }

    #[test]
    fn held_out_rows_repeating_training_rows_are_dropped() {
        let train = data(&[[1.0, N], [2.0, 3.0]]);
        let test = data(&[[1.0, N], [2.0, 3.0], [2.0, 4.0]]);
        // Labels alternate: test row 1 is [2, 3] with label 1, but training's has label 1 too.
        let (kept, dropped) = drop_rows_seen_in(&train, &test);
        assert_eq!((kept.len(), dropped), (1, 2));
        assert_eq!(kept.sample(0), &[2.0, 4.0]);
    }

    #[test]
    fn indicator_and_constant_columns_have_no_outliers() {
        // 90% zeros: Q1 = Q3 = 0 would make every 1 an outlier.
        let mut rows: Vec<[f32; 2]> = (0..18).map(|_| [0.0, 5.0]).collect();
        rows.extend([[1.0, 5.0], [1.0, 5.0]]);
        let train = data(&rows);
        for method in [OutlierMethod::Iqr, OutlierMethod::ZScore] {
            let o = Outliers {
                method,
                threshold: None,
                action: OutlierAction::Clip,
            };
            let fitted = Cleaning {
                outliers: Some(o),
                ..Default::default()
            }
            .fit(&train, &[false, false], None)
            .unwrap();
            assert_eq!(fitted.bounds, vec![None, None], "{method:?}");
        }
    }
}
