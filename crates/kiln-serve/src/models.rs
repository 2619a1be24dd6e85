//! The models being served, by name. Names come from the command line only and are looked
//! up in memory, never joined to a path, so no request can reach the file system.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use crate::batcher::Batcher;
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

/// What requests need to know about a model, plus the queue to its compute threads.
pub struct Model {
    pub name: String,
    /// Per-sample input shape, e.g. [28, 28].
    pub input_dims: Vec<usize>,
    pub input_size: usize,
    /// Values per sample of the output (class probabilities).
    pub outputs: usize,
    pub classes: Vec<String>,
    pub batcher: Batcher,
}

impl Model {
    /// The class name of output `index`, as `kiln predict` prints it.
    pub fn class_name(&self, index: usize) -> String {
        self.classes
            .get(index)
            .cloned()
            .unwrap_or_else(|| index.to_string())
    }
}

pub struct Registry {
    models: BTreeMap<String, Arc<Model>>,
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
        let mut models = BTreeMap::new();
        for source in &config.models {
            if models.contains_key(&source.name) {
                return Err(ServeError::Config(format!(
                    "two models are named `{}`; use NAME=PATH to tell them apart",
                    source.name
                )));
            }
            let model = load_model(source, config, metrics.clone())?;
            models.insert(source.name.clone(), Arc::new(model));
        }
        Ok(Registry { models })
    }

    pub fn get(&self, name: &str) -> Option<&Arc<Model>> {
        self.models.get(name)
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.models.keys().map(String::as_str)
    }

    /// Closes every queue and waits for the compute threads to finish what they hold.
    pub fn shut_down(&self) {
        for model in self.models.values() {
            model.batcher.shut_down();
        }
    }
}

fn load_model(source: &ModelSource, config: &Config, metrics: Arc<Metrics>) -> Result<Model, ServeError> {
    let artifact = kiln::artifact::load(&source.path)?;
    if artifact
        .info
        .table
        .as_ref()
        .is_some_and(|t| t.schema.has_categories())
    {
        return Err(ServeError::Config(format!(
            "model `{}` ({}): it one-hot encodes categorical CSV columns, which serving does not do yet; use `kiln predict` on a CSV",
            source.name,
            source.path.display()
        )));
    }
    let input_shape = artifact.model.input_shape();
    let outputs = artifact.model.output_shape().numel();
    let batcher = Batcher::start(&source.name, &source.path, config, metrics)?;
    Ok(Model {
        name: source.name.clone(),
        input_dims: input_shape.dims().to_vec(),
        input_size: input_shape.numel(),
        outputs,
        classes: artifact.info.classes,
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
