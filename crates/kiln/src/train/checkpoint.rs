//! Training checkpoints: everything `fit` needs to continue exactly where it stopped —
//! weights, optimizer state (moments and step count, hence the schedule's position), the
//! dropout generator, the epochs done, the History and each callback's own state — so that
//! 10 epochs in one go and 5 + resume + 5 give bit-identical weights.
//!
//! Stored as safetensors (tensors bit for bit, the rest as JSON metadata) and written
//! atomically, so a process killed mid-write leaves the previous checkpoint intact.

use std::collections::BTreeMap;
use std::path::Path;

use safetensors::SafeTensors;
use serde::{Deserialize, Serialize};

use super::{Callback, History, Trainer};
use crate::error::{Error, Result};
use crate::io::{encode_safetensors, read_f32_tensor, write_atomically, NamedTensor};
use crate::nn::Model;
use crate::tensor::Tensor;

pub const CHECKPOINT_FORMAT: &str = "kiln-checkpoint";
const CHECKPOINT_VERSION: &str = "1";
const PROGRESS_KEY: &str = "kiln.checkpoint";

/// What a callback must remember to resume: plain values as JSON, plus any tensors (such
/// as EarlyStopping's best weights), which are stored bit for bit.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CallbackState {
    pub values: serde_json::Value,
    pub tensors: Vec<Tensor>,
}

/// A snapshot of training after a whole epoch.
#[derive(Debug, Clone, PartialEq)]
pub struct Checkpoint {
    pub progress: Progress,
    weights: Vec<Tensor>,
    optimizer_state: Vec<Vec<Tensor>>,
    callback_tensors: Vec<Vec<Tensor>>,
}

/// The JSON part of a checkpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Progress {
    /// Epochs (or a token stream's evaluation periods) completed; training resumes with
    /// the next one.
    pub epochs_done: usize,
    /// Steps of a token stream completed (0 for epochs of samples).
    #[serde(default)]
    pub steps_done: usize,
    /// Whether a callback stopped training (resuming it then trains nothing more).
    pub stopped: bool,
    pub history: History,
    /// Whatever the caller wants kept with the checkpoint (kiln's CLI stores the spec).
    pub context: serde_json::Value,
    /// What training must keep for the result to be the same (optimizer, loss, schedule,
    /// clipping, batch size, seed, shuffling, validation): resuming compares it.
    pub settings: serde_json::Value,
    iterations: u64,
    learning_rate_override: Option<f32>,
    dropout_rng: [u64; 4],
    /// Parameter names and dimensions, in order, to check the model against.
    parameters: Vec<(String, Vec<usize>)>,
    /// Per callback that keeps state (in order), its values and tensor dimensions.
    callbacks: Vec<CallbackRecord>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct CallbackRecord {
    values: serde_json::Value,
    tensor_dims: Vec<Vec<usize>>,
}

impl Checkpoint {
    /// Captures the training state after `history.epochs.len()` epochs (and `steps_done`
    /// steps of a token stream).
    #[allow(clippy::too_many_arguments)]
    pub fn capture(
        model: &dyn Model,
        trainer: &Trainer,
        history: &History,
        steps_done: usize,
        callbacks: &[Box<dyn Callback>],
        stopped: bool,
        context: serde_json::Value,
        settings: serde_json::Value,
    ) -> Result<Checkpoint> {
        let (iterations, optimizer_state) = trainer.optimizer_snapshot();
        let dims: Vec<Vec<usize>> = model.params().iter().map(|p| p.value.dims().to_vec()).collect();
        let optimizer_state = optimizer_state
            .iter()
            .zip(&dims)
            .map(|(slots, d)| slots.iter().map(|s| Tensor::new(d, s.clone())).collect())
            .collect::<Result<Vec<Vec<Tensor>>>>()?;
        // Only callbacks with state count, so that stateless ones (a progress bar shown on
        // a terminal only) may differ between the run and its resumption.
        let states: Vec<CallbackState> = callbacks.iter().filter_map(|c| c.state()).collect();
        let progress = Progress {
            epochs_done: history.epochs.len(),
            steps_done,
            stopped,
            history: history.clone(),
            context,
            settings,
            iterations,
            learning_rate_override: trainer.learning_rate_override(),
            dropout_rng: trainer.dropout_rng_state(),
            parameters: model
                .params()
                .iter()
                .map(|p| (p.name.clone(), p.value.dims().to_vec()))
                .collect(),
            callbacks: states
                .iter()
                .map(|s| CallbackRecord {
                    values: s.values.clone(),
                    tensor_dims: s.tensors.iter().map(|t| t.dims().to_vec()).collect(),
                })
                .collect(),
        };
        Ok(Checkpoint {
            progress,
            weights: model.weights(),
            optimizer_state,
            callback_tensors: states.into_iter().map(|s| s.tensors).collect(),
        })
    }

