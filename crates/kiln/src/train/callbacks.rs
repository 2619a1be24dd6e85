//! Callbacks: code that runs at the edges of training (Keras's `keras.callbacks`). Users
//! implement [`Callback`]; the built-ins are configured in a spec's `[[training.callbacks]]`.

use std::io::Write;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::EpochLog;
use crate::error::{Error, Result};
use crate::nn::Sequential;
use crate::tensor::Tensor;

/// Whether training goes on after an epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    Continue,
    Stop,
}

pub trait Callback: Send {
    fn on_train_begin(&mut self, _model: &mut Sequential) -> Result<()> {
        Ok(())
    }
    /// Called after each epoch (validation included); may change the model or stop.
    fn on_epoch_end(&mut self, _log: &EpochLog, _model: &mut Sequential) -> Result<Control> {
        Ok(Control::Continue)
    }
    fn on_train_end(&mut self, _model: &mut Sequential) -> Result<()> {
        Ok(())
    }
}

/// A built-in callback as a spec names it (`type = "early_stopping"`), Keras defaults.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum CallbackSpec {
    EarlyStopping(EarlyStopping),
    ReduceLrOnPlateau(ReduceLrOnPlateau),
    CsvLogger(CsvLogger),
}

impl CallbackSpec {
    pub fn build(&self) -> Result<Box<dyn Callback>> {
        Ok(match self {
            CallbackSpec::EarlyStopping(c) => {
                c.watch().check()?;
                Box::new(c.clone())
            }
            CallbackSpec::ReduceLrOnPlateau(c) => {
                c.watch().check()?;
                if !(c.factor > 0.0 && c.factor < 1.0) {
                    return Err(Error::Value(format!(
                        "reduce_lr_on_plateau: factor {} must be in (0, 1)",
                        c.factor
                    )));
                }
                Box::new(c.clone())
            }
            CallbackSpec::CsvLogger(c) => Box::new(c.clone()),
        })
    }
}

/// Which logged quantity a callback watches, and whether lower or higher is better.
struct Monitor<'a> {
    monitor: &'a str,
    mode: &'a str,
}

fn val_loss() -> String {
    "val_loss".into()
}

fn auto() -> String {
    "auto".into()
}

impl Monitor<'_> {
    fn check(&self) -> Result<()> {
        if !["loss", "accuracy", "val_loss", "val_accuracy"].contains(&self.monitor) {
            return Err(Error::Value(format!(
                "monitor `{}` is not logged; expected loss, accuracy, val_loss or val_accuracy",
                self.monitor
            )));
        }
        if !["min", "max", "auto"].contains(&self.mode) {
            return Err(Error::Value(format!(
                "mode `{}` must be min, max or auto",
                self.mode
            )));
        }
        Ok(())
    }

    fn higher_is_better(&self) -> bool {
        self.mode == "max" || (self.mode == "auto" && self.monitor.ends_with("accuracy"))
    }

    /// The watched value in this epoch's log.
    fn value(&self, log: &EpochLog) -> Result<f32> {
        let v = match self.monitor {
            "loss" => Some(log.loss),
            "accuracy" => Some(log.accuracy),
            "val_loss" => log.val_loss,
            "val_accuracy" => log.val_accuracy,
            _ => None,
        };
        v.ok_or_else(|| {
            Error::Value(format!(
                "monitor `{}` has no value: training has no validation data",
                self.monitor
            ))
        })
    }

    /// Is `value` better than `reference` by more than `min_delta`?
    fn improves(&self, value: f32, reference: f32, min_delta: f32) -> bool {
        if self.higher_is_better() {
            value - min_delta.abs() > reference
        } else {
            value + min_delta.abs() < reference
        }
    }

    fn worst(&self) -> f32 {
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

#[derive(Debug, Clone, Default, PartialEq)]
struct StopState {
    best: Option<f32>,
    best_epoch: usize,
    wait: usize,
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
    fn on_train_begin(&mut self, _model: &mut Sequential) -> Result<()> {
        self.state = StopState::default();
        Ok(())
    }

    fn on_epoch_end(&mut self, log: &EpochLog, model: &mut Sequential) -> Result<Control> {
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
            s.best_weights = Some(model.weights());
        }
        s.wait += 1;
        let best = s.best.unwrap_or(watch.worst());
        if watch.improves(current, best, self.min_delta) {
            s.best = Some(current);
            s.best_epoch = log.epoch;
            if self.restore_best_weights {
                s.best_weights = Some(model.weights());
            }
            s.wait = 0;
            return Ok(Control::Continue);
        }
        if s.wait >= self.patience && log.epoch > 1 {
            s.stopped_epoch = Some(log.epoch);
            if let (true, Some(w)) = (self.restore_best_weights, &s.best_weights) {
                model.set_weights(w)?;
            }
            return Ok(Control::Stop);
        }
        Ok(Control::Continue)
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

#[derive(Debug, Clone, Default, PartialEq)]
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
    fn on_train_begin(&mut self, model: &mut Sequential) -> Result<()> {
        self.state = PlateauState::default();
        if model.compiled().is_some_and(|c| c.schedule.is_some()) {
            return Err(Error::Value(
                "reduce_lr_on_plateau cannot change a learning rate that a learning_rate_schedule sets"
                    .into(),
            ));
        }
        Ok(())
    }

    fn on_epoch_end(&mut self, log: &EpochLog, model: &mut Sequential) -> Result<Control> {
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
                let lr = model.current_learning_rate().unwrap_or(0.0);
                if lr > self.min_lr {
                    model.override_learning_rate((lr * self.factor).max(self.min_lr))?;
                    s.cooldown_left = self.cooldown;
                    s.wait = 0;
                }
            }
        }
        Ok(Control::Continue)
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
}

impl Callback for CsvLogger {
    fn on_train_begin(&mut self, _model: &mut Sequential) -> Result<()> {
        let exists = self.filename.exists();
        if !self.append || !exists {
            std::fs::write(
                &self.filename,
                "epoch,accuracy,learning_rate,loss,val_accuracy,val_loss\n",
            )
            .map_err(|e| Error::io(&self.filename, e))?;
        }
        Ok(())
    }

    fn on_epoch_end(&mut self, log: &EpochLog, _model: &mut Sequential) -> Result<Control> {
        let opt = |v: Option<f32>| v.map_or(String::new(), |v| v.to_string());
        let row = format!(
            "{},{},{},{},{},{}\n",
            log.epoch - 1,
            log.accuracy,
            log.learning_rate,
            log.loss,
            opt(log.val_accuracy),
            opt(log.val_loss)
        );
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(&self.filename)
            .map_err(|e| Error::io(&self.filename, e))?;
        file.write_all(row.as_bytes())
            .map_err(|e| Error::io(&self.filename, e))?;
        Ok(Control::Continue)
    }
}
