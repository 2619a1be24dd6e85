//! Feature normalization: a choice made in the spec ([`Normalization`]), fitted on the
//! training split only ([`FittedNormalization`]) so that no test statistics leak into
//! training, then saved with the model and applied unchanged at prediction time.

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

use super::Dataset;

/// Above this many values, normalization runs in parallel; below, threads cost more than they save.
const PARALLEL_THRESHOLD: usize = 64 * 1024;
/// Values per parallel task (rounded to whole samples).
const CHUNK_VALUES: usize = 16 * 1024;

/// How to scale features, as written in a spec, e.g. `{"kind": "scale", "max": 255}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", from = "NormalizationRepr")]
pub enum Normalization {
    /// Features as loaded.
    None,
    /// Divide every value by `max` (e.g. 255 for grey levels, 16 for the digits).
    Scale { max: f32 },
    /// Per feature, subtract the training mean and divide by the training standard deviation.
    ZScore,
    /// Per feature, map the training minimum to 0 and maximum to 1 (scikit-learn's
    /// `MinMaxScaler`); a constant feature maps to 0.
    MinMax,
}

/// A normalization with its parameters, as saved with a model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", from = "FittedRepr")]
pub enum FittedNormalization {
    None,
    Scale {
        max: f32,
    },
    ZScore {
        mean: Vec<f32>,
        std: Vec<f32>,
    },
    /// `(value - min) / range`, range 1 for a constant feature.
    MinMax {
        min: Vec<f32>,
        range: Vec<f32>,
    },
}

// serde's `deny_unknown_fields` does not apply to the unit variants of an internally tagged
// enum: `{"kind": "z_score", "man": 0}` would load silently. These mirrors, whose variants
// are all structs, are what deserialization goes through, so any misspelled field is an error.

#[derive(Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
enum NormalizationRepr {
    None {},
    Scale { max: f32 },
    ZScore {},
    MinMax {},
}

impl From<NormalizationRepr> for Normalization {
    fn from(repr: NormalizationRepr) -> Self {
        match repr {
            NormalizationRepr::None {} => Normalization::None,
            NormalizationRepr::Scale { max } => Normalization::Scale { max },
            NormalizationRepr::ZScore {} => Normalization::ZScore,
            NormalizationRepr::MinMax {} => Normalization::MinMax,
        }
    }
}

#[derive(Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
enum FittedRepr {
    None {},
    Scale { max: f32 },
    ZScore { mean: Vec<f32>, std: Vec<f32> },
    MinMax { min: Vec<f32>, range: Vec<f32> },
}

impl From<FittedRepr> for FittedNormalization {
    fn from(repr: FittedRepr) -> Self {
        match repr {
            FittedRepr::None {} => FittedNormalization::None,
            FittedRepr::Scale { max } => FittedNormalization::Scale { max },
            FittedRepr::ZScore { mean, std } => FittedNormalization::ZScore { mean, std },
            FittedRepr::MinMax { min, range } => FittedNormalization::MinMax { min, range },
        }
    }
}

impl Normalization {
    /// Computes the parameters from the training split.
    pub fn fit(&self, train: &Dataset) -> Result<FittedNormalization> {
        match *self {
            Normalization::None => Ok(FittedNormalization::None),
            Normalization::Scale { max } => {
                check_max(max)?;
                Ok(FittedNormalization::Scale { max })
            }
            Normalization::ZScore => fit_z_score(train),
            Normalization::MinMax => fit_min_max(train),
        }
    }
}

