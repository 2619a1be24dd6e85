//! What `fit` returns: one record per epoch, as Keras's `History`.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochLog {
    /// 1-based.
    pub epoch: usize,
    pub loss: f32,
    pub accuracy: f32,
    pub val_loss: Option<f32>,
    pub val_accuracy: Option<f32>,
    /// Wall-clock seconds of the epoch, validation included.
    pub seconds: f64,
    /// Seconds of the training steps alone.
    pub train_seconds: f64,
    /// The learning rate at the end of the epoch (the next update's), as Keras logs it.
    pub learning_rate: f32,
    /// Batches left out because their loss was not finite (`skip_nonfinite_batches`).
    #[serde(default)]
    pub skipped_batches: usize,
    /// Seconds of the training steps spent in all-reduce (0 unless distributed).
    #[serde(default)]
    pub communication_seconds: f64,
    /// A token stream's steps done by the end of this period (None for epochs of samples).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<usize>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct History {
    pub epochs: Vec<EpochLog>,
}

impl History {
    pub fn last(&self) -> Option<&EpochLog> {
        self.epochs.last()
    }

    /// Median seconds per epoch (robust to one slow epoch on a shared machine).
    pub fn median_epoch_seconds(&self) -> f64 {
        let mut s: Vec<f64> = self.epochs.iter().map(|e| e.seconds).collect();
        s.sort_by(f64::total_cmp);
        match s.len() {
            0 => 0.0,
            n if n % 2 == 1 => s[n / 2],
            n => (s[n / 2 - 1] + s[n / 2]) / 2.0,
        }
    }
}

impl EpochLog {
    fn step_line(&self, step: usize, steps: usize) -> String {
        let mut line = format!(
            "step {step:>6}/{steps}: train loss {:.4}, accuracy {:.4}",
            self.loss, self.accuracy
        );
        if let (Some(l), Some(a)) = (self.val_loss, self.val_accuracy) {
            line += &format!(", val loss {l:.4}, val accuracy {a:.4}");
        }
        line += &format!(", lr {:.2e}, {:.1} s", self.learning_rate, self.seconds);
        if self.communication_seconds > 0.0 {
            line += &format!(
                ", allreduce {:.0}%",
                100.0 * self.communication_seconds / self.train_seconds.max(1e-9)
            );
        }
        line
    }

    /// One line in the style of Keras `verbose=2`.
    /// A token stream's evaluation gives `step 500/2000: train loss …, val loss …, lr …`,
    /// with `steps` the run's total.
    pub fn progress_line(&self, epochs: usize, steps: usize) -> String {
        if let Some(step) = self.step {
            return self.step_line(step, steps);
        }
        let mut line = format!(
            "Epoch {}/{epochs} - {steps}/{steps} - {:.1}s - loss: {:.4} - accuracy: {:.4}",
            self.epoch, self.seconds, self.loss, self.accuracy
        );
        if let (Some(l), Some(a)) = (self.val_loss, self.val_accuracy) {
            line += &format!(" - val_loss: {l:.4} - val_accuracy: {a:.4}");
        }
        if self.communication_seconds > 0.0 {
            line += &format!(
                " - allreduce: {:.0}%",
                100.0 * self.communication_seconds / self.train_seconds.max(1e-9)
            );
        }
        if self.skipped_batches > 0 {
            line += &format!(" - skipped {} non-finite batches", self.skipped_batches);
        }
        line
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_line_follows_keras_verbose_2() {
        let log = EpochLog {
            epoch: 3,
            loss: 0.05214,
            accuracy: 0.98381,
            val_loss: Some(0.07123),
            val_accuracy: Some(0.979),
            seconds: 0.94,
            train_seconds: 0.8,
            learning_rate: 0.001,
            skipped_batches: 0,
            communication_seconds: 0.0,
            step: None,
        };
        assert_eq!(
            log.progress_line(10, 750),
            "Epoch 3/10 - 750/750 - 0.9s - loss: 0.0521 - accuracy: 0.9838 - val_loss: 0.0712 - val_accuracy: 0.9790"
        );
    }
}
