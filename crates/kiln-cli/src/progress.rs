//! A live progress bar per epoch on a terminal (steps, ETA, running loss and accuracy),
//! ending each epoch with the same line `kiln train` prints when output is not a terminal.

use indicatif::{ProgressBar, ProgressStyle};
use kiln::train::{BatchProgress, Callback, Control, EpochLog, FitState};

/// Redraw the running figures every this many steps: formatting them every step would
/// cost more than the step itself on small models.
const MESSAGE_EVERY: usize = 16;

pub struct EpochProgressBar {
    bar: Option<ProgressBar>,
    epochs: usize,
    steps: usize,
    /// A language model's steps in the whole run (its lines say `step 500/2000`).
    total_steps: Option<usize>,
}

impl EpochProgressBar {
    pub fn new() -> Self {
        EpochProgressBar {
            bar: None,
            epochs: 0,
            steps: 0,
            total_steps: None,
        }
    }
}

impl Callback for EpochProgressBar {
    fn on_train_begin(&mut self, state: &mut FitState) -> kiln::Result<()> {
        self.total_steps = state.total_steps();
        Ok(())
    }

    fn on_epoch_begin(&mut self, epoch: usize, epochs: usize, steps: usize) {
        (self.epochs, self.steps) = (epochs, steps);
        let style = ProgressStyle::with_template(&format!(
            "Epoch {epoch}/{epochs} [{{bar:30}}] {{pos}}/{{len}} ETA {{eta}} {{msg}}"
        ))
        .expect("the template is valid")
        .progress_chars("=> ");
        self.bar = Some(ProgressBar::new(steps as u64).with_style(style));
    }

    fn on_batch_end(&mut self, p: &BatchProgress) {
        if let Some(bar) = &self.bar {
            bar.set_position(p.step as u64);
            if p.step.is_multiple_of(MESSAGE_EVERY) || p.step == p.steps {
                bar.set_message(format!("- loss: {:.4} - accuracy: {:.4}", p.loss, p.accuracy));
            }
        }
    }

    fn on_epoch_end(&mut self, log: &EpochLog, _state: &mut FitState) -> kiln::Result<Control> {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
        println!(
            "{}",
            log.progress_line(self.epochs, self.total_steps.unwrap_or(self.steps))
        );
        Ok(Control::Continue)
    }
}
