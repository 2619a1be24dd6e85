//! Stratified k-fold cross-validation of a spec on its training data (its test split is
//! left untouched): every fold is held out once while the spec trains on the others.

use std::time::Instant;

use serde::Serialize;

use crate::data::Splits;
use crate::error::Result;
use crate::pipeline::{train_on, RunOptions};
use crate::spec::TrainSpec;

use super::{mean_std, stratified_folds};

/// One fold's run: the model trained on the other folds, judged on this one.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FoldOutcome {
    /// 1-based.
    pub fold: usize,
    pub train_samples: usize,
    pub held_out_samples: usize,
    pub loss: f32,
    pub accuracy: f32,
    pub epochs: usize,
    pub seconds: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CvOutcome {
    pub folds: Vec<FoldOutcome>,
    /// (mean, population std) over the folds.
    pub accuracy: (f64, f64),
    pub loss: (f64, f64),
}

/// Cross-validates `spec` with `k` stratified folds of its training split (folds drawn
/// from the spec's seed). `on_fold` sees each fold as it finishes. Runs keep no folder and
/// print nothing; `options` gives the data folder.
pub fn cross_validate(
    spec: &TrainSpec,
    k: usize,
    options: &RunOptions,
    on_fold: &mut dyn FnMut(&FoldOutcome),
) -> Result<CvOutcome> {
    let splits = spec.data.load(spec.training.seed, options.data_dir)?;
    cross_validate_splits(spec, &splits, k, options, on_fold)
}

/// [`cross_validate`] on data already loaded (a search reuses it across trials).
pub fn cross_validate_splits(
    spec: &TrainSpec,
    splits: &Splits,
    k: usize,
    options: &RunOptions,
    on_fold: &mut dyn FnMut(&FoldOutcome),
) -> Result<CvOutcome> {
    let pool = &splits.train;
    let folds = stratified_folds(&pool.labels, k, spec.training.seed)?;
    let quiet = RunOptions {
        data_dir: options.data_dir,
        ..Default::default()
    };
    let mut outcomes = Vec::with_capacity(k);
    for (i, held_out) in folds.iter().enumerate() {
        let start = Instant::now();
        let rest: Vec<usize> = folds
            .iter()
            .enumerate()
            .filter(|&(j, _)| j != i)
            .flat_map(|(_, f)| f.iter().copied())
            .collect();
        let mut fold_splits = Splits {
            train: pool.subset(&rest),
            test: pool.subset(held_out),
            description: format!("fold {} of {k} of {}", i + 1, splits.description),
            ..splits.clone_without_data()
        };
        // Categories from this fold's training rows only, as a real split would list them.
        if let Some(schema) = fold_splits.schema.as_mut() {
            schema.narrow_to(&mut fold_splits.train, &mut fold_splits.test);
        }
        let run = train_on(spec, fold_splits, &quiet, Vec::new(), start)?;
        let outcome = FoldOutcome {
            fold: i + 1,
            train_samples: rest.len(),
            held_out_samples: held_out.len(),
            loss: run.test.loss,
            accuracy: run.test.accuracy,
            epochs: run.history.epochs.len(),
            seconds: start.elapsed().as_secs_f64(),
        };
        on_fold(&outcome);
        outcomes.push(outcome);
    }
    let of =
        |f: fn(&FoldOutcome) -> f32| mean_std(&outcomes.iter().map(|o| f64::from(f(o))).collect::<Vec<_>>());
    Ok(CvOutcome {
        accuracy: of(|o| o.accuracy),
        loss: of(|o| o.loss),
        folds: outcomes,
    })
}
