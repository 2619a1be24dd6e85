//! The spec of a language model (TOML): where the text comes from and how it is tokenized,
//! the transformer's sizes, and the training run in optimizer steps rather than epochs
//! (validation, callbacks and a checkpoint every `eval_interval` steps). A spec is one when
//! its `[model]` says `type = "gpt"`; see `examples/shakespeare-char-gpt.toml`.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{bare_message, one_line_toml_error};
use crate::error::{Error, Result};
use crate::lm::text::TextSource;
use crate::lm::tokenizer::TokenizerSpec;
use crate::lm::GptConfig;
use crate::optim::{GradientClipping, OptimizerSpec, Schedule};
use crate::train::CallbackSpec;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LmSpec {
    #[serde(default)]
    pub name: Option<String>,
    pub data: TextDataSpec,
    pub model: LmModelSpec,
    pub training: LmTrainingSpec,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TextDataSpec {
    /// A built-in corpus (`"tiny_shakespeare"`), or `"text"` with `path` (a `path` alone
    /// also means a text file).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<TextSource>,
    /// A UTF-8 text file; relative to the spec's folder.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<PathBuf>,
    /// The last part of the text, by position, held out for validation loss.
    #[serde(default = "default_validation_fraction")]
    pub validation_fraction: f32,
    #[serde(default)]
    pub tokenizer: TokenizerSpec,
}

fn default_validation_fraction() -> f32 {
    0.1
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
        if let (Some(data_path), Some(dir)) = (&spec.data.path, path.parent()) {
            if data_path.is_relative() {
                spec.data.path = Some(dir.join(data_path));
            }
        }
        if spec.name.is_none() {
            spec.name = path.file_stem().map(|s| s.to_string_lossy().into_owned());
        }
        Ok(spec)
    }

    /// Makes the text's path absolute (against the current folder).
    pub fn make_paths_absolute(&mut self) -> Result<()> {
        if let Some(path) = self.data.path.as_mut().filter(|p| p.is_relative()) {
            let here = std::env::current_dir().map_err(|e| Error::io(".", e))?;
            *path = here.join(&*path);
        }
        Ok(())
    }

    pub fn parse(text: &str, path: &Path) -> Result<LmSpec> {
        let spec: LmSpec = toml::from_str(text).map_err(|e| Error::Spec {
            path: path.to_path_buf(),
            message: one_line_toml_error(&e, text),
        })?;
        spec.check(path)?;
        Ok(spec)
    }

    /// The checks serde cannot express, each naming its field.
    pub fn check(&self, path: &Path) -> Result<()> {
        let fail = |message: String| {
            Err(Error::Spec {
                path: path.to_path_buf(),
                message,
            })
        };
        let d = &self.data;
        match (&d.source, &d.path) {
            (None | Some(TextSource::Text), None) => {
                return fail("data: give `source = \"tiny_shakespeare\"` or `path = \"text.txt\"`".into())
            }
            (Some(TextSource::TinyShakespeare), Some(_)) => {
                return fail("data: give either `source = \"tiny_shakespeare\"` or `path`, not both".into())
            }
            _ => {}
        }
        if !(d.validation_fraction > 0.0 && d.validation_fraction < 1.0) {
            return fail(format!(
                "data.validation_fraction = {} must be in (0, 1)",
                d.validation_fraction
            ));
        }
        let t = &self.training;
        for (i, c) in t.callbacks.iter().enumerate() {
            if let Err(e) = c.validate() {
                return fail(format!("training.callbacks[{i}]: {}", bare_message(e)));
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
                return fail(format!("{field}{}", bare_message(e)));
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
        assert_eq!(spec.data.validation_fraction, 0.1);
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
            (SPEC.replace("path = \"text.txt\"", ""), "give `source"),
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