impl FittedNormalization {
    /// Checks statistics read from a model file: a positive, finite scale; finite shifts;
    /// positive, finite divisors; one of each per feature of `sample_size`. The error names
    /// the field (`kiln.preprocessing.std[3]`) and its value.
    pub fn validate(&self, sample_size: usize) -> Result<()> {
        let (shift, divisor, names) = match self {
            FittedNormalization::None => return Ok(()),
            FittedNormalization::Scale { max } => {
                return match *max > 0.0 && max.is_finite() {
                    true => Ok(()),
                    false => Err(Error::setting(
                        "kiln.preprocessing.max",
                        max,
                        "a positive, finite number",
                    )),
                }
            }
            FittedNormalization::ZScore { mean, std } => (mean, std, ["mean", "std"]),
            FittedNormalization::MinMax { min, range } => (min, range, ["min", "range"]),
        };
        for (values, name) in [shift, divisor].into_iter().zip(names) {
            if values.len() != sample_size {
                return Err(Error::mismatch(
                    format!("kiln.preprocessing.{name}"),
                    format!("one value per input feature ({sample_size})"),
                    values.len(),
                ));
            }
        }
        if let Some((i, v)) = shift.iter().enumerate().find(|(_, v)| !v.is_finite()) {
            return Err(Error::setting(
                format!("kiln.preprocessing.{}[{i}]", names[0]),
                v,
                "a finite number",
            ));
        }
        if let Some((i, v)) = divisor
            .iter()
            .enumerate()
            .find(|(_, v)| !(v.is_finite() && **v > 0.0))
        {
            return Err(Error::setting(
                format!("kiln.preprocessing.{}[{i}]", names[1]),
                v,
                "a positive, finite number",
            ));
        }
        Ok(())
    }

    /// Normalizes `features` (samples of `sample_size` values, back to back) in place.
    pub fn apply(&self, features: &mut [f32], sample_size: usize) -> Result<()> {
        if sample_size == 0 || !features.len().is_multiple_of(sample_size) {
            return Err(Error::shape(
                "normalization",
                format!("a whole number of samples of {sample_size} values"),
                format!("{} feature values", features.len()),
            ));
        }
        match self {
            FittedNormalization::None => {}
            FittedNormalization::Scale { max } => {
                check_max(*max)?;
                let max = *max;
                for_each_sample(features, sample_size, |s| s.iter_mut().for_each(|v| *v /= max));
            }
            FittedNormalization::ZScore { mean, std } => {
                shift_and_divide(features, sample_size, mean, std, "z-score")?
            }
            FittedNormalization::MinMax { min, range } => {
                shift_and_divide(features, sample_size, min, range, "min-max")?
            }
        }
        Ok(())
    }
}

/// `(v - shift) / divisor` per feature, the parameters checked against the sample size.
fn shift_and_divide(
    features: &mut [f32],
    sample_size: usize,
    shift: &[f32],
    divisor: &[f32],
    what: &str,
) -> Result<()> {
    if shift.len() != sample_size || divisor.len() != sample_size {
        return Err(Error::shape(
            format!("{what} normalization"),
            format!(
                "samples of the {} features ({}) it was fitted on",
                shift.len(),
                divisor.len()
            ),
            format!("samples of {sample_size}"),
        ));
    }
    for_each_sample(features, sample_size, |s| {
        for ((v, m), d) in s.iter_mut().zip(shift).zip(divisor) {
            *v = (*v - m) / d;
        }
    });
    Ok(())
}

/// Minimum and range per feature over the training split.
fn fit_min_max(train: &Dataset) -> Result<FittedNormalization> {
    if train.is_empty() {
        return Err(Error::too_few(
            "training samples to fit a min-max normalization on",
            0,
            1,
        ));
    }
    let d = train.sample_size();
    let mut min = vec![f32::INFINITY; d];
    let mut max = vec![f32::NEG_INFINITY; d];
    for sample in train.features.chunks_exact(d) {
        for ((lo, hi), &v) in min.iter_mut().zip(&mut max).zip(sample) {
            *lo = lo.min(v);
            *hi = hi.max(v);
        }
    }
    let range = min
        .iter()
        .zip(&max)
        .map(|(lo, hi)| match hi - lo {
            r if r > 0.0 && r.is_finite() => r,
            _ => 1.0,
        })
        .collect();
    Ok(FittedNormalization::MinMax { min, range })
}

fn check_max(max: f32) -> Result<()> {
    if max > 0.0 && max.is_finite() {
        Ok(())
    } else {
        Err(Error::setting(
            "preprocessing.normalization.max",
            max,
            "a positive, finite number",
        ))
    }
}

