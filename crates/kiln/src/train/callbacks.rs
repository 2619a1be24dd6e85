//! Callbacks: code that runs at the edges of training (Keras's `keras.callbacks`). Users
//! implement [`Callback`]; the built-ins are configured in a spec's `[[training.callbacks]]`.

use std::io::Write;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::{CallbackState, EpochLog, ModelCheckpoint, TensorBoard, Trainer};
use std::sync::Arc;

use super::ModelWriter;
use crate::error::{Error, Result};
use crate::io::csv_record;
use crate::nn::Model;
use crate::tensor::Tensor;

/// Whether training goes on after an epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    Continue,
    Stop,
}

/// Where an epoch stands after a batch: running means over the batches applied so far.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BatchProgress {
    /// 1-based.
    pub step: usize,
    pub steps: usize,
    pub loss: f32,
    pub accuracy: f32,
}

/// What a callback sees of training: the model, and the learning rate it may change
/// (Keras's `self.model` and `self.model.optimizer.learning_rate`).
pub struct FitState<'a> {
    pub model: &'a mut dyn Model,
    learning_rate: f32,
    scheduled: bool,
    new_learning_rate: Option<f32>,
    total_steps: Option<usize>,
}

impl<'a> FitState<'a> {
    pub(crate) fn new(
        model: &'a mut dyn Model,
        trainer: &Trainer,
        total_steps: Option<usize>,
    ) -> FitState<'a> {
        FitState {
            model,
            learning_rate: trainer.learning_rate(),
            scheduled: trainer.schedule.is_some(),
            new_learning_rate: None,
            total_steps,
        }
    }

    /// A token stream's steps in the whole run (None for epochs of samples).
    pub fn total_steps(&self) -> Option<usize> {
        self.total_steps
    }

    /// A view for calling a callback by hand, outside a trainer: `model` training at a
    /// constant `learning_rate`.
    pub fn with_learning_rate(model: &'a mut dyn Model, learning_rate: f32) -> FitState<'a> {
        FitState {
            model,
            learning_rate,
            scheduled: false,
            new_learning_rate: None,
            total_steps: None,
        }
    }

    /// The learning rate the next update will use.
    pub fn learning_rate(&self) -> f32 {
        self.new_learning_rate.unwrap_or(self.learning_rate)
    }

    /// Whether a schedule sets the learning rate (then it cannot be set by hand).
    pub fn is_scheduled(&self) -> bool {
        self.scheduled
    }

    /// Sets the learning rate for the following updates (what ReduceLROnPlateau does).
    pub fn set_learning_rate(&mut self, lr: f32) -> Result<()> {
        if self.scheduled {
            return Err(Error::unsupported(
                "setting the learning rate from a callback",
                "a learning_rate_schedule sets the learning rate; it cannot also be set by a callback",
            ));
        }
        self.new_learning_rate = Some(lr);
        Ok(())
    }

    /// Hands a learning rate a callback set to the trainer.
    pub(crate) fn apply(self, trainer: &mut Trainer) {
        if let Some(lr) = self.new_learning_rate {
            trainer.override_learning_rate(lr);
        }
    }
}

pub trait Callback: Send {
    fn on_train_begin(&mut self, _state: &mut FitState) -> Result<()> {
        Ok(())
    }
    /// Called before each epoch (`epoch` is 1-based) of `steps` batches.
    fn on_epoch_begin(&mut self, _epoch: usize, _epochs: usize, _steps: usize) {}
    /// Called after every batch; keep it cheap, it runs hundreds of times an epoch.
    fn on_batch_end(&mut self, _progress: &BatchProgress) {}
    /// Called after each epoch (validation included); may change the model or stop.
    fn on_epoch_end(&mut self, _log: &EpochLog, _state: &mut FitState) -> Result<Control> {
        Ok(Control::Continue)
    }
    fn on_train_end(&mut self, _state: &mut FitState) -> Result<()> {
        Ok(())
    }
    /// What this callback must remember for training to resume exactly from a checkpoint;
    /// None if it keeps nothing.
    fn state(&self) -> Option<CallbackState> {
        None
    }
    /// Takes back what [`Callback::state`] returned (called after `on_train_begin`).
    fn restore(&mut self, _state: CallbackState) -> Result<()> {
        Ok(())
    }
}

