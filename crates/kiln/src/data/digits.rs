//! The UCI handwritten digits, embedded so that kiln can train and test with no download:
//! 1,797 images of 8x8 pixels with values 0–16, labels 0–9.
//!
//! Source: E. Alpaydin, C. Kaynak, "Optical Recognition of Handwritten Digits", UCI Machine
//! Learning Repository, 1998 (<https://doi.org/10.24432/C50P49>), licensed CC BY 4.0.
//! The embedded file is its test set as scikit-learn ships it (`load_digits`): 64 pixel
//! values then the label per row, no header.

use std::path::Path;

use crate::error::{Error, Result};

use super::checksum::sha256_hex;
use super::csv::parse_csv;
use super::gzip::gunzip_if_needed;
use super::{CsvOptions, Splits};

static DIGITS_CSV_GZ: &[u8] = include_bytes!("digits.csv.gz");
const NAME: &str = "<embedded digits.csv.gz>";
const SIDE: usize = 8;

/// The digits data set with raw pixel values 0–16, sample shape [8, 8], split into train
/// and test by a stratified, seeded split holding out `test_fraction` of each class.
pub fn load_digits(test_fraction: f32, seed: u64) -> Result<Splits> {
    check_test_fraction(test_fraction)?;
    let path = Path::new(NAME);
    let csv = gunzip_if_needed(DIGITS_CSV_GZ.to_vec(), path)?;
    let sha256 = sha256_hex(&csv);
    let text = String::from_utf8(csv).map_err(|e| Error::data(path, format!("not UTF-8 text: {e}")))?;
    let options = CsvOptions {
        label_column: None,
        header: Some(false),
    };
    let mut all = parse_csv(&text, path, &options)?;
    if all.sample_size() != SIDE * SIDE {
        return Err(Error::data(
            path,
            format!("expected 64 pixels per row, found {}", all.sample_size()),
        ));
    }
    all.sample_shape = vec![SIDE, SIDE]; // keep the image shape for convolutional models
    let (train, test) = all.stratified_split(test_fraction, seed);
    let description = format!(
        "UCI digits (embedded; Alpaydin & Kaynak 1998, CC BY 4.0): {} training and {} test \
         images, 8x8 values 0-16, stratified split with seed {seed}",
        train.len(),
        test.len()
    );
    Ok(Splits {
        train,
        test,
        sha256,
        description,
        schema: None,
        first_missing: None,
    })
}

/// A test fraction must leave training samples; 0 holds none out, for the jobs that need
/// no test split (`kiln cv` folds every row), and training refuses the empty test split.
pub(crate) fn check_test_fraction(fraction: f32) -> Result<()> {
    if (0.0..1.0).contains(&fraction) {
        Ok(())
    } else {
        Err(Error::setting(
            "test_fraction",
            fraction,
            "a fraction from 0 (no test split, for `kiln cv`) up to but not including 1",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::test_support::shared_data;

    #[test]
    fn has_1797_images_of_ten_classes_and_a_stratified_test_set() {
        let splits = load_digits(0.2, 42).unwrap();
        assert_eq!(splits.train.len() + splits.test.len(), 1797);
        // round(0.2 * count) per class: 36+36+35+37+36+36+36+36+35+36 = 359.
        assert_eq!(splits.test.len(), 359);
        assert_eq!(splits.train.sample_shape, vec![8, 8]);
        assert_eq!((splits.train.num_classes(), splits.test.num_classes()), (10, 10));
        let mut per_class = [0usize; 10];
        for &l in &splits.test.labels {
            per_class[l as usize] += 1;
        }
        assert!(per_class.iter().all(|&c| (35..=37).contains(&c)), "{per_class:?}");
        let max = splits.train.features.iter().fold(0.0f32, |m, &v| m.max(v));
        assert_eq!(max, 16.0);
        // The file's first row (a 0) is first in whichever part holds it, unscaled.
        let first_row = [0.0, 0.0, 5.0, 13.0, 9.0, 1.0, 0.0, 0.0];
        let part = if splits.train.sample(0)[..8] == first_row {
            &splits.train
        } else {
            &splits.test
        };
        assert_eq!((&part.sample(0)[..8], part.labels[0]), (&first_row[..], 0));
    }

    #[test]
    fn the_same_seed_gives_the_same_split_and_another_seed_another() {
        let a = load_digits(0.2, 7).unwrap();
        assert_eq!(a, load_digits(0.2, 7).unwrap());
        let b = load_digits(0.2, 8).unwrap();
        assert_ne!(a.test.features, b.test.features);
        assert_eq!(a.sha256, b.sha256);
    }

    #[test]
    fn a_test_fraction_outside_zero_one_is_rejected() {
        for bad in [1.0, -0.5, 1.5, f32::NAN] {
            assert!(
                matches!(load_digits(bad, 0), Err(Error::InvalidSetting { field, .. }) if field == "test_fraction"),
                "{bad}"
            );
        }
    }

    #[test]
    #[ignore = "needs the shared data in $KILN_DATA (../shared/data); .ci/run runs it"]
    fn the_embedded_copy_is_the_shared_one() {
        let data = shared_data();
        let shared = std::fs::read(data.join("digits/digits.csv.gz")).unwrap();
        let raw = gunzip_if_needed(shared, Path::new("shared")).unwrap();
        assert_eq!(load_digits(0.2, 0).unwrap().sha256, sha256_hex(&raw));
    }
}
