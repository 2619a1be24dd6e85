//! Data loading: data sets (MNIST, the embedded UCI digits, numeric CSV), the split of a
//! data set into train and test, normalization fitted on the training split, and the
//! per-epoch order and batch gathering the training loop uses.
//!
//! Loaders return raw values (MNIST grey levels 0–255, digits 0–16); scaling is a separate,
//! explicit step ([`Normalization`]) so that the fitted parameters can be saved with a model
//! and applied identically at prediction time.

mod augment;
mod batches;
mod checksum;
mod clean;
mod csv;
mod digits;
#[cfg(feature = "download")]
pub(crate) mod fetch;
mod gzip;
mod idx;
mod mnist;
mod normalize;
mod prepare;
mod sampling;
mod source;
mod table;
mod tabular;
#[cfg(test)]
pub(crate) mod test_support;
mod text_source;

pub use augment::{Augmentation, Factor, FillMode, FlipMode, Interpolation, Transform};
pub use batches::{epoch_order, gather_batch, prefetch_batch};
pub use checksum::sha256_hex;
pub use clean::{
    drop_rows_seen_in, Cleaning, CleaningReport, ColumnReport, FittedCleaning, MissingValues, OutlierAction,
    OutlierMethod, Outliers, Stage,
};
pub use csv::{parse_csv, read_csv, read_feature_rows, CsvOptions};
pub use digits::load_digits;
pub use idx::{parse_idx, read_idx, IdxArray};
pub use mnist::load_mnist;
pub use normalize::{FittedNormalization, Normalization};
pub use prepare::TablePreprocessing;
pub use sampling::{bootstrap_indices, stratified_folds};
pub use source::DataSpec;
pub use table::{ColumnRef, RawTable};
pub use tabular::{load_table, ColumnChoice, ColumnKind, FeatureColumn, TableSchema, TableSplits};
pub use text_source::{
    add_implied_text_source, BpeSpec, BpeTag, Corpus, TextData, TokenizerName, TokenizerSpec,
};

use std::collections::BTreeMap;

use crate::error::{Error, Result};
use crate::rng::Rng;

/// Stream label for the stratified split's shuffle, far from the small labels other
/// modules are likely to use, so the split does not share numbers with weight init.
const STRATIFY_STREAM: u64 = 0x6b69_6c6e_5354_5241; // "kilnSTRA"

/// Samples with a shape each, and one class label each.
#[derive(Debug, Clone, PartialEq)]
pub struct Dataset {
    /// All samples back to back, row-major: `len() * sample_size()` values.
    pub features: Vec<f32>,
    pub sample_shape: Vec<usize>,
    pub labels: Vec<u32>,
}

/// A data set split into training and test parts, with where it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct Splits {
    pub train: Dataset,
    pub test: Dataset,
    /// Hex SHA-256 of the source bytes (raw, uncompressed), for lineage.
    pub sha256: String,
    /// One human-readable line: which data set, from where, how many samples.
    pub description: String,
    /// For tabular data: the columns' types and categories. Its features are then raw, one
    /// value per column (NaN for a missing cell), to be cleaned and one-hot encoded.
    pub schema: Option<TableSchema>,
    /// Where the training split's first missing cell is, if it has one.
    pub first_missing: Option<String>,
}

impl Splits {
    /// These splits' provenance and schema with empty data sets, to build other splits
    /// of the same data (folds, bootstrap samples) without copying the samples twice.
    pub fn clone_without_data(&self) -> Splits {
        let empty = |d: &Dataset| Dataset {
            features: Vec::new(),
            sample_shape: d.sample_shape.clone(),
            labels: Vec::new(),
        };
        Splits {
            train: empty(&self.train),
            test: empty(&self.test),
            sha256: self.sha256.clone(),
            description: self.description.clone(),
            schema: self.schema.clone(),
            first_missing: self.first_missing.clone(),
        }
    }
}