/// Mean and population standard deviation per feature, in f64 so that 60,000 samples do
/// not lose precision. Two passes rather than sum-of-squares, which cancels badly.
fn fit_z_score(train: &Dataset) -> Result<FittedNormalization> {
    if train.is_empty() {
        return Err(Error::too_few(
            "training samples to fit a z-score normalization on",
            0,
            1,
        ));
    }
    let (d, n) = (train.sample_size(), train.len() as f64);
    let mut sum = vec![0.0f64; d];
    for sample in train.features.chunks_exact(d) {
        sum.iter_mut().zip(sample).for_each(|(s, &v)| *s += f64::from(v));
    }
    let mean: Vec<f64> = sum.iter().map(|s| s / n).collect();
    let mut sq = vec![0.0f64; d];
    for sample in train.features.chunks_exact(d) {
        for ((q, &v), m) in sq.iter_mut().zip(sample).zip(&mean) {
            let dev = f64::from(v) - m;
            *q += dev * dev;
        }
    }
    let std = sq.iter().map(|q| std_or_one((q / n).sqrt())).collect();
    Ok(FittedNormalization::ZScore {
        mean: mean.iter().map(|&m| m as f32).collect(),
        std,
    })
}

/// A constant feature (std 0: the f64 mean of identical f32 values is exact, so its
/// deviations are exactly 0) gets std 1, mapping it to 0 instead of NaN. So does a std too
/// small to survive conversion to f32.
fn std_or_one(std: f64) -> f32 {
    let s = std as f32;
    if s > 0.0 && s.is_normal() {
        s
    } else {
        1.0
    }
}

