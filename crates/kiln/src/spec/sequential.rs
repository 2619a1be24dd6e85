//! The spec of a layer-stack (Sequential) model (TOML): data, preprocessing, model and
//! training settings.
//! Every section denies unknown fields, so a typo is an error, never silently ignored.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::data::{Augmentation, Cleaning, DataSpec, MissingValues, Normalization, Outliers};
use crate::error::{Error, Result};
pub use crate::nn::ModelSpec;
use crate::nn::{Loss, LossKind};
use crate::optim::{GradientClipping, OptimizerSpec, Schedule};
use crate::train::CallbackSpec;

use super::one_line_toml_error;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainSpec {
    /// A name for the model (shown by `inspect`); default: the spec's file stem.
    #[serde(default)]
    pub name: Option<String>,
    pub data: DataSpec,
    #[serde(default)]
    pub preprocessing: Preprocessing,
    pub model: ModelSpec,
    pub training: TrainingSpec,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Preprocessing {
    #[serde(default = "no_normalization")]
    pub normalization: Normalization,
    /// Tabular data: what to do with missing cells (none: a missing cell is an error).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub missing: Option<MissingValues>,
    /// Tabular data: outliers by z-score or IQR, clipped or dropped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outliers: Option<Outliers>,
    /// Tabular data: drop training rows that repeat an earlier one exactly.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub drop_duplicates: bool,
    /// Images: random transforms applied to each training batch (never to validation,
    /// test or prediction data).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub augmentation: Option<Augmentation>,
}

impl Default for Preprocessing {
    fn default() -> Self {
        Preprocessing {
            normalization: Normalization::None,
            missing: None,
            outliers: None,
            drop_duplicates: false,
            augmentation: None,
        }
    }
}

impl Preprocessing {
    pub fn cleaning(&self) -> Cleaning {
        Cleaning {
            missing: self.missing,
            outliers: self.outliers,
            drop_duplicates: self.drop_duplicates,
        }
    }
}

fn no_normalization() -> Normalization {
    Normalization::None
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainingSpec {
    #[serde(default)]
    pub optimizer: OptimizerSpec,
    /// Replaces the optimizer's constant learning rate, stepped once per update.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub learning_rate_schedule: Option<Schedule>,
    /// One of `{ clipnorm = c }`, `{ global_clipnorm = c }`, `{ clipvalue = c }`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gradient_clipping: Option<GradientClipping>,
    pub loss: LossKind,
    /// Model outputs are logits, not probabilities (Keras `from_logits`).
    #[serde(default)]
    pub from_logits: bool,
    pub epochs: usize,
    #[serde(default = "default_batch_size")]
    pub batch_size: usize,
    /// Keras semantics: the last fraction of the training data, before shuffling.
    #[serde(default)]
    pub validation_split: f32,
    #[serde(default = "yes")]
    pub shuffle: bool,
    /// Drives weight init, shuffling, dropout and stratified splits.
    #[serde(default)]
    pub seed: u64,
    /// Built-in callbacks, run in order after each epoch (`[[training.callbacks]]`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub callbacks: Vec<CallbackSpec>,
}

fn default_batch_size() -> usize {
    32
}

fn yes() -> bool {
    true
}

impl TrainingSpec {
    pub fn loss(&self) -> Loss {
        Loss {
            kind: self.loss,
            from_logits: self.from_logits,
        }
    }
}

impl TrainSpec {
    /// Reads and validates a spec; relative CSV paths are taken from the spec's folder.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let mut spec = Self::parse(&text, path)?;
        if let Some(dir) = path.parent() {
            spec.data.resolve_paths(dir);
        }
        if spec.name.is_none() {
            spec.name = path.file_stem().map(|s| s.to_string_lossy().into_owned());
        }
        Ok(spec)
    }

    /// The spec as TOML text that [`TrainSpec::parse`] reads back to the same spec.
    pub fn to_toml(&self) -> Result<String> {
        super::Spec::Sequential(self.clone()).to_toml()
    }

    /// Parses TOML text; `path` only names the source in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Self> {
        let spec: TrainSpec = toml::from_str(text).map_err(|e| Error::Spec {
            path: path.to_path_buf(),
            message: one_line_toml_error(&e, text),
        })?;
        spec.check(path)?;
        Ok(spec)
    }

    /// The checks serde cannot express (epochs ≥ 1, fractions in range, …), each error
    /// naming its field; `path` names the spec in them.
    pub fn check(&self, path: &Path) -> Result<()> {
        let t = &self.training;
        let fail = |message: String| {
            Err(Error::Spec {
                path: path.to_path_buf(),
                message,
            })
        };
        if self.data.text().is_some() {
            return fail(format!(
                "data.source = {:?} is text, which a language model reads; set [model] type = \"gpt\" \
                 (a layer stack reads samples with labels: mnist, digits or csv)",
                self.data.source_name()
            ));
        }
        if t.epochs == 0 {
            return fail("training.epochs must be at least 1".into());
        }
        if t.batch_size == 0 {
            return fail("training.batch_size must be at least 1".into());
        }
        if !(0.0..1.0).contains(&t.validation_split) {
            return fail(format!(
                "training.validation_split = {} must be in [0, 1)",
                t.validation_split
            ));
        }
        // Each setting's own check, re-reported as a spec error under its field name.
        let checks = std::iter::once(("training.".to_string(), t.optimizer.validate()))
            .chain(
                t.learning_rate_schedule
                    .iter()
                    .map(|s| ("training.".to_string(), s.validate())),
            )
            .chain(
                t.gradient_clipping
                    .map(|c| ("training.".to_string(), c.validate())),
            )
            .chain(
                t.callbacks
                    .iter()
                    .enumerate()
                    .map(|(i, c)| (format!("training.callbacks[{i}]: "), c.validate())),
            );
        for (field, check) in checks {
            if let Err(e) = check {
                return fail(format!("{field}{}", e));
            }
        }
        let counts_steps =
            |c: &CallbackSpec| matches!(c, CallbackSpec::ModelCheckpoint(m) if m.filepath.contains("{step"));
        if let Some(i) = t.callbacks.iter().position(counts_steps) {
            return fail(format!(
                "training.callbacks[{i}]: `{{step}}` is for language models, which train in steps; use `{{epoch}}`"
            ));
        }
        if self.model.layers.is_empty() {
            return fail("model.layers is empty: a model needs at least one layer".into());
        }
        Ok(())
    }

    /// The offline default: an MLP on the embedded UCI digits (no files, no network).
    pub fn default_digits() -> Self {
        let text = include_str!("default_spec.toml");
        let mut spec =
            Self::parse(text, Path::new("<built-in digits spec>")).expect("the built-in spec is valid");
        spec.name = Some("digits-mlp".into());
        spec
    }
}

