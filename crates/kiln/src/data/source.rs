//! The `data` section of a spec: which data set to train on, and how to split it. Samples
//! with labels (MNIST, the digits, CSV) for layer stacks; text (a file, or tiny
//! Shakespeare) for language models.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

use super::digits::check_test_fraction;
use super::table::ColumnRef;
use super::tabular::{load_table, ColumnChoice, ColumnKind, TableSplits};
use super::text_source::{default_validation_fraction, Corpus, TextData, TokenizerSpec};
use super::{load_digits, load_mnist, Splits};

fn default_test_fraction() -> f32 {
    0.2
}

/// Where the training data comes from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "source", rename_all = "snake_case", deny_unknown_fields)]
pub enum DataSpec {
    /// MNIST from `data_dir`, or the default places (see [`load_mnist`]).
    Mnist {
        #[serde(default)]
        data_dir: Option<PathBuf>,
    },
    /// The embedded UCI digits, with `test_fraction` of each class held out.
    Digits {
        #[serde(default = "default_test_fraction")]
        test_fraction: f32,
    },
    /// Labelled CSV files; without a `test` file, `test_fraction` of each class of `train`
    /// is held out. Relative paths are resolved by the caller (against the spec's folder).
    Csv {
        train: PathBuf,
        #[serde(default)]
        test: Option<PathBuf>,
        /// A header name or a 0-based position; default: the last column. Labels may be
        /// integers (class indices) or names (classes sorted by name).
        #[serde(default)]
        label_column: Option<ColumnRef>,
        /// Names or positions of the feature columns; default: all but the label.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        feature_columns: Option<Vec<ColumnRef>>,
        /// Columns to one-hot encode although they hold numbers (codes); a column with any
        /// text value is categorical anyway.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        categorical_columns: Vec<ColumnRef>,
        /// Default: detected.
        #[serde(default)]
        header: Option<bool>,
        #[serde(default = "default_test_fraction")]
        test_fraction: f32,
    },
    /// A UTF-8 text file, for a language model; relative to the spec's folder.
    Text {
        path: PathBuf,
        #[serde(default = "default_validation_fraction")]
        validation_fraction: f32,
        #[serde(default)]
        tokenizer: TokenizerSpec,
    },
    /// The tiny Shakespeare corpus, for a language model.
    TinyShakespeare {
        #[serde(default = "default_validation_fraction")]
        validation_fraction: f32,
        #[serde(default)]
        tokenizer: TokenizerSpec,
    },
}

impl DataSpec {
    /// The source's name as a spec writes it: "mnist", "digits", "csv".
    pub fn source_name(&self) -> &'static str {
        match self {
            DataSpec::Mnist { .. } => "mnist",
            DataSpec::Digits { .. } => "digits",
            DataSpec::Csv { .. } => "csv",
            DataSpec::Text { .. } => "text",
            DataSpec::TinyShakespeare { .. } => "tiny_shakespeare",
        }
    }

    /// A text source's corpus, split and tokenizer; None for samples with labels.
    pub fn text(&self) -> Option<TextData<'_>> {
        match self {
            DataSpec::Text {
                path,
                validation_fraction,
                tokenizer,
            } => Some(TextData {
                corpus: Corpus::File(path),
                validation_fraction: *validation_fraction,
                tokenizer,
            }),
            DataSpec::TinyShakespeare {
                validation_fraction,
                tokenizer,
            } => Some(TextData {
                corpus: Corpus::TinyShakespeare,
                validation_fraction: *validation_fraction,
                tokenizer,
            }),
            _ => None,
        }
    }

    /// Loads the data and splits it. `seed` drives the stratified split; `data_dir_override`
    /// (e.g. a command-line `--data-dir`) replaces the spec's MNIST `data_dir` and is not
    /// used by the other sources.
    pub fn load(&self, seed: u64, data_dir_override: Option<&Path>) -> Result<Splits> {
        match self {
            DataSpec::Mnist { data_dir } => load_mnist(data_dir_override.or(data_dir.as_deref())),
            DataSpec::Digits { test_fraction } => load_digits(*test_fraction, seed),
            DataSpec::Csv {
                train,
                test,
                label_column,
                feature_columns,
                categorical_columns,
                header,
                test_fraction,
            } => {
                check_test_fraction(*test_fraction)?;
                let choice = ColumnChoice {
                    label: label_column.clone(),
                    features: feature_columns.clone(),
                    categorical: categorical_columns.clone(),
                    header: *header,
                };
                load_csv_splits(train, test.as_deref(), &choice, *test_fraction, seed)
            }
            DataSpec::Text { .. } | DataSpec::TinyShakespeare { .. } => Err(Error::unsupported(
                format!(
                    "loading samples with labels from data.source = {:?}",
                    self.source_name()
                ),
                "it is a text corpus, which a language model reads; set [model] type = \"gpt\"",
            )),
        }
    }
}

