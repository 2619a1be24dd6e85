//! The spec of a language model (TOML): where the text comes from and how it is tokenized,
//! the transformer's sizes, and the training run in optimizer steps rather than epochs
//! (validation, callbacks and a checkpoint every `eval_interval` steps). A spec is one when
//! its `[model]` says `type = "gpt"`; see `examples/shakespeare-char-gpt.toml`.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::one_line_toml_error;
use crate::data::{add_implied_text_source, DataSpec};
use crate::error::{Error, Result};
use crate::lm::GptConfig;
use crate::optim::{GradientClipping, OptimizerSpec, Schedule};
use crate::train::CallbackSpec;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LmSpec {
    #[serde(default)]
    pub name: Option<String>,
    /// A text source: `source = "text"` with `path`, or `source = "tiny_shakespeare"`.
    pub data: DataSpec,
    pub model: LmModelSpec,
    pub training: LmTrainingSpec,
}

/// The architecture, tagged by `type` so other kinds of language model can join it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum LmModelSpec {
    Gpt(GptConfig),
}

impl LmModelSpec {
    pub fn gpt(&self) -> &GptConfig {
        let LmModelSpec::Gpt(config) = self;
        config
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LmTrainingSpec {
    /// Optimizer updates, each on one batch of random windows.
    pub steps: usize,
    /// Start from this language model's weights and tokenizer (fine-tuning: an imported
    /// GPT-2, say) instead of fresh ones; `[model]` must describe the same network, with
    /// a context no longer than its own (later positions are dropped) and any dropout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub init: Option<std::path::PathBuf>,
    /// Windows per batch; each is `context` tokens long.
    pub batch_size: usize,
    #[serde(default)]
    pub optimizer: OptimizerSpec,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub learning_rate_schedule: Option<Schedule>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gradient_clipping: Option<GradientClipping>,
    /// Drives initialization, batch positions and dropout.
    #[serde(default)]
    pub seed: u64,
    /// Validation loss every this many steps (and after the last).
    #[serde(default = "default_eval_interval")]
    pub eval_interval: usize,
    /// Validation loss is the mean over this many batches of random validation windows
    /// (the same windows each time, so successive figures compare).
    #[serde(default = "default_eval_batches")]
    pub eval_batches: usize,
    /// Keras callbacks, run at every evaluation (EarlyStopping's patience counts
    /// evaluations); they monitor `val_loss`, `loss`, `val_accuracy` or `accuracy`
    /// (next-token accuracy).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub callbacks: Vec<CallbackSpec>,
}

fn default_eval_interval() -> usize {
    500
}

fn default_eval_batches() -> usize {
    200
}

impl LmSpec {
    /// Reads and checks a spec; a relative `path` is taken from the spec's folder.
    pub fn from_file(path: &Path) -> Result<LmSpec> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let mut spec = LmSpec::parse(&text, path)?;
        if let Some(dir) = path.parent() {
            spec.data.resolve_paths(dir);
            if let Some(init) = spec.training.init.as_mut() {
                // Absolute, as `--init` makes it: a resumed run may start elsewhere.
                let joined = dir.join(&*init);
                *init = std::path::absolute(&joined).unwrap_or(joined);
            }
        }
        if spec.name.is_none() {
            spec.name = path.file_stem().map(|s| s.to_string_lossy().into_owned());
        }
        Ok(spec)
    }

    pub fn parse(text: &str, path: &Path) -> Result<LmSpec> {
        let spec_error = |message: String| Error::Spec {
            path: path.to_path_buf(),
            message,
        };
        let table: toml::Table =
            toml::from_str(text).map_err(|e| spec_error(one_line_toml_error(&e, text)))?;
        let implied_source = table
            .get("data")
            .and_then(toml::Value::as_table)
            .is_some_and(|d| d.contains_key("path") && !d.contains_key("source"));
        // A text `path` without `source` (as specs gave it before text joined `[data]`)
        // is read through JSON with the source added; otherwise from the text, so errors
        // keep their line and column.
        let spec: LmSpec = match implied_source {
            true => {
                let value = serde_json::to_value(&table).map_err(|e| spec_error(e.to_string()))?;
                LmSpec::from_json(value).map_err(|e| spec_error(e.to_string()))?
            }
            false => toml::from_str(text).map_err(|e| spec_error(one_line_toml_error(&e, text)))?,
        };
        spec.check(path)?;
        Ok(spec)
    }

    /// A spec stored as JSON (in a checkpoint or a model file), from before text sources
    /// joined `[data]` or after.
    pub fn from_json(mut value: serde_json::Value) -> serde_json::Result<LmSpec> {
        if let Some(data) = value.get_mut("data") {
            add_implied_text_source(data);
        }
        serde_json::from_value(value)
    }

    /// The checks serde cannot express, each naming its field.
    pub fn check(&self, path: &Path) -> Result<()> {
        let fail = |message: String| {
            Err(Error::Spec {
                path: path.to_path_buf(),
                message,
            })
        };
        let Some(text) = self.data.text() else {
            return fail(format!(
                "data.source = {:?} gives samples with labels; a gpt model reads text: \
                 use source = \"text\" with path = \"FILE\", or source = \"tiny_shakespeare\"",
                self.data.source_name()
            ));
        };
        if !(text.validation_fraction > 0.0 && text.validation_fraction < 1.0) {
            return fail(format!(
                "data.validation_fraction = {} must be in (0, 1)",
                text.validation_fraction
            ));
        }
        let t = &self.training;
        for (i, c) in t.callbacks.iter().enumerate() {
            if let Err(e) = c.validate() {
                return fail(format!("training.callbacks[{i}]: {}", e));
            }
        }
        for (name, v) in [
            ("steps", t.steps),
            ("batch_size", t.batch_size),
            ("eval_interval", t.eval_interval),
            ("eval_batches", t.eval_batches),
        ] {
            if v == 0 {
                return fail(format!("training.{name} must be at least 1"));
            }
        }
        let checks = [
            // GptConfig::validate already names its section ("model: …").
            ("", self.model.gpt().validate()),
            ("training.", t.optimizer.validate()),
            (
                "training.",
                t.learning_rate_schedule
                    .as_ref()
                    .map_or(Ok(()), Schedule::validate),
            ),
            ("training.", t.gradient_clipping.map_or(Ok(()), |c| c.validate())),
        ];
        for (field, check) in checks {
            if let Err(e) = check {
                return fail(format!("{field}{}", e));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SPEC: &str = r#"
        [data]
        path = "text.txt"
        [model]
        type = "gpt"
        layers = 2
        heads = 2
        width = 16
        context = 8
        [training]
        steps = 10
        batch_size = 4
    "#;

    #[test]
    fn parses_with_defaults() {
        let spec = LmSpec::parse(SPEC, Path::new("s.toml")).unwrap();
        // A `path` alone (as specs gave it before text joined `[data]`) is a text file.
        assert_eq!(spec.data.source_name(), "text");
        assert_eq!(spec.data.text().unwrap().validation_fraction, 0.1);
        let explicit = SPEC.replace("path = ", "source = \"text\"\npath = ");
        assert_eq!(LmSpec::parse(&explicit, Path::new("s.toml")).unwrap(), spec);
        assert_eq!(spec.model.gpt().mlp_ratio, 4);
        assert_eq!(spec.training.eval_batches, 200);
    }

    #[test]
    fn bad_settings_name_their_field() {
        let cases = [
            (
                SPEC.replace("width = 16", "width = 15"),
                "not divisible by `heads`",
            ),
            (SPEC.replace("steps = 10", "steps = 0"), "training.steps"),
            (SPEC.replace("path = \"text.txt\"", ""), "missing field `source`"),
            (
                SPEC.replace("path = \"text.txt\"", "source = \"digits\""),
                "data.source = \"digits\" gives samples with labels; a gpt model reads text",
            ),
            (
                SPEC.replace(
                    "path = \"text.txt\"",
                    "source = \"tiny_shakespeare\"\npath = \"x.txt\"",
                ),
                "unknown field `path`",
            ),
            (SPEC.replace("layers = 2", "layers = 2\nlayerz = 3"), "layerz"),
            (
                SPEC.replace("[training]", "[training]\neval_batches = 0"),
                "training.eval_batches",
            ),
        ];
        for (text, expected) in cases {
            let err = LmSpec::parse(&text, Path::new("s.toml")).unwrap_err().to_string();
            assert!(err.contains(expected), "{expected}: {err}");
        }
    }
}
