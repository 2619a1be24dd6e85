//! The end-to-end jobs the `kiln` binary runs: train a spec's model (a layer stack or a
//! language model) in a run folder, reload a model's test data, read prediction input.
//! Kept in the library so programs and tests share them.

pub mod language_model;
mod reload;
mod run_dir;
mod sequential;

use std::path::Path;

use crate::train::Collective;

pub use language_model::{train_language_model, LmOutcome};
pub use reload::{
    fine_tune, load_calibration_samples, load_prediction_input, load_test_split, prepare_for_model,
};
pub use run_dir::{spec_of_run, CHECKPOINT_FILE};
pub use sequential::{train, train_on, train_with, TrainOutcome};

#[derive(Debug, Clone, Copy, Default)]
pub struct RunOptions<'a> {
    /// Overrides where MNIST is looked for (`--data-dir`).
    pub data_dir: Option<&'a Path>,
    /// One line per epoch on stdout.
    pub verbose: bool,
    /// A folder for the run's history.json and history.csv (and its checkpoint); none
    /// kept when unset.
    pub run_dir: Option<&'a Path>,
    /// Save a training checkpoint in `run_dir` after every epoch, to resume from.
    pub checkpoints: bool,
    /// Continue from the checkpoint in `run_dir` instead of starting afresh.
    pub resume: bool,
    /// Skip batches whose loss is not finite instead of stopping with an error.
    pub skip_nonfinite_batches: bool,
    /// Train data-parallel in this group. Every rank calls `train` with the same spec and
    /// options (the same run folder too: it names the callbacks' files, which only rank 0
    /// writes); a checkpoint to resume from is read by rank 0 and sent to the others, so
    /// they need not see its file.
    pub distributed: Option<&'a dyn Collective>,
    /// Start from this model's weights: every layer with the same name (and shape).
    pub init: Option<&'a Path>,
    /// Train on a bootstrap sample of the (prepared) training part: (seed, member) of
    /// [`crate::select::bootstrap_indices`], for bagging.
    pub bootstrap: Option<(u64, usize)>,
}