/// Makes a serialized spec read as written: f32 settings widened to f64 (0.1 became
/// 0.10000000149011612) get their shortest decimal back, and unset options (null) go.
pub fn tidy_json(value: &mut serde_json::Value) {
    use serde_json::Value;
    match value {
        Value::Number(n) if n.is_f64() => {
            let wide = n.as_f64().unwrap_or_default();
            let narrow = wide as f32;
            if f64::from(narrow) == wide {
                if let Some(short) = narrow
                    .to_string()
                    .parse::<f64>()
                    .ok()
                    .and_then(serde_json::Number::from_f64)
                {
                    *n = short;
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(tidy_json),
        Value::Object(map) => {
            map.retain(|_, v| !v.is_null());
            map.values_mut().for_each(tidy_json);
        }
        _ => {}
    }
}

impl DataSpec {
    /// Makes data paths absolute (against the current folder), for a spec written elsewhere.
    pub fn make_paths_absolute(&mut self) -> Result<()> {
        let here = std::env::current_dir().map_err(|e| Error::io(".", e))?;
        self.resolve_paths(&here);
        Ok(())
    }

    /// Makes relative data paths (CSV files, a text file) relative to `dir` (the spec's
    /// folder).
    pub fn resolve_paths(&mut self, dir: &Path) {
        let resolve = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = dir.join(&*p);
            }
        };
        match self {
            DataSpec::Csv { train, test, .. } => {
                resolve(train);
                if let Some(t) = test {
                    resolve(t);
                }
            }
            DataSpec::Text { path, .. } => resolve(path),
            _ => {}
        }
    }

    /// This source as a model file records it: file names without their folders (the
    /// lineage keeps each file's SHA-256), and no MNIST folder, so that a model file says
    /// nothing of the machine it was trained on. Reloading looks for the files in
    /// `--data-dir` or the current folder.
    pub fn without_folders(&self) -> DataSpec {
        let name_only = |p: &PathBuf| p.file_name().map_or_else(|| p.clone(), PathBuf::from);
        let mut portable = self.clone();
        match &mut portable {
            DataSpec::Mnist { data_dir } => *data_dir = None,
            DataSpec::Csv { train, test, .. } => {
                *train = name_only(train);
                *test = test.as_ref().map(name_only);
            }
            DataSpec::Text { path, .. } => *path = name_only(path),
            DataSpec::Digits { .. } | DataSpec::TinyShakespeare { .. } => {}
        }
        portable
    }

    /// A recorded source's files found again: relative names in `data_dir` when given,
    /// else in the current folder. A name found in neither is an error saying where to
    /// point kiln.
    pub fn located(&self, data_dir: Option<&Path>) -> Result<DataSpec> {
        let mut found = self.clone();
        let locate = |p: &mut PathBuf| -> Result<()> {
            if p.is_absolute() {
                return Ok(());
            }
            let candidate = data_dir.map_or_else(|| p.clone(), |d| d.join(&*p));
            if !candidate.exists() {
                let folder =
                    data_dir.map_or_else(|| "the current folder".into(), |d| d.display().to_string());
                return Err(Error::DataUnavailable(format!(
                    "the model's data file {} is not in {folder}: pass --data-dir with the folder that holds it",
                    p.display()
                )));
            }
            *p = candidate;
            Ok(())
        };
        match &mut found {
            DataSpec::Csv { train, test, .. } => {
                locate(train)?;
                if let Some(t) = test {
                    locate(t)?;
                }
            }
            DataSpec::Text { path, .. } => locate(path)?,
            _ => {}
        }
        Ok(found)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MLP: &str = r#"
        [data]
        source = "mnist"
        [preprocessing]
        normalization = { kind = "scale", max = 255.0 }
        [model]
        layers = [
          { type = "flatten" },
          { type = "dense", units = 512, activation = "relu" },
          { type = "dropout", rate = 0.2 },
          { type = "dense", units = 10, activation = "softmax" },
        ]
        [training]
        optimizer = { type = "adam" }
        loss = "sparse_categorical_crossentropy"
        epochs = 10
        batch_size = 64
        validation_split = 0.2
        seed = 42
    "#;

    #[test]
    fn to_toml_reads_back_to_the_same_spec_with_decimals_as_written() {
        let spec = TrainSpec::default_digits();
        let text = spec.to_toml().unwrap();
        assert!(
            text.contains("rate = 0.1\n") && text.contains("learning_rate = 0.002\n"),
            "{text}"
        );
        assert_eq!(TrainSpec::parse(&text, Path::new("t.toml")).unwrap(), spec);
    }

    #[test]
    fn the_reference_spec_parses() {
        let spec = TrainSpec::parse(MLP, Path::new("mlp.toml")).unwrap();
        assert_eq!(spec.model.layers.len(), 4);
        assert_eq!(spec.training.batch_size, 64);
        assert_eq!(
            spec.preprocessing.normalization,
            Normalization::Scale { max: 255.0 }
        );
    }

    #[test]
    fn typos_and_unknown_types_are_one_line_errors_with_a_position() {
        let bad = MLP.replace("batch_size = 64", "batch_sise = 64");
        let err = TrainSpec::parse(&bad, Path::new("mlp.toml"))
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("spec mlp.toml: line 17, column 9: unknown field `batch_sise`"),
            "{err}"
        );
        assert!(!err.contains('\n'));
        let bad = MLP.replace("type = \"flatten\"", "type = \"flaten\"");
        let err = TrainSpec::parse(&bad, Path::new("mlp.toml"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown variant `flaten`"), "{err}");
        let bad = MLP.replace("{ type = \"flatten\" }", "{ type = \"flatten\", size = 3 }");
        let err = TrainSpec::parse(&bad, Path::new("mlp.toml"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown field `size`"), "{err}");
        let bad = MLP.replace("epochs = 10", "epochs = 0");
        let err = TrainSpec::parse(&bad, Path::new("mlp.toml"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("training.epochs must be at least 1"), "{err}");
        for (setting, expected) in [
            (
                "learning_rate = -1.0",
                "training.optimizer.learning_rate = -1: expected a positive number",
            ),
            (
                "beta_1 = 1.0",
                "training.optimizer.beta_1 = 1: expected a rate in [0, 1)",
            ),
        ] {
            let bad = MLP.replace(
                "{ type = \"adam\" }",
                &format!("{{ type = \"adam\", {setting} }}"),
            );
            let err = TrainSpec::parse(&bad, Path::new("mlp.toml"))
                .unwrap_err()
                .to_string();
            assert!(err.contains(expected), "{err}");
        }
        let text = MLP.replace("source = \"mnist\"", "source = \"text\"\npath = \"a.txt\"");
        let err = TrainSpec::parse(&text, Path::new("mlp.toml"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("data.source = \"text\" is text, which a language model reads"),
            "{err}"
        );
    }

    #[test]
    fn the_built_in_default_is_valid() {
        let spec = TrainSpec::default_digits();
        assert!(matches!(spec.data, DataSpec::Digits { .. }));
    }
}