/// A file-writing callback's stand-in on the ranks that write nothing (every rank but 0 in
/// distributed training): it does nothing, but holds the same place in the callback list
/// and carries the state a checkpoint restores, so every rank resumes from the same file.
pub struct Inert {
    state: Option<CallbackState>,
}

impl Inert {
    /// Stands in for `callback`, keeping its resumable state (if it has any).
    pub fn replacing(callback: &dyn Callback) -> Inert {
        Inert {
            state: callback.state(),
        }
    }
}

impl Callback for Inert {
    fn state(&self) -> Option<CallbackState> {
        self.state.clone()
    }

    fn restore(&mut self, state: CallbackState) -> Result<()> {
        self.state = Some(state);
        Ok(())
    }
}

/// Decodes a callback's saved values, naming the callback when they do not fit.
fn decode_state<T: serde::de::DeserializeOwned>(name: &str, values: serde_json::Value) -> Result<T> {
    serde_json::from_value(values).map_err(|e| Error::Corrupt {
        what: format!("the checkpoint's {name} state"),
        message: e.to_string(),
    })
}

/// A built-in callback as a spec names it (`type = "early_stopping"`), Keras defaults.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum CallbackSpec {
    EarlyStopping(EarlyStopping),
    ReduceLrOnPlateau(ReduceLrOnPlateau),
    CsvLogger(CsvLogger),
    ModelCheckpoint(ModelCheckpoint),
    #[serde(rename = "tensorboard")]
    TensorBoard(TensorBoard),
}

impl CallbackSpec {
    /// Makes the callback's relative output path (CSV log, checkpoint template, TensorBoard
    /// folder) relative to `dir`, so each run's files stay in its own run folder.
    pub fn resolve_paths(&mut self, dir: &std::path::Path) {
        let resolve = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = dir.join(&*p);
            }
        };
        match self {
            CallbackSpec::CsvLogger(c) => resolve(&mut c.filename),
            CallbackSpec::TensorBoard(t) => resolve(&mut t.log_dir),
            CallbackSpec::ModelCheckpoint(m) => {
                let mut p = PathBuf::from(&m.filepath);
                resolve(&mut p);
                m.filepath = p.to_string_lossy().into_owned();
            }
            CallbackSpec::EarlyStopping(_) | CallbackSpec::ReduceLrOnPlateau(_) => {}
        }
    }

    /// Whether the callback writes files (logs, models) rather than steer training; in
    /// distributed training only rank 0 runs those.
    pub fn writes_files(&self) -> bool {
        match self {
            CallbackSpec::CsvLogger(_) | CallbackSpec::ModelCheckpoint(_) | CallbackSpec::TensorBoard(_) => {
                true
            }
            CallbackSpec::EarlyStopping(_) | CallbackSpec::ReduceLrOnPlateau(_) => false,
        }
    }

    /// The logged value this callback watches, if any.
    pub fn monitor(&self) -> Option<&str> {
        match self {
            CallbackSpec::EarlyStopping(c) => Some(&c.monitor),
            CallbackSpec::ReduceLrOnPlateau(c) => Some(&c.monitor),
            CallbackSpec::ModelCheckpoint(c) if c.save_best_only => Some(&c.monitor),
            _ => None,
        }
    }

    /// Checks the settings, so a spec with a bad one fails when it is read.
    pub fn validate(&self) -> Result<()> {
        match self {
            CallbackSpec::EarlyStopping(c) => c.watch().check(),
            CallbackSpec::ReduceLrOnPlateau(c) => {
                c.watch().check()?;
                if !(c.factor > 0.0 && c.factor < 1.0) {
                    return Err(Error::setting(
                        "reduce_lr_on_plateau.factor",
                        c.factor,
                        "a number in (0, 1)",
                    ));
                }
                Ok(())
            }
            CallbackSpec::ModelCheckpoint(c) => c.validate(),
            CallbackSpec::CsvLogger(_) | CallbackSpec::TensorBoard(_) => Ok(()),
        }
    }

    /// The callback, ready to run; `writer` saves the model being trained (needed by
    /// model_checkpoint, which writes whole models).
    pub fn build(&self, writer: Option<Arc<dyn ModelWriter>>) -> Result<Box<dyn Callback>> {
        self.validate()?;
        Ok(match self {
            CallbackSpec::EarlyStopping(c) => Box::new(c.clone()),
            CallbackSpec::ReduceLrOnPlateau(c) => Box::new(c.clone()),
            CallbackSpec::CsvLogger(c) => Box::new(c.clone()),
            CallbackSpec::ModelCheckpoint(c) => Box::new(c.with_writer(writer)?),
            CallbackSpec::TensorBoard(c) => Box::new(c.clone()),
        })
    }
}