impl Dataset {
    /// A data set whose feature count matches its labels and sample shape.
    pub fn new(features: Vec<f32>, sample_shape: Vec<usize>, labels: Vec<u32>) -> Result<Self> {
        let size: usize = sample_shape.iter().product();
        if features.len() != labels.len() * size {
            return Err(Error::shape(
                "data set features",
                format!(
                    "{} values for {} samples of shape {sample_shape:?}",
                    labels.len() * size,
                    labels.len()
                ),
                features.len(),
            ));
        }
        Ok(Dataset {
            features,
            sample_shape,
            labels,
        })
    }

    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Values per sample: the product of `sample_shape`.
    pub fn sample_size(&self) -> usize {
        self.sample_shape.iter().product()
    }

    /// The features of sample `i`. Panics if `i >= len()`.
    pub fn sample(&self, i: usize) -> &[f32] {
        let size = self.sample_size();
        &self.features[i * size..(i + 1) * size]
    }

    /// Largest label + 1 (0 for an empty set): the classes a model must be able to output.
    pub fn num_classes(&self) -> usize {
        self.labels.iter().max().map_or(0, |&m| m as usize + 1)
    }

    /// The samples at `indices`, in that order. Panics on an index out of range.
    pub fn subset(&self, indices: &[usize]) -> Dataset {
        let size = self.sample_size();
        let mut features = Vec::with_capacity(indices.len() * size);
        for &i in indices {
            features.extend_from_slice(self.sample(i));
        }
        Dataset {
            features,
            sample_shape: self.sample_shape.clone(),
            labels: indices.iter().map(|&i| self.labels[i]).collect(),
        }
    }

    /// Splits off the last `fraction` of the samples, in their current order, as Keras's
    /// `validation_split` does: `split_at = floor(n * (1 - fraction))`. Returns (head, tail).
    pub fn split_tail(&self, fraction: f32) -> Result<(Dataset, Dataset)> {
        self.clone().into_split_tail(fraction)
    }

    /// [`Dataset::split_tail`] without copying the head: the tail is moved out and the
    /// head keeps this data set's storage (MNIST's training features are 188 MB).
    pub fn into_split_tail(mut self, fraction: f32) -> Result<(Dataset, Dataset)> {
        let split_at = self.tail_split_point(fraction)?;
        let size = self.sample_size();
        let tail = Dataset {
            features: self.features.split_off(split_at * size),
            sample_shape: self.sample_shape.clone(),
            labels: self.labels.split_off(split_at),
        };
        Ok((self, tail))
    }

    fn tail_split_point(&self, fraction: f32) -> Result<usize> {
        if !(0.0..1.0).contains(&fraction) {
            return Err(Error::setting(
                "validation_split",
                fraction,
                "a fraction in [0, 1)",
            ));
        }
        Ok(((self.len() as f64) * (1.0 - decimal_f64(fraction))).floor() as usize)
    }

    /// Holds out `round(fraction * count)` samples of every class, chosen by a seeded
    /// shuffle, so that train and test have the same class balance. Returns (rest, held_out),
    /// each in the original sample order; the same seed gives the same split.
    /// `fraction` is clamped to [0, 1]; callers validate user input.
    pub fn stratified_split(&self, fraction: f32, seed: u64) -> (Dataset, Dataset) {
        let (rest, held_out) = stratified_indices(&self.labels, fraction, seed);
        (self.subset(&rest), self.subset(&held_out))
    }
}

/// [`Dataset::stratified_split`] on labels alone: the indices (rest, held_out), each sorted.
pub fn stratified_indices(labels: &[u32], fraction: f32, seed: u64) -> (Vec<usize>, Vec<usize>) {
    let fraction = decimal_f64(fraction.clamp(0.0, 1.0));
    // A map, not a Vec indexed by label: a CSV may use labels like 1000000 for few classes.
    let mut by_class: BTreeMap<u32, Vec<usize>> = BTreeMap::new();
    for (i, &label) in labels.iter().enumerate() {
        by_class.entry(label).or_default().push(i);
    }
    let mut rng = Rng::derive(seed, STRATIFY_STREAM);
    let (mut rest, mut held_out) = (Vec::new(), Vec::new());
    for mut members in by_class.into_values() {
        rng.shuffle(&mut members);
        let n_out = (fraction * members.len() as f64).round() as usize;
        let keep = members.len() - n_out;
        rest.extend_from_slice(&members[..keep]);
        held_out.extend_from_slice(&members[keep..]);
    }
    rest.sort_unstable();
    held_out.sort_unstable();
    (rest, held_out)
}

