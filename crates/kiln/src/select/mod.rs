//! Model selection: stratified k-fold cross-validation, hyper-parameter search over any
//! spec setting, and bagged ensembles. Each trains through [`crate::pipeline::train_on`],
//! so cleaning and normalization are fitted on each run's own training part.

mod cv;
mod ensemble;
mod search;
mod tune;

pub use crate::artifact::EnsembleInfo;
pub use crate::data::{bootstrap_indices, stratified_folds};
pub use cv::{cross_validate, cross_validate_splits, CvOutcome, FoldOutcome};
pub use ensemble::{train_ensemble, EnsembleOutcome};
pub use search::{Dimension, SearchSpace, Segment, Strategy, Trial};
pub use tune::{tune, Scoring, TrialOutcome};

/// Mean and population standard deviation (as scikit-learn's `scores.std()` reports).
pub fn mean_std(values: &[f64]) -> (f64, f64) {
    let n = values.len().max(1) as f64;
    let mean = values.iter().sum::<f64>() / n;
    let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n;
    (mean, var.sqrt())
}