/// Which logged quantity a callback watches, and whether lower or higher is better.
pub(crate) struct Monitor<'a> {
    pub monitor: &'a str,
    pub mode: &'a str,
}

pub(crate) fn val_loss() -> String {
    "val_loss".into()
}

pub(crate) fn auto() -> String {
    "auto".into()
}

impl Monitor<'_> {
    pub fn check(&self) -> Result<()> {
        if !["loss", "accuracy", "val_loss", "val_accuracy"].contains(&self.monitor) {
            return Err(Error::setting(
                "monitor",
                format!("`{}`", self.monitor),
                "a logged value: loss, accuracy, val_loss or val_accuracy",
            ));
        }
        if !["min", "max", "auto"].contains(&self.mode) {
            return Err(Error::setting(
                "mode",
                format!("`{}`", self.mode),
                "min, max or auto",
            ));
        }
        Ok(())
    }

    pub fn higher_is_better(&self) -> bool {
        self.mode == "max" || (self.mode == "auto" && self.monitor.ends_with("accuracy"))
    }

    /// The watched value in this epoch's log.
    pub fn value(&self, log: &EpochLog) -> Result<f32> {
        let v = match self.monitor {
            "loss" => Some(log.loss),
            "accuracy" => Some(log.accuracy),
            "val_loss" => log.val_loss,
            "val_accuracy" => log.val_accuracy,
            _ => None,
        };
        v.ok_or_else(|| {
            Error::setting(
                "monitor",
                format!("`{}`", self.monitor),
                "a value this run logs (it has no value: training has no validation data)",
            )
        })
    }

    /// Is `value` better than `reference` by more than `min_delta`?
    pub fn improves(&self, value: f32, reference: f32, min_delta: f32) -> bool {
        if self.higher_is_better() {
            value - min_delta.abs() > reference
        } else {
            value + min_delta.abs() < reference
        }
    }

    pub fn worst(&self) -> f32 {
        if self.higher_is_better() {
            f32::NEG_INFINITY
        } else {
            f32::INFINITY
        }
    }
}

/// Stops when the monitored value has not improved for `patience` epochs (Keras semantics);
/// with `restore_best_weights`, the model ends with the weights of its best epoch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EarlyStopping {
    /// loss, accuracy, val_loss or val_accuracy.
    #[serde(default = "val_loss")]
    pub monitor: String,
    /// "min", "max" or "auto" (max for accuracies, min otherwise).
    #[serde(default = "auto")]
    pub mode: String,
    #[serde(default)]
    pub min_delta: f32,
    #[serde(default)]
    pub patience: usize,
    #[serde(default)]
    pub restore_best_weights: bool,
    /// Epochs to wait before watching at all (a warm-up).
    #[serde(default)]
    pub start_from_epoch: usize,
    #[serde(skip)]
    state: StopState,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct StopState {
    best: Option<f32>,
    best_epoch: usize,
    wait: usize,
    #[serde(skip)]
    best_weights: Option<Vec<Tensor>>,
    stopped_epoch: Option<usize>,
}

impl EarlyStopping {
    fn watch(&self) -> Monitor<'_> {
        Monitor {
            monitor: &self.monitor,
            mode: &self.mode,
        }
    }

    pub fn new(monitor: &str, patience: usize, restore_best_weights: bool) -> Self {
        EarlyStopping {
            monitor: monitor.into(),
            mode: auto(),
            min_delta: 0.0,
            patience,
            restore_best_weights,
            start_from_epoch: 0,
            state: StopState::default(),
        }
    }

    /// The 1-based epoch whose weights were best, once training has run.
    pub fn best_epoch(&self) -> Option<usize> {
        self.state.best.map(|_| self.state.best_epoch)
    }

    /// The 1-based epoch after which training stopped, if it stopped early.
    pub fn stopped_epoch(&self) -> Option<usize> {
        self.state.stopped_epoch
    }
}

