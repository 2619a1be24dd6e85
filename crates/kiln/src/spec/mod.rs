//! Specs (TOML): what a run trains. `[model] type` says which kind of model: `"sequential"`
//! (the default, so specs written before it existed still parse) is a layer stack trained
//! in epochs on samples ([`TrainSpec`]); `"gpt"` a language model trained in steps on a
//! text ([`LmSpec`]). Both read one `[data]` vocabulary ([`crate::data::DataSpec`]): samples
//! with labels (mnist, digits, csv) or text (a file, tiny_shakespeare). Every section denies unknown fields, so a typo is an error.

mod language_model;
mod sequential;

use std::path::Path;

use serde::Serialize;

use crate::error::{Error, Result};

pub use language_model::{LmModelSpec, LmSpec, LmTrainingSpec};
pub use sequential::{tidy_json, ModelSpec, Preprocessing, TrainSpec, TrainingSpec};

/// A spec of either kind of model.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Spec {
    Sequential(TrainSpec),
    Gpt(LmSpec),
}

/// The model kinds a spec's `[model] type` names.
pub const MODEL_TYPES: [&str; 2] = ["sequential", "gpt"];

impl Spec {
    /// Reads a spec of either kind; relative data paths are taken from the spec's folder.
    pub fn from_file(path: &Path) -> Result<Spec> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        match model_type(&text, path)? {
            ModelType::Gpt => LmSpec::from_file(path).map(Spec::Gpt),
            ModelType::Sequential => TrainSpec::from_file(path).map(Spec::Sequential),
        }
    }

    /// A spec stored as JSON (in a checkpoint).
    pub fn from_json(value: serde_json::Value, origin: &Path) -> Result<Spec> {
        let is_gpt = value.pointer("/model/type").and_then(|t| t.as_str()) == Some("gpt");
        let parsed = match is_gpt {
            true => LmSpec::from_json(value).map(Spec::Gpt),
            false => serde_json::from_value(value).map(Spec::Sequential),
        };
        parsed.map_err(|e| Error::data(origin, format!("its stored spec is invalid: {e}")))
    }

    /// The spec's `name`, if it gives one (from_file sets the file stem otherwise).
    pub fn name(&self) -> Option<&str> {
        match self {
            Spec::Sequential(s) => s.name.as_deref(),
            Spec::Gpt(s) => s.name.as_deref(),
        }
    }

    pub fn set_name(&mut self, name: String) {
        match self {
            Spec::Sequential(s) => s.name = Some(name),
            Spec::Gpt(s) => s.name = Some(name),
        }
    }

    /// The seed that drives initialization, batches and dropout.
    pub fn seed(&self) -> u64 {
        match self {
            Spec::Sequential(s) => s.training.seed,
            Spec::Gpt(s) => s.training.seed,
        }
    }

    /// The checks serde cannot express, each naming its field (`path` names the source).
    pub fn check(&self, path: &Path) -> Result<()> {
        match self {
            Spec::Sequential(s) => s.check(path),
            Spec::Gpt(s) => s.check(path),
        }
    }

    /// The same kind of spec read from `value` (this spec's JSON with some settings
    /// changed, say); `origin` names the source in errors.
    pub fn same_kind_from(&self, value: serde_json::Value, origin: &Path) -> Result<Spec> {
        let parsed = match self {
            Spec::Sequential(_) => serde_json::from_value(value).map(Spec::Sequential),
            Spec::Gpt(_) => LmSpec::from_json(value).map(Spec::Gpt),
        };
        parsed.map_err(|e| Error::data(origin, format!("the spec does not accept these values: {e}")))
    }

    /// Makes data paths absolute (against the current folder), for a spec written elsewhere.
    pub fn make_paths_absolute(&mut self) -> Result<()> {
        match self {
            Spec::Sequential(s) => s.data.make_paths_absolute(),
            Spec::Gpt(s) => s.data.make_paths_absolute(),
        }
    }

    /// The spec as TOML text that [`Spec::from_file`] reads back to the same spec.
    pub fn to_toml(&self) -> Result<String> {
        let unwritable = |e: String| Error::unsupported("writing the spec as TOML", e);
        let mut value = serde_json::to_value(self).map_err(|e| unwritable(e.to_string()))?;
        tidy_json(&mut value);
        toml::to_string(&value).map_err(|e| unwritable(e.to_string()))
    }
}

enum ModelType {
    Sequential,
    Gpt,
}

/// The kind of model a spec's TOML describes, from `[model] type` alone (a TOML error is
/// left for the full parse to report with its line and column).
fn model_type(text: &str, path: &Path) -> Result<ModelType> {
    let Ok(table) = text.parse::<toml::Table>() else {
        return Ok(ModelType::Sequential);
    };
    match table.get("model").and_then(|m| m.get("type")) {
        None => Ok(ModelType::Sequential),
        Some(toml::Value::String(t)) if t == "sequential" => Ok(ModelType::Sequential),
        Some(toml::Value::String(t)) if t == "gpt" => Ok(ModelType::Gpt),
        Some(other) => Err(Error::Spec {
            path: path.to_path_buf(),
            message: format!(
                "model.type = {other} is not a kind of model kiln knows; use one of {MODEL_TYPES:?}"
            ),
        }),
    }
}

/// toml's errors span several lines (a source excerpt); kiln prints errors on one line:
/// `line L, column C: message`.
pub(crate) fn one_line_toml_error(e: &toml::de::Error, text: &str) -> String {
    let message = e.message().trim().replace('\n', " ");
    match e.span() {
        Some(span) => {
            let before = &text[..span.start.min(text.len())];
            let line = before.matches('\n').count() + 1;
            let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
            format!("line {line}, column {column}: {message}")
        }
        None => message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_type_picks_the_kind_and_names_unknown_ones() {
        let p = Path::new("s.toml");
        assert!(matches!(
            model_type("[model]\nlayers = []", p),
            Ok(ModelType::Sequential)
        ));
        assert!(matches!(
            model_type("[model]\ntype = \"sequential\"", p),
            Ok(ModelType::Sequential)
        ));
        assert!(matches!(
            model_type("[model]\ntype = \"gpt\"", p),
            Ok(ModelType::Gpt)
        ));
        let e = model_type("[model]\ntype = \"bert\"", p)
            .err()
            .unwrap()
            .to_string();
        assert!(
            e.contains("s.toml") && e.contains("\"bert\"") && e.contains("gpt"),
            "{e}"
        );
    }
}