fn load_csv_splits(
    train_path: &Path,
    test_path: Option<&Path>,
    choice: &ColumnChoice,
    test_fraction: f32,
    seed: u64,
) -> Result<Splits> {
    let TableSplits {
        train,
        test,
        schema,
        sha256,
        first_missing,
    } = load_table(train_path, test_path, choice, test_fraction, seed)?;
    // File names only: the description is stored in model files, which must not carry
    // the folders of the machine that trained them.
    let name = |p: &Path| {
        p.file_name()
            .map_or_else(|| p.display().to_string(), |n| n.to_string_lossy().into_owned())
    };
    let how = match test_path {
        Some(path) => format!("test file {}", name(path)),
        None => format!("stratified split of {test_fraction} with seed {seed}"),
    };
    let categorical = schema
        .columns
        .iter()
        .filter(|c| matches!(c.kind, ColumnKind::Categorical { .. }))
        .count();
    let description = format!(
        "CSV {}: {} training and {} test rows of {} feature columns ({categorical} categorical), label {:?}, {how}",
        name(train_path),
        train.len(),
        test.len(),
        train.sample_size(),
        schema.label,
    );
    Ok(Splits {
        train,
        test,
        sha256,
        description,
        schema: Some(schema),
        first_missing,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::sha256_hex;
    use crate::data::test_support::TempDir;
    use serde_json::json;

    fn spec(value: serde_json::Value) -> std::result::Result<DataSpec, serde_json::Error> {
        serde_json::from_value(value)
    }

    #[test]
    fn parses_each_source_with_defaults() {
        assert_eq!(
            spec(json!({"source": "mnist"})).unwrap(),
            DataSpec::Mnist { data_dir: None }
        );
        assert_eq!(
            spec(json!({"source": "digits"})).unwrap(),
            DataSpec::Digits { test_fraction: 0.2 }
        );
        let csv = spec(json!({"source": "csv", "train": "a.csv", "label_column": 0})).unwrap();
        let expected = DataSpec::Csv {
            train: "a.csv".into(),
            test: None,
            label_column: Some(ColumnRef::Index(0)),
            feature_columns: None,
            categorical_columns: Vec::new(),
            header: None,
            test_fraction: 0.2,
        };
        assert_eq!(csv, expected);
        let round_trip: DataSpec = serde_json::from_str(&serde_json::to_string(&csv).unwrap()).unwrap();
        assert_eq!(round_trip, csv);
    }

    #[test]
    fn misspelled_fields_and_unknown_sources_are_rejected() {
        for bad in [
            json!({"source": "mnist", "data_dirr": "/x"}),
            json!({"source": "digits", "test_fractoin": 0.3}),
            json!({"source": "csv", "train": "a.csv", "lable_column": 1}),
            json!({"source": "cifar"}),
            json!({"source": "csv"}),
        ] {
            let err = spec(bad.clone()).expect_err(&bad.to_string());
            eprintln!("{bad}: {err}");
        }
        let err = spec(json!({"source": "digits", "test_fractoin": 0.3}))
            .unwrap_err()
            .to_string();
        assert!(err.contains("test_fractoin"), "{err}");
    }

    #[test]
    fn loads_digits_and_checks_the_test_fraction() {
        let splits = DataSpec::Digits { test_fraction: 0.5 }.load(3, None).unwrap();
        assert!((splits.test.len() as i64 - 898).abs() <= 5);
        assert!(DataSpec::Digits { test_fraction: 1.0 }.load(3, None).is_err());
        // 0: every sample trains (cross-validation folds them all).
        let all = DataSpec::Digits { test_fraction: 0.0 }.load(3, None).unwrap();
        assert_eq!((all.train.len(), all.test.len()), (1797, 0));
    }

    #[test]
    fn the_override_replaces_the_spec_mnist_folder() {
        let given = TempDir::new("source-mnist");
        let spec = DataSpec::Mnist {
            data_dir: Some("/nonexistent/kiln".into()),
        };
        let text = spec.load(0, Some(given.path())).unwrap_err().to_string();
        assert!(text.contains(&given.path().display().to_string()), "{text}");
    }

    #[test]
    fn loads_csv_with_a_test_file_or_a_split() {
        let dir = TempDir::new("source-csv");
        let rows: String = (0..20).map(|i| format!("{i},{}\n", i % 2)).collect();
        std::fs::write(dir.path().join("train.csv"), format!("x,y\n{rows}")).unwrap();
        std::fs::write(dir.path().join("test.csv"), "5,1\n6,0\n").unwrap();
        std::fs::write(dir.path().join("wide.csv"), "5,5,1\n").unwrap();
        let csv = |test: Option<&str>| DataSpec::Csv {
            train: dir.path().join("train.csv"),
            test: test.map(|t| dir.path().join(t)),
            label_column: None,
            feature_columns: None,
            categorical_columns: Vec::new(),
            header: None,
            test_fraction: 0.2,
        };
        let split = csv(None).load(1, None).unwrap();
        assert_eq!((split.train.len(), split.test.len()), (16, 4));
        assert_eq!(split.sha256, sha256_hex(format!("x,y\n{rows}").as_bytes()));
        let with_test = csv(Some("test.csv")).load(1, None).unwrap();
        assert_eq!(
            (with_test.train.len(), with_test.test.labels.clone()),
            (20, vec![1, 0])
        );
        let text = csv(Some("wide.csv")).load(1, None).unwrap_err().to_string();
        assert!(
            text.contains("wide.csv: has 3 columns, the training file has 2"),
            "{text}"
        );
    }
}