/// The f64 nearest the decimal the user wrote for an f32 fraction. A plain `as f64` turns
/// 0.2f32 into 0.200000003, so 10 * (1 - f) would floor to 7 instead of Keras's 8.
fn decimal_f64(x: f32) -> f64 {
    x.to_string().parse().unwrap_or(x as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn numbered(n: usize) -> Dataset {
        Dataset::new(
            (0..n * 2).map(|v| v as f32).collect(),
            vec![2],
            (0..n as u32).map(|i| i % 3).collect(),
        )
        .unwrap()
    }

    #[test]
    fn accessors_report_shape_samples_and_classes() {
        let ds = numbered(5);
        assert_eq!((ds.len(), ds.sample_size(), ds.num_classes()), (5, 2, 3));
        assert_eq!(ds.sample(3), &[6.0, 7.0]);
        assert!(!ds.is_empty());
        let empty = ds.subset(&[]);
        assert!(empty.is_empty());
        assert_eq!(empty.num_classes(), 0);
        assert!(Dataset::new(vec![0.0; 5], vec![2], vec![0, 1]).is_err());
    }

    #[test]
    fn subset_gathers_samples_in_the_given_order() {
        let s = numbered(5).subset(&[4, 0]);
        assert_eq!(s.features, vec![8.0, 9.0, 0.0, 1.0]);
        assert_eq!(s.labels, vec![1, 0]);
    }

    #[test]
    fn split_tail_holds_out_the_last_fraction_like_keras() {
        let ds = numbered(10);
        let (head, tail) = ds.split_tail(0.2).unwrap();
        assert_eq!((head.len(), tail.len()), (8, 2));
        assert_eq!(tail.features, vec![16.0, 17.0, 18.0, 19.0]);
        assert_eq!(head.sample(7), &[14.0, 15.0]);
        // Same arithmetic as Python's floor(10 * (1 - 0.3)) == 7 and floor(10 * (1 - 0.7)) == 3.
        assert_eq!(ds.split_tail(0.3).unwrap().0.len(), 7);
        assert_eq!(ds.split_tail(0.7).unwrap().0.len(), 3);
        assert_eq!(ds.split_tail(0.0).unwrap().1.len(), 0);
        assert!(ds.split_tail(1.0).is_err());
        assert!(ds.split_tail(-0.1).is_err());
        assert!(ds.split_tail(f32::NAN).is_err());
    }

    #[test]
    fn stratified_split_holds_out_each_class_in_proportion() {
        // 30 samples of class 0 and 10 of class 1: 25% held out = 8 (7.5 rounds up) and 3 (2.5 → 3).
        let labels: Vec<u32> = (0..40).map(|i| u32::from(i >= 30)).collect();
        let ds = Dataset::new((0..40).map(|v| v as f32).collect(), vec![1], labels).unwrap();
        let (rest, out) = ds.stratified_split(0.25, 9);
        assert_eq!(out.labels.iter().filter(|&&l| l == 0).count(), 8);
        assert_eq!(out.labels.iter().filter(|&&l| l == 1).count(), 3);
        assert_eq!(rest.len() + out.len(), 40);
        // Disjoint and covering: every sample value appears exactly once.
        let mut all: Vec<f32> = rest.features.iter().chain(&out.features).copied().collect();
        all.sort_by(f32::total_cmp);
        assert_eq!(all, (0..40).map(|v| v as f32).collect::<Vec<_>>());
        // Deterministic, seed-dependent, original order kept.
        assert_eq!(ds.stratified_split(0.25, 9), (rest.clone(), out.clone()));
        assert_ne!(ds.stratified_split(0.25, 10).1, out);
        assert!(out.features.windows(2).all(|w| w[0] < w[1]));
    }
}