    /// Checks, before anything is changed, that this checkpoint can continue training
    /// `model` with `settings` and `callbacks`: the same parameters, the same training
    /// settings (naming the first that differs) and as many stateful callbacks.
    pub fn check_fits(
        &self,
        model: &dyn Model,
        settings: &serde_json::Value,
        callbacks: &[Box<dyn Callback>],
    ) -> Result<()> {
        let p = &self.progress;
        let ours: Vec<(String, Vec<usize>)> = model
            .params()
            .iter()
            .map(|p| (p.name.clone(), p.value.dims().to_vec()))
            .collect();
        if ours != p.parameters {
            return Err(Error::mismatch(
                "the checkpoint's parameters",
                format!("the model's {ours:?}"),
                format!("{:?}", p.parameters),
            ));
        }
        if let Some(field) = first_difference(&p.settings, &as_read_back(settings), "") {
            return Err(Error::mismatch(
                "this run's training settings",
                "those the checkpoint was trained with (resume with the settings it was made with)",
                format!("a different `{field}`"),
            ));
        }
        let stateful = callbacks.iter().filter(|c| c.state().is_some()).count();
        check_stateful(p.callbacks.len(), stateful)
    }

    /// Puts the model, its optimizer and the callbacks back in the captured state (after
    /// [`Checkpoint::check_fits`] and the callbacks' `on_train_begin`).
    pub fn restore(
        &self,
        model: &mut dyn Model,
        trainer: &mut Trainer,
        callbacks: &mut [Box<dyn Callback>],
    ) -> Result<()> {
        let p = &self.progress;
        let mut stateful: Vec<&mut Box<dyn Callback>> =
            callbacks.iter_mut().filter(|c| c.state().is_some()).collect();
        check_stateful(p.callbacks.len(), stateful.len())?;
        model.set_weights(&self.weights)?;
        let optimizer_state = self
            .optimizer_state
            .iter()
            .map(|slots| slots.iter().map(|t| t.data().to_vec()).collect())
            .collect();
        trainer.restore_state(
            self.weights.len(),
            p.iterations,
            optimizer_state,
            p.learning_rate_override,
            p.dropout_rng,
        )?;
        for ((callback, record), tensors) in stateful.iter_mut().zip(&p.callbacks).zip(&self.callback_tensors)
        {
            callback.restore(CallbackState {
                values: record.values.clone(),
                tensors: tensors.clone(),
            })?;
        }
        Ok(())
    }

    /// Writes the checkpoint to `path` atomically.
    pub fn save(&self, path: &Path) -> Result<()> {
        write_atomically(path, &self.encode(path)?)
    }

    /// The checkpoint as the bytes [`Checkpoint::save`] writes (`path` names it in errors).
    pub fn encode(&self, path: &Path) -> Result<Vec<u8>> {
        let fail = |message: String| Error::Artifact {
            path: path.into(),
            message,
        };
        let mut metadata = BTreeMap::new();
        metadata.insert("format".to_string(), CHECKPOINT_FORMAT.to_string());
        metadata.insert("format_version".to_string(), CHECKPOINT_VERSION.to_string());
        let progress = serde_json::to_string(&self.progress).map_err(|e| fail(e.to_string()))?;
        metadata.insert(PROGRESS_KEY.to_string(), progress);
        let mut tensors: Vec<NamedTensor> = Vec::new();
        for ((name, dims), w) in self.progress.parameters.iter().zip(&self.weights) {
            tensors.push((format!("weights.{name}"), dims, w.data()));
        }
        for ((name, dims), slots) in self.progress.parameters.iter().zip(&self.optimizer_state) {
            for (k, s) in slots.iter().enumerate() {
                tensors.push((format!("optimizer.{name}.{k}"), dims, s.data()));
            }
        }
        for (i, list) in self.callback_tensors.iter().enumerate() {
            for (j, t) in list.iter().enumerate() {
                tensors.push((format!("callbacks.{i}.{j}"), t.dims(), t.data()));
            }
        }
        encode_safetensors(&metadata, &tensors).map_err(fail)
    }

    /// Reads a checkpoint written by [`Checkpoint::save`].
    pub fn load(path: &Path) -> Result<Checkpoint> {
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        Checkpoint::decode(&bytes, path)
    }