impl Callback for EarlyStopping {
    fn on_train_begin(&mut self, _state: &mut FitState) -> Result<()> {
        self.state = StopState::default();
        Ok(())
    }

    fn on_epoch_end(&mut self, log: &EpochLog, state: &mut FitState) -> Result<Control> {
        let watch = Monitor {
            monitor: &self.monitor,
            mode: &self.mode,
        };
        let current = watch.value(log)?;
        if log.epoch <= self.start_from_epoch {
            return Ok(Control::Continue);
        }
        let s = &mut self.state;
        if self.restore_best_weights && s.best_weights.is_none() {
            s.best_weights = Some(state.model.weights());
        }
        s.wait += 1;
        let best = s.best.unwrap_or(watch.worst());
        if watch.improves(current, best, self.min_delta) {
            s.best = Some(current);
            s.best_epoch = log.epoch;
            if self.restore_best_weights {
                s.best_weights = Some(state.model.weights());
            }
            s.wait = 0;
            return Ok(Control::Continue);
        }
        if s.wait >= self.patience && log.epoch > 1 {
            s.stopped_epoch = Some(log.epoch);
            return Ok(Control::Stop);
        }
        Ok(Control::Continue)
    }

    /// Keras 3: the best weights come back at the end of training, stopped early or not.
    fn on_train_end(&mut self, state: &mut FitState) -> Result<()> {
        if let (true, Some(w)) = (self.restore_best_weights, &self.state.best_weights) {
            state.model.set_weights(w)?;
        }
        Ok(())
    }

    fn state(&self) -> Option<CallbackState> {
        Some(CallbackState {
            values: serde_json::to_value(&self.state).expect("plain values serialise"),
            tensors: self.state.best_weights.clone().unwrap_or_default(),
        })
    }

    fn restore(&mut self, state: CallbackState) -> Result<()> {
        let mut restored: StopState = decode_state("early_stopping", state.values)?;
        restored.best_weights = Some(state.tensors).filter(|t| !t.is_empty());
        self.state = restored;
        Ok(())
    }
}

/// Multiplies the learning rate by `factor` when the monitored value has not improved for
/// `patience` epochs, then waits `cooldown` epochs; never below `min_lr` (Keras semantics).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReduceLrOnPlateau {
    /// loss, accuracy, val_loss or val_accuracy.
    #[serde(default = "val_loss")]
    pub monitor: String,
    /// "min", "max" or "auto" (max for accuracies, min otherwise).
    #[serde(default = "auto")]
    pub mode: String,
    #[serde(default = "tenth")]
    pub factor: f32,
    #[serde(default = "ten")]
    pub patience: usize,
    #[serde(default = "min_delta_default")]
    pub min_delta: f32,
    #[serde(default)]
    pub cooldown: usize,
    #[serde(default)]
    pub min_lr: f32,
    #[serde(skip)]
    state: PlateauState,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct PlateauState {
    best: Option<f32>,
    wait: usize,
    cooldown_left: usize,
}

fn tenth() -> f32 {
    0.1
}

fn ten() -> usize {
    10
}

fn min_delta_default() -> f32 {
    1e-4
}

impl ReduceLrOnPlateau {
    fn watch(&self) -> Monitor<'_> {
        Monitor {
            monitor: &self.monitor,
            mode: &self.mode,
        }
    }
}

impl Callback for ReduceLrOnPlateau {
    fn on_train_begin(&mut self, state: &mut FitState) -> Result<()> {
        self.state = PlateauState::default();
        if state.is_scheduled() {
            return Err(Error::unsupported(
                "reduce_lr_on_plateau with a learning_rate_schedule",
                "it cannot change a learning rate that the schedule sets",
            ));
        }
        Ok(())
    }

