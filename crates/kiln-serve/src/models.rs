//! The models being served, by name. Names come from the command line only and are looked
//! up in memory, never joined to a path, so no request can reach the file system.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use crate::batcher::Batcher;
use crate::completion::LmSignature;
use crate::decoder::Decoder;
use crate::error::ServeError;
use crate::metrics::Metrics;
use crate::Config;

/// A model named on the command line: `path` (named after the file stem) or `name=path`.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelSource {
    pub name: String,
    pub path: PathBuf,
}

/// Parses one MODEL argument of `kiln serve`.
pub fn parse_model_arg(arg: &str) -> Result<ModelSource, ServeError> {
    let (name, path) = match arg.split_once('=') {
        Some((name, path)) => (name.to_string(), PathBuf::from(path)),
        None => {
            let path = PathBuf::from(arg);
            let stem = path.file_stem().map(|s| s.to_string_lossy().into_owned());
            (stem.unwrap_or_default(), path)
        }
    };
    check_name(&name).map_err(|why| ServeError::Config(format!("model `{arg}`: {why}")))?;
    Ok(ModelSource { name, path })
}

/// Names appear in URL paths and metric labels: keep them to characters that need no
/// escaping in either, and not `.`/`..`.
fn check_name(name: &str) -> Result<(), String> {
    let valid_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.');
    if name.is_empty() {
        return Err("the model name is empty (use NAME=PATH)".into());
    }
    if name.len() > 64 || !name.chars().all(valid_char) || name.starts_with('.') {
        return Err(format!(
            "model name `{name}` must be 1-64 letters, digits, `_`, `-` or `.`, not starting with `.` \
             (use NAME=PATH to choose one)"
        ));
    }
    Ok(())
}

/// A served model: what requests need to know of it, and the queue to its compute threads.
pub struct Model {
    pub signature: Signature,
    pub batcher: Batcher,
}

impl std::ops::Deref for Model {
    type Target = Signature;

    fn deref(&self) -> &Signature {
        &self.signature
    }
}

/// What a request is checked against and answered with: the model's name, input and
/// output sizes, class names and, for a tabular model, its columns.
pub struct Signature {
    pub name: String,
    /// Per-sample input shape, e.g. [28, 28].
    pub input_dims: Vec<usize>,
    pub input_size: usize,
    /// Values per sample of the output (class probabilities).
    pub outputs: usize,
    pub classes: Vec<String>,
    /// The CSV columns a tabular model takes, in input order.
    pub table: Option<TableInput>,
}

/// A tabular model's feature columns as requests name them.
pub struct TableInput {
    pub columns: Vec<TableColumn>,
    /// The label column, which a request may send along (it is ignored, as in `kiln predict`).
    pub label: String,
}

pub struct TableColumn {
    pub name: String,
    /// The training categories of a one-hot encoded column (sorted); None when numeric.
    pub categories: Option<Vec<String>>,
    /// Whether a gap (`null`) is filled by the model's cleaning rather than refused.
    pub fills_gaps: bool,
}

impl TableInput {
    fn of(table: &kiln::data::TablePreprocessing) -> TableInput {
        let columns = table
            .schema
            .columns
            .iter()
            .enumerate()
            .map(|(i, column)| TableColumn {
                name: column.name.clone(),
                categories: match &column.kind {
                    kiln::data::ColumnKind::Categorical { categories } => Some(categories.clone()),
                    kiln::data::ColumnKind::Numeric {} => None,
                },
                fills_gaps: table.cleaning.fill.get(i).is_some(),
            })
            .collect();
        TableInput {
            columns,
            label: table.schema.label.clone(),
        }
    }

    pub fn has_categories(&self) -> bool {
        self.columns.iter().any(|c| c.categories.is_some())
    }

    /// Which columns may be sent as `null`, in input order.
    pub fn gaps(&self) -> Vec<bool> {
        self.columns.iter().map(|c| c.fills_gaps).collect()
    }

    /// The columns as the model metadata lists them.
    pub fn describe(&self) -> serde_json::Value {
        let columns: Vec<_> = self
            .columns
            .iter()
            .map(|c| {
                let mut entry = serde_json::json!({
                    "name": c.name,
                    "kind": if c.categories.is_some() { "categorical" } else { "numeric" },
                    "null_allowed": c.fills_gaps,
                });
                if let Some(categories) = &c.categories {
                    entry["categories"] = serde_json::json!(categories);
                }
                entry
            })
            .collect();
        serde_json::json!(columns)
    }
}

impl Signature {
    /// The class name of output `index`, as `kiln predict` prints it.
    pub fn class_name(&self, index: usize) -> String {
        self.classes
            .get(index)
            .cloned()
            .unwrap_or_else(|| index.to_string())
    }
}

/// A served language model: what requests are checked and decoded with, and the queue to
/// its scheduler.
pub struct LanguageModelEntry {
    pub signature: LmSignature,
    pub decoder: Decoder,
}

