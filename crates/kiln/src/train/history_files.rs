//! Keeps a run folder's `history.json` and `history.csv` current after every epoch, so
//! curves can be drawn (`kiln plot`) while training runs or after it crashed.

use std::path::PathBuf;

use super::{Callback, CallbackState, Control, EpochLog, FitState, History};
use crate::error::{Error, Result};
use crate::io::{csv_record, write_atomically};

pub const HISTORY_JSON: &str = "history.json";
pub const HISTORY_CSV: &str = "history.csv";

#[derive(Debug, Clone)]
pub struct HistoryFiles {
    dir: PathBuf,
    history: History,
}

impl HistoryFiles {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        HistoryFiles {
            dir: dir.into(),
            history: History::default(),
        }
    }

    fn write(&self) -> Result<()> {
        let json = serde_json::to_string_pretty(&self.history).expect("history serialises") + "\n";
        write_atomically(&self.dir.join(HISTORY_JSON), json.as_bytes())?;
        write_atomically(&self.dir.join(HISTORY_CSV), history_csv(&self.history).as_bytes())
    }
}

/// One row per epoch; empty cells where there was no validation data.
pub fn history_csv(history: &History) -> String {
    let mut text = csv_record(&[
        "epoch",
        "loss",
        "accuracy",
        "val_loss",
        "val_accuracy",
        "learning_rate",
        "seconds",
        "skipped_batches",
    ]);
    let opt = |v: Option<f32>| v.map_or(String::new(), |v| v.to_string());
    for e in &history.epochs {
        text += &csv_record(&[
            e.epoch.to_string(),
            e.loss.to_string(),
            e.accuracy.to_string(),
            opt(e.val_loss),
            opt(e.val_accuracy),
            e.learning_rate.to_string(),
            format!("{:.4}", e.seconds),
            e.skipped_batches.to_string(),
        ]);
    }
    text
}

impl Callback for HistoryFiles {
    fn on_train_begin(&mut self, _state: &mut FitState) -> Result<()> {
        std::fs::create_dir_all(&self.dir).map_err(|e| Error::output(&self.dir, e))?;
        self.history = History::default();
        Ok(())
    }

    fn on_epoch_end(&mut self, log: &EpochLog, _state: &mut FitState) -> Result<Control> {
        self.history.epochs.push(log.clone());
        self.write()?;
        Ok(Control::Continue)
    }

    fn state(&self) -> Option<CallbackState> {
        Some(CallbackState {
            values: serde_json::to_value(&self.history).expect("history serialises"),
            tensors: Vec::new(),
        })
    }

    fn restore(&mut self, state: CallbackState) -> Result<()> {
        self.history = serde_json::from_value(state.values).map_err(|e| Error::Corrupt {
            what: "the checkpoint's history".into(),
            message: e.to_string(),
        })?;
        self.write()
    }
}
