//! ModelCheckpoint: saves the model after an epoch (Keras semantics), to a path made from
//! a template such as `ckpt-{epoch:02}-{val_loss:.3}.safetensors`, each file written
//! atomically so a crash never leaves half a model.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::callbacks::{auto, val_loss, Monitor};
use super::{Callback, CallbackState, Control, EpochLog, FitState};
use crate::error::{Error, Result};
use crate::nn::Model;

/// Writes the model being trained as a whole model file, its metadata brought up to the
/// epoch of `log`: what ModelCheckpoint needs of the model's kind.
pub trait ModelWriter: Send + Sync + std::fmt::Debug {
    fn write(&self, model: &dyn Model, log: &EpochLog, path: &Path) -> Result<()>;
}

/// A shared [`ModelWriter`]; equal when it is the same writer.
#[derive(Debug, Clone)]
pub struct SharedWriter(pub Arc<dyn ModelWriter>);

impl PartialEq for SharedWriter {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelCheckpoint {
    /// Template of the file to write. `{name}` or `{name:spec}` is replaced by the epoch's
    /// value: epoch (1-based; a language model's evaluation), step (a language model's
    /// steps done), loss, accuracy, val_loss, val_accuracy, learning_rate; spec
    /// is `[0][width][.precision]`, optionally ending in Python's `d` or `f`.
    pub filepath: String,
    /// Only write when the monitored value improves on the best so far.
    #[serde(default)]
    pub save_best_only: bool,
    #[serde(default = "val_loss")]
    pub monitor: String,
    /// "min", "max" or "auto" (max for accuracies, min otherwise).
    #[serde(default = "auto")]
    pub mode: String,
    #[serde(skip)]
    writer: Option<SharedWriter>,
    #[serde(skip)]
    best: Option<f32>,
}

impl ModelCheckpoint {
    pub fn new(filepath: impl Into<String>, save_best_only: bool, writer: Arc<dyn ModelWriter>) -> Self {
        ModelCheckpoint {
            filepath: filepath.into(),
            save_best_only,
            monitor: val_loss(),
            mode: auto(),
            writer: Some(SharedWriter(writer)),
            best: None,
        }
    }

    /// Checks the monitor and the template: fails now, not after the first epoch, on a
    /// template naming an unknown value.
    pub(crate) fn validate(&self) -> Result<()> {
        self.watch().check()?;
        fill_template(&self.filepath, &sample_log()).map(drop)
    }

    /// A copy that saves models with `writer`.
    pub(crate) fn with_writer(&self, writer: Option<Arc<dyn ModelWriter>>) -> Result<ModelCheckpoint> {
        let writer = writer.map(SharedWriter).ok_or_else(missing_metadata)?;
        Ok(ModelCheckpoint {
            writer: Some(writer),
            best: None,
            ..self.clone()
        })
    }

    fn watch(&self) -> Monitor<'_> {
        Monitor {
            monitor: &self.monitor,
            mode: &self.mode,
        }
    }

    fn save(&self, log: &EpochLog, model: &dyn Model) -> Result<()> {
        let path = PathBuf::from(fill_template(&self.filepath, log)?);
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| Error::output(dir, e))?;
        }
        let writer = self.writer.as_ref().ok_or_else(missing_metadata)?;
        writer.0.write(model, log, &path)
    }
}

impl Callback for ModelCheckpoint {
    fn on_train_begin(&mut self, _state: &mut FitState) -> Result<()> {
        if self.writer.is_none() {
            return Err(missing_metadata());
        }
        self.best = None;
        Ok(())
    }

    fn on_epoch_end(&mut self, log: &EpochLog, state: &mut FitState) -> Result<Control> {
        if self.save_best_only {
            let watch = self.watch();
            let current = watch.value(log)?;
            if !watch.improves(current, self.best.unwrap_or(watch.worst()), 0.0) {
                return Ok(Control::Continue);
            }
            self.best = Some(current);
        }
        self.save(log, state.model)?;
        Ok(Control::Continue)
    }

    fn state(&self) -> Option<CallbackState> {
        Some(CallbackState {
            values: serde_json::json!({ "best": self.best }),
            tensors: Vec::new(),
        })
    }

    fn restore(&mut self, state: CallbackState) -> Result<()> {
        self.best = state
            .values
            .get("best")
            .and_then(|v| v.as_f64())
            .map(|v| v as f32);
        Ok(())
    }
}

/// Without a model's metadata there is nothing to save a whole, loadable model with.
fn missing_metadata() -> Error {
    Error::unsupported(
        "model_checkpoint",
        "it needs the model's metadata to save whole models",
    )
}