    fn on_epoch_end(&mut self, log: &EpochLog, state: &mut FitState) -> Result<Control> {
        let watch = Monitor {
            monitor: &self.monitor,
            mode: &self.mode,
        };
        let current = watch.value(log)?;
        let s = &mut self.state;
        if s.cooldown_left > 0 {
            s.cooldown_left -= 1;
            s.wait = 0;
        }
        let best = s.best.unwrap_or(watch.worst());
        if watch.improves(current, best, self.min_delta) {
            s.best = Some(current);
            s.wait = 0;
        } else if s.cooldown_left == 0 {
            s.wait += 1;
            if s.wait >= self.patience {
                let lr = state.learning_rate();
                if lr > self.min_lr {
                    state.set_learning_rate((lr * self.factor).max(self.min_lr))?;
                    s.cooldown_left = self.cooldown;
                    s.wait = 0;
                }
            }
        }
        Ok(Control::Continue)
    }

    fn state(&self) -> Option<CallbackState> {
        Some(CallbackState {
            values: serde_json::to_value(&self.state).expect("plain values serialise"),
            tensors: Vec::new(),
        })
    }

    fn restore(&mut self, state: CallbackState) -> Result<()> {
        self.state = decode_state("reduce_lr_on_plateau", state.values)?;
        Ok(())
    }
}

/// Appends one CSV row per epoch: `epoch,accuracy,learning_rate,loss,val_accuracy,val_loss`
/// (Keras's columns, sorted), flushed each epoch so a crash keeps what was logged.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CsvLogger {
    pub filename: PathBuf,
    #[serde(default)]
    pub append: bool,
    #[serde(skip)]
    written: CsvWritten,
}

/// What this run put in the file, so that a resumed run can rewrite exactly that.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct CsvWritten {
    /// Bytes before this run's first row (the header, or an appended-to file's content).
    prefix_bytes: u64,
    rows: Vec<String>,
}

/// Keras's CSVLogger columns: the epoch, then the logged values sorted by name.
const CSV_COLUMNS: [&str; 6] = [
    "epoch",
    "accuracy",
    "learning_rate",
    "loss",
    "val_accuracy",
    "val_loss",
];

impl CsvLogger {
    pub fn new(filename: impl Into<PathBuf>, append: bool) -> Self {
        CsvLogger {
            filename: filename.into(),
            append,
            written: CsvWritten::default(),
        }
    }
}

impl Callback for CsvLogger {
    fn on_train_begin(&mut self, _state: &mut FitState) -> Result<()> {
        let exists = self.filename.exists();
        if !self.append || !exists {
            std::fs::write(&self.filename, csv_record(&CSV_COLUMNS))
                .map_err(|e| Error::output(&self.filename, e))?;
        }
        let prefix_bytes = std::fs::metadata(&self.filename)
            .map_err(|e| Error::io(&self.filename, e))?
            .len();
        self.written = CsvWritten {
            prefix_bytes,
            rows: Vec::new(),
        };
        Ok(())
    }

    fn on_epoch_end(&mut self, log: &EpochLog, _state: &mut FitState) -> Result<Control> {
        let opt = |v: Option<f32>| v.map_or(String::new(), |v| v.to_string());
        let row = csv_record(&[
            (log.epoch - 1).to_string(),
            log.accuracy.to_string(),
            log.learning_rate.to_string(),
            log.loss.to_string(),
            opt(log.val_accuracy),
            opt(log.val_loss),
        ]);
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(&self.filename)
            .map_err(|e| Error::output(&self.filename, e))?;
        file.write_all(row.as_bytes())
            .map_err(|e| Error::output(&self.filename, e))?;
        self.written.rows.push(row);
        Ok(Control::Continue)
    }

    fn state(&self) -> Option<CallbackState> {
        Some(CallbackState {
            values: serde_json::to_value(&self.written).expect("plain values serialise"),
            tensors: Vec::new(),
        })
    }

    /// On resume, the file is rewritten to hold the checkpoint's rows, dropping any an
    /// interrupted run logged after its last checkpoint.
    fn restore(&mut self, state: CallbackState) -> Result<()> {
        self.written = decode_state("csv_logger", state.values)?;
        let mut bytes = match std::fs::read(&self.filename) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => csv_record(&CSV_COLUMNS).into_bytes(),
            Err(e) => return Err(Error::io(&self.filename, e)),
        };
        bytes.truncate(self.written.prefix_bytes as usize);
        bytes.extend(self.written.rows.concat().into_bytes());
        crate::io::write_atomically(&self.filename, &bytes)
    }
}