pub struct Registry {
    models: BTreeMap<String, Arc<Model>>,
    language_models: BTreeMap<String, Arc<LanguageModelEntry>>,
}

impl Registry {
    /// Loads every model and starts its compute threads; any model that fails to load
    /// stops start-up with that model's error.
    pub fn load(config: &Config, metrics: Arc<Metrics>) -> Result<Self, ServeError> {
        if config.models.is_empty() {
            return Err(ServeError::Config(
                "no model to serve: name at least one MODEL".into(),
            ));
        }
        let mut registry = Registry {
            models: BTreeMap::new(),
            language_models: BTreeMap::new(),
        };
        for source in &config.models {
            if registry.names().any(|n| n == source.name) {
                return Err(ServeError::Config(format!(
                    "two models are named `{}`; use NAME=PATH to tell them apart",
                    source.name
                )));
            }
            let name = source.name.clone();
            match kiln::artifact::kind_of(&source.path)? {
                kiln::artifact::ModelKind::Gpt => {
                    let model = load_language_model(source, config, metrics.clone())?;
                    registry.language_models.insert(name, Arc::new(model));
                }
                kiln::artifact::ModelKind::Sequential => {
                    let model = load_model(source, config, metrics.clone())?;
                    registry.models.insert(name, Arc::new(model));
                }
            }
        }
        Ok(registry)
    }

    pub fn language_model(&self, name: &str) -> Option<&Arc<LanguageModelEntry>> {
        self.language_models.get(name)
    }

    pub fn language_models(&self) -> impl Iterator<Item = &Arc<LanguageModelEntry>> {
        self.language_models.values()
    }

    pub fn get(&self, name: &str) -> Option<&Arc<Model>> {
        self.models.get(name)
    }

    /// Every model's name, classifiers and language models, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        let mut names: Vec<&str> = self
            .models
            .keys()
            .chain(self.language_models.keys())
            .map(String::as_str)
            .collect();
        names.sort_unstable();
        names.into_iter()
    }

    /// Closes every queue and waits for the compute threads to finish what they hold.
    pub fn shut_down(&self) {
        for model in self.models.values() {
            model.batcher.shut_down();
        }
        for model in self.language_models.values() {
            model.decoder.shut_down();
        }
    }
}

fn load_language_model(
    source: &ModelSource,
    config: &Config,
    metrics: Arc<Metrics>,
) -> Result<LanguageModelEntry, ServeError> {
    let model = kiln::artifact::load_language_model(&source.path)?;
    let end_tokens = match &model.tokenizer {
        kiln::lm::Tokenizer::ByteLevel(b) => b.special_ids().to_vec(),
        _ => Vec::new(),
    };
    let signature = LmSignature {
        name: source.name.clone(),
        tokenizer: Arc::new(model.tokenizer.clone()),
        context: model.gpt.config().context,
        vocab: model.gpt.vocab_size(),
        end_tokens,
        max_tokens_cap: config.max_tokens,
    };
    let decoder = Decoder::start(
        &source.name,
        model,
        config.max_sequences,
        config.queue_capacity,
        metrics,
    )?;
    Ok(LanguageModelEntry { signature, decoder })
}

fn load_model(source: &ModelSource, config: &Config, metrics: Arc<Metrics>) -> Result<Model, ServeError> {
    let artifact = kiln::artifact::load(&source.path)?;
    let table = artifact.info.table.as_ref().map(TableInput::of);
    let input_shape = artifact.model.input_shape();
    // A tabular model takes one raw value per column (categories as their index); the
    // compute thread cleans and one-hot encodes them as `kiln predict` does.
    let input_dims = match &table {
        Some(t) => vec![t.columns.len()],
        None => input_shape.dims().to_vec(),
    };
    let outputs = artifact.model.output_shape().numel();
    let batcher = Batcher::start(&source.name, &source.path, config, metrics)?;
    Ok(Model {
        signature: Signature {
            name: source.name.clone(),
            input_size: input_dims.iter().product(),
            input_dims,
            outputs,
            classes: artifact.info.classes,
            table,
        },
        batcher,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn names_come_from_the_stem_or_the_argument() {
        let m = parse_model_arg("runs/a/mnist.safetensors").unwrap();
        assert_eq!(
            (m.name.as_str(), m.path.as_path()),
            ("mnist", Path::new("runs/a/mnist.safetensors"))
        );
        let m = parse_model_arg("digits=x/model.safetensors").unwrap();
        assert_eq!(
            (m.name.as_str(), m.path.as_path()),
            ("digits", Path::new("x/model.safetensors"))
        );
    }

    #[test]
    fn names_that_could_mean_a_path_are_refused() {
        for bad in [
            "../x=m.safetensors",
            "a/b=m.safetensors",
            "=m.safetensors",
            ".hidden=m",
            "a b=m",
            "%2e=m",
        ] {
            assert!(parse_model_arg(bad).is_err(), "{bad} was accepted");
        }
    }
}