    /// Reads a checkpoint from the bytes of a file (`path` names it in errors).
    pub fn decode(bytes: &[u8], path: &Path) -> Result<Checkpoint> {
        let fail = |message: String| Error::Artifact {
            path: path.into(),
            message,
        };
        let (tensors, metadata) = crate::io::read_safetensors(bytes, fail)?;
        if metadata.get("format").map(String::as_str) != Some(CHECKPOINT_FORMAT) {
            return Err(fail(format!(
                "not a kiln training checkpoint (no `format: {CHECKPOINT_FORMAT}` in its metadata)"
            )));
        }
        match metadata.get("format_version").map(String::as_str) {
            Some(CHECKPOINT_VERSION) => {}
            other => {
                return Err(fail(format!(
                    "checkpoint format version {}, this kiln reads version {CHECKPOINT_VERSION}",
                    other.unwrap_or("(none)")
                )))
            }
        }
        let progress: Progress = metadata
            .get(PROGRESS_KEY)
            .ok_or_else(|| fail(format!("metadata has no `{PROGRESS_KEY}`")))
            .and_then(|text| {
                serde_json::from_str(text)
                    .map_err(|e| fail(format!("metadata `{PROGRESS_KEY}` is invalid: {e}")))
            })?;
        let read = |name: String, dims: &[usize]| read_f32_tensor(&tensors, &name, dims).map_err(fail);
        let mut weights = Vec::new();
        let mut optimizer_state = Vec::new();
        let slots = progress.slots(&tensors);
        for (name, dims) in &progress.parameters {
            weights.push(read(format!("weights.{name}"), dims)?);
            optimizer_state.push(
                (0..slots)
                    .map(|k| read(format!("optimizer.{name}.{k}"), dims))
                    .collect::<Result<Vec<_>>>()?,
            );
        }
        let callback_tensors = progress
            .callbacks
            .iter()
            .enumerate()
            .map(|(i, record)| {
                record
                    .tensor_dims
                    .iter()
                    .enumerate()
                    .map(|(j, d)| read(format!("callbacks.{i}.{j}"), d))
                    .collect::<Result<Vec<_>>>()
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Checkpoint {
            progress,
            weights,
            optimizer_state,
            callback_tensors,
        })
    }
}

/// `value` as it reads back from JSON text, so that an f32 setting compares equal to its
/// stored copy (serde_json widens f32 to f64 on the way in, but parses the shortest text).
pub(crate) fn as_read_back(value: &serde_json::Value) -> serde_json::Value {
    let text = serde_json::to_string(value).expect("JSON values serialise");
    serde_json::from_str(&text).expect("and parse back")
}

/// The dotted path of the first place where two JSON values differ.
/// The checkpoint's count of callbacks that keep state against this run's.
fn check_stateful(saved: usize, ours: usize) -> Result<()> {
    if saved != ours {
        return Err(Error::mismatch(
            "callbacks that keep state",
            format!("the checkpoint's {saved}"),
            format!("{ours} in this run"),
        ));
    }
    Ok(())
}

pub(crate) fn first_difference(a: &serde_json::Value, b: &serde_json::Value, path: &str) -> Option<String> {
    use serde_json::Value;
    let here = || Some(path.trim_start_matches('.').to_string()).filter(|p| !p.is_empty());
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let keys: std::collections::BTreeSet<&String> = x.keys().chain(y.keys()).collect();
            keys.into_iter().find_map(|k| {
                let (va, vb) = (x.get(k).unwrap_or(&Value::Null), y.get(k).unwrap_or(&Value::Null));
                first_difference(va, vb, &format!("{path}.{k}"))
            })
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => x
            .iter()
            .zip(y)
            .enumerate()
            .find_map(|(i, (va, vb))| first_difference(va, vb, &format!("{path}[{i}]"))),
        _ if a == b => None,
        _ => here().or_else(|| Some("value".into())),
    }
}

impl Progress {
    /// Optimizer buffers per parameter, counted from the stored tensors (none before the
    /// first step, so not derivable from the optimizer kind alone).
    fn slots(&self, tensors: &SafeTensors) -> usize {
        self.parameters.first().map_or(0, |(name, _)| {
            (0..)
                .take_while(|k| tensors.tensor(&format!("optimizer.{name}.{k}")).is_ok())
                .count()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn names_the_first_differing_field() {
        let a = json!({"spec": {"training": {"batch_size": 64, "lr": [1, 2]}}, "data_sha256": "x"});
        let b = json!({"spec": {"training": {"batch_size": 32, "lr": [1, 2]}}, "data_sha256": "x"});
        assert_eq!(
            first_difference(&a, &b, "").as_deref(),
            Some("spec.training.batch_size")
        );
        let c = json!({"spec": {"training": {"batch_size": 64, "lr": [1, 3]}}, "data_sha256": "x"});
        assert_eq!(
            first_difference(&a, &c, "").as_deref(),
            Some("spec.training.lr[1]")
        );
        assert_eq!(first_difference(&a, &a, ""), None);
    }
}