/// Runs `f` on every sample, in parallel over chunks of whole samples for large inputs.
fn for_each_sample(features: &mut [f32], sample_size: usize, f: impl Fn(&mut [f32]) + Sync) {
    let chunk = (CHUNK_VALUES / sample_size).max(1) * sample_size;
    let per_chunk = |c: &mut [f32]| c.chunks_exact_mut(sample_size).for_each(&f);
    if features.len() > PARALLEL_THRESHOLD {
        features.par_chunks_mut(chunk).for_each(per_chunk);
    } else {
        features.chunks_mut(chunk).for_each(per_chunk);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn three_by_two() -> Dataset {
        // Feature 0: 1, 2, 6 (mean 3, population var (4+1+9)/3 = 14/3); feature 1: constant 5.
        Dataset::new(vec![1.0, 5.0, 2.0, 5.0, 6.0, 5.0], vec![2], vec![0, 1, 0]).unwrap()
    }

    #[test]
    fn min_max_maps_the_training_range_to_unit_interval() {
        let fitted = Normalization::MinMax.fit(&three_by_two()).unwrap();
        assert_eq!(
            fitted,
            FittedNormalization::MinMax {
                min: vec![1.0, 5.0],
                range: vec![5.0, 1.0]
            }
        );
        let mut x = vec![1.0, 5.0, 6.0, 5.0, 11.0, 7.0];
        fitted.apply(&mut x, 2).unwrap();
        assert_eq!(x, vec![0.0, 0.0, 1.0, 0.0, 2.0, 2.0]);
        let spec: Normalization = serde_json::from_str(r#"{"kind": "min_max"}"#).unwrap();
        assert_eq!(spec, Normalization::MinMax);
        assert!(fitted.apply(&mut [0.0; 3], 3).is_err());
    }

    #[test]
    fn z_score_matches_hand_computed_values() {
        let ds = three_by_two();
        let fitted = Normalization::ZScore.fit(&ds).unwrap();
        let sd = (14.0f64 / 3.0).sqrt() as f32;
        assert_eq!(
            fitted,
            FittedNormalization::ZScore {
                mean: vec![3.0, 5.0],
                std: vec![sd, 1.0]
            }
        );
        let mut x = ds.features.clone();
        fitted.apply(&mut x, 2).unwrap();
        let expected = [-2.0 / sd, 0.0, -1.0 / sd, 0.0, 3.0 / sd, 0.0];
        for (got, want) in x.iter().zip(expected) {
            assert!((got - want).abs() < 1e-6, "{x:?}");
        }
        assert!((expected[0] - -0.9258201).abs() < 1e-6); // -2 / sqrt(14/3)
    }

    #[test]
    fn a_constant_feature_maps_to_zero_not_nan() {
        let ds = Dataset::new(vec![0.1; 6], vec![2], vec![0, 0, 0]).unwrap();
        let fitted = Normalization::ZScore.fit(&ds).unwrap();
        let mut x = ds.features.clone();
        fitted.apply(&mut x, 2).unwrap();
        assert_eq!(x, vec![0.0; 6]);
    }

    #[test]
    fn scale_divides_by_max_and_rejects_bad_max() {
        let fitted = Normalization::Scale { max: 255.0 }.fit(&three_by_two()).unwrap();
        let mut x = vec![0.0, 51.0, 255.0, 127.5];
        fitted.apply(&mut x, 2).unwrap();
        assert_eq!(x, vec![0.0, 0.2, 1.0, 0.5]);
        for bad in [0.0, -1.0, f32::INFINITY, f32::NAN] {
            assert!(Normalization::Scale { max: bad }.fit(&three_by_two()).is_err());
        }
        let mut y = vec![1.0, 2.0];
        FittedNormalization::None.apply(&mut y, 2).unwrap();
        assert_eq!(y, vec![1.0, 2.0]);
    }

    #[test]
    fn mismatched_sizes_are_errors() {
        let fitted = Normalization::ZScore.fit(&three_by_two()).unwrap();
        assert!(matches!(
            fitted.apply(&mut [0.0; 6], 3),
            Err(Error::ShapeMismatch { .. })
        ));
        assert!(matches!(
            fitted.apply(&mut [0.0; 5], 2),
            Err(Error::ShapeMismatch { .. })
        ));
        assert!(Normalization::ZScore.fit(&three_by_two().subset(&[])).is_err());
    }

    #[test]
    fn parallel_and_serial_paths_agree() {
        let n = 2000;
        let d = 64; // 128K values: above the parallel threshold
        let features: Vec<f32> = (0..n * d).map(|i| ((i * 7919) % 1000) as f32).collect();
        let ds = Dataset::new(features, vec![d], vec![0; n]).unwrap();
        let fitted = Normalization::ZScore.fit(&ds).unwrap();
        let mut all = ds.features.clone();
        fitted.apply(&mut all, d).unwrap();
        let mut one = ds.sample(n - 1).to_vec();
        fitted.apply(&mut one, d).unwrap();
        assert_eq!(&all[(n - 1) * d..], &one[..]);
    }

    #[test]
    fn serde_uses_a_kind_tag_and_rejects_unknown_fields() {
        let z: Normalization = serde_json::from_str(r#"{"kind":"z_score"}"#).unwrap();
        assert_eq!(z, Normalization::ZScore);
        let s: Normalization = serde_json::from_str(r#"{"kind":"scale","max":255}"#).unwrap();
        assert_eq!(s, Normalization::Scale { max: 255.0 });
        assert!(serde_json::from_str::<Normalization>(r#"{"kind":"scale","maxx":255}"#).is_err());
        assert!(serde_json::from_str::<Normalization>(r#"{"kind":"zscore"}"#).is_err());
        // Unknown fields are rejected on field-less kinds too (see NormalizationRepr).
        let none: Normalization = serde_json::from_str(r#"{"kind":"none"}"#).unwrap();
        assert_eq!(none, Normalization::None);
        for bad in [r#"{"kind":"z_score","mean":0}"#, r#"{"kind":"none","max":1}"#] {
            let err = serde_json::from_str::<Normalization>(bad)
                .unwrap_err()
                .to_string();
            assert!(err.contains("unknown field"), "{bad}: {err}");
        }
        let bad_fitted = serde_json::from_str::<FittedNormalization>(r#"{"kind":"none","std":[1]}"#);
        assert!(bad_fitted.is_err());
        assert_eq!(
            serde_json::to_string(&Normalization::ZScore).unwrap(),
            r#"{"kind":"z_score"}"#
        );
        let fitted = FittedNormalization::ZScore {
            mean: vec![1.0],
            std: vec![2.0],
        };
        let json = serde_json::to_string(&fitted).unwrap();
        assert_eq!(json, r#"{"kind":"z_score","mean":[1.0],"std":[2.0]}"#);
        assert_eq!(
            serde_json::from_str::<FittedNormalization>(&json).unwrap(),
            fitted
        );
    }
}