/// A log with every value present, to validate templates before training.
fn sample_log() -> EpochLog {
    EpochLog {
        epoch: 1,
        loss: 0.0,
        accuracy: 0.0,
        val_loss: Some(0.0),
        val_accuracy: Some(0.0),
        seconds: 0.0,
        train_seconds: 0.0,
        learning_rate: 0.0,
        skipped_batches: 0,
        communication_seconds: 0.0,
        step: Some(1),
    }
}

/// Replaces each `{name}` / `{name:spec}` of `template` by the log's value.
pub fn fill_template(template: &str, log: &EpochLog) -> Result<String> {
    let bad = |msg: String| {
        Error::setting(
            "model_checkpoint filepath",
            format!("`{template}`"),
            format!("a filename template; {msg}"),
        )
    };
    let mut out = String::new();
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        out += &rest[..open];
        let close = rest[open..]
            .find('}')
            .ok_or_else(|| bad("a `{` is never closed".into()))?;
        let field = &rest[open + 1..open + close];
        let (name, spec) = field.split_once(':').unwrap_or((field, ""));
        out += &format_value(name, spec, log).map_err(bad)?;
        rest = &rest[open + close + 1..];
    }
    Ok(out + rest)
}

fn format_value(name: &str, spec: &str, log: &EpochLog) -> std::result::Result<String, String> {
    let (zero_pad, width, precision) = parse_spec(spec)?;
    let float =
        |v: Option<f32>| v.ok_or_else(|| format!("`{name}` has no value this epoch (no validation data?)"));
    let text = match name {
        "epoch" => log.epoch.to_string(),
        "step" => log
            .step
            .ok_or_else(|| "`step` is for language models, which train in steps; use `epoch`".to_string())?
            .to_string(),
        "loss" | "accuracy" | "val_loss" | "val_accuracy" | "learning_rate" => {
            let v = float(match name {
                "loss" => Some(log.loss),
                "accuracy" => Some(log.accuracy),
                "val_loss" => log.val_loss,
                "val_accuracy" => log.val_accuracy,
                _ => Some(log.learning_rate),
            })?;
            match precision {
                Some(p) => format!("{v:.p$}"),
                None => v.to_string(),
            }
        }
        other => {
            return Err(format!(
                "unknown value `{{{other}}}`; expected epoch, step, loss, accuracy, val_loss, val_accuracy or learning_rate"
            ))
        }
    };
    let pad = if zero_pad { '0' } else { ' ' };
    let fill: String = std::iter::repeat_n(pad, width.saturating_sub(text.len())).collect();
    Ok(fill + &text)
}

/// `[0][width][.precision][d|f]` → (zero padding, width, precision).
fn parse_spec(spec: &str) -> std::result::Result<(bool, usize, Option<usize>), String> {
    let body = spec.strip_suffix(['d', 'f']).unwrap_or(spec);
    let (width_part, precision) = match body.split_once('.') {
        Some((w, p)) => (
            w,
            Some(p.parse().map_err(|_| format!("bad precision in `{spec}`"))?),
        ),
        None => (body, None),
    };
    let zero_pad = width_part.starts_with('0');
    let width = match width_part {
        "" => 0,
        w => w
            .parse()
            .map_err(|_| format!("bad format `{spec}`; expected e.g. 02 or .3"))?,
    };
    Ok((zero_pad, width, precision))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log() -> EpochLog {
        EpochLog {
            epoch: 7,
            val_loss: Some(0.071_234),
            loss: 0.05,
            ..sample_log()
        }
    }

    #[test]
    fn fills_rust_and_python_style_templates() {
        assert_eq!(
            fill_template("ckpt-{epoch:02}-{val_loss:.3}.safetensors", &log()).unwrap(),
            "ckpt-07-0.071.safetensors"
        );
        assert_eq!(
            fill_template("m-{epoch:03d}-{loss:.2f}", &log()).unwrap(),
            "m-007-0.05"
        );
        assert_eq!(
            fill_template("plain.safetensors", &log()).unwrap(),
            "plain.safetensors"
        );
        assert_eq!(fill_template("{epoch}", &log()).unwrap(), "7");
    }

    #[test]
    fn rejects_unknown_values_and_bad_formats() {
        let err = fill_template("c-{val_los}", &log()).unwrap_err().to_string();
        assert!(err.contains("unknown value `{val_los}`"), "{err}");
        assert!(fill_template("c-{epoch", &log()).is_err());
        assert!(fill_template("c-{epoch:x2}", &log()).is_err());
        let no_val = EpochLog {
            val_loss: None,
            ..log()
        };
        let err = fill_template("{val_loss}", &no_val).unwrap_err().to_string();
        assert!(err.contains("no value"), "{err}");
    }
}
