//! Hyper-parameter search: the spec as written (the baseline) and each trial of a search
//! space, every one scored the same way and returned best first. A layer-stack model is
//! scored by its final validation accuracy (or the mean accuracy of a k-fold
//! cross-validation); a language model by its validation loss.

use std::time::Instant;

use serde_json::Value;

use crate::data::Splits;
use crate::error::{Error, Result};
use crate::pipeline::{train_language_model, train_on, RunOptions};
use crate::spec::{LmSpec, Spec, TrainSpec};

use super::cv::cross_validate_splits;
use super::search::{SearchSpace, Segment, Trial};

/// How a trial is judged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scoring {
    /// The trained model on the spec's validation split (`validation_split` > 0).
    Validation,
    /// Mean over k stratified folds of the training data.
    CrossValidation(usize),
}

#[derive(Debug, Clone, PartialEq)]
pub struct TrialOutcome {
    /// 0 for the baseline (the spec as written), then the trials in the order run.
    pub index: usize,
    pub values: Vec<Value>,
    /// Validation (or mean cross-validation) accuracy: a layer-stack model's score, higher
    /// is better (a language model's next-token accuracy).
    pub accuracy: f64,
    /// Across folds, with cross-validation.
    pub accuracy_std: Option<f64>,
    /// Validation loss: a language model's score, lower is better.
    pub loss: f64,
    pub seconds: f64,
    pub spec: Spec,
    /// Why the trial failed (it diverged, say); its scores are then NaN and it ranks last.
    pub error: Option<String>,
}

/// Runs the baseline and every trial; `on_trial` sees each as it finishes. The result is
/// sorted best first (highest accuracy, then lowest loss, then earliest; for a language
/// model lowest loss, then earliest; failed trials last). Only when every trial fails is it
/// an error.
pub fn tune(
    spec: &Spec,
    space: &SearchSpace,
    trials: &[Trial],
    scoring: Scoring,
    options: &RunOptions,
    on_trial: &mut dyn FnMut(&TrialOutcome),
) -> Result<Vec<TrialOutcome>> {
    space.check_against(spec)?;
    let baseline = Trial {
        values: space.current_values(spec),
    };
    let candidates: Vec<Spec> = std::iter::once(&baseline)
        .chain(trials)
        .map(|t| space.apply(spec, t))
        .collect::<Result<_>>()?;
    let by_loss = matches!(spec, Spec::Gpt(_));
    if let (true, Scoring::CrossValidation(_)) = (by_loss, scoring) {
        return Err(Error::unsupported(
            "cross-validation (--folds) of a language model",
            "a language model is scored by the loss on its validation windows; cross-validation is for layer-stack models",
        ));
    }
    let split_of = |c: &Spec| match c {
        Spec::Sequential(s) => s.training.validation_split,
        Spec::Gpt(_) => 1.0,
    };
    if scoring == Scoring::Validation {
        if let Some((i, c)) = candidates.iter().enumerate().find(|(_, c)| split_of(c) <= 0.0) {
            return Err(Error::setting(
                match i {
                    0 => "training.validation_split".to_string(),
                    _ => format!("trial {i}: training.validation_split"),
                },
                split_of(c),
                "above 0 to score by validation; set it, or cross-validate with --folds K",
            ));
        }
    }
    // Data is loaded once unless the space changes what or how it loads.
    let reload = space.dimensions.iter().any(|(_, path, _)| touches_data(path));
    let shared = match (spec, reload) {
        (Spec::Sequential(s), false) => Some(s.data.load(s.training.seed, options.data_dir)?),
        _ => None,
    };
    let mut outcomes = Vec::with_capacity(candidates.len());
    for (index, (candidate, trial)) in candidates
        .into_iter()
        .zip(std::iter::once(&baseline).chain(trials))
        .enumerate()
    {
        let start = Instant::now();
        // A trial that fails (a learning rate that diverges, say) is recorded, not fatal.
        let scored = match &candidate {
            Spec::Sequential(c) => {
                let splits = match &shared {
                    Some(s) => s.clone(),
                    None => c.data.load(c.training.seed, options.data_dir)?,
                };
                score(c, splits, scoring, options)
            }
            Spec::Gpt(c) => score_language_model(c),
        };
        let (scores, error) = match scored {
            Ok(scores) => (scores, None),
            Err(e) => ((f64::NAN, None, f64::NAN), Some(e.to_string())),
        };
        let (accuracy, accuracy_std, loss) = scores;
        let outcome = TrialOutcome {
            index,
            values: trial.values.clone(),
            accuracy,
            accuracy_std,
            loss,
            seconds: start.elapsed().as_secs_f64(),
            spec: candidate,
            error,
        };
        on_trial(&outcome);
        outcomes.push(outcome);
    }
    if let Some(e) = outcomes
        .iter()
        .all(|o| o.error.is_some())
        .then(|| outcomes[0].error.clone())
        .flatten()
    {
        return Err(Error::too_few(
            format!("trials that succeeded (every trial failed; the baseline: {e})"),
            0,
            1,
        ));
    }
    outcomes.sort_by(|a, b| {
        a.error
            .is_some()
            .cmp(&b.error.is_some())
            .then(match by_loss {
                true => a.loss.total_cmp(&b.loss),
                false => b.accuracy.total_cmp(&a.accuracy),
            })
            .then(a.loss.total_cmp(&b.loss))
            .then(a.index.cmp(&b.index))
    });
    Ok(outcomes)
}

/// (accuracy, its std across folds, loss) of one candidate.
fn score(
    spec: &TrainSpec,
    splits: Splits,
    scoring: Scoring,
    options: &RunOptions,
) -> Result<(f64, Option<f64>, f64)> {
    let quiet = RunOptions {
        data_dir: options.data_dir,
        ..Default::default()
    };
    match scoring {
        Scoring::Validation => {
            let run = train_on(spec, splits, &quiet, Vec::new(), Instant::now())?;
            let v = run.validation.expect("validation_split > 0 was checked");
            Ok((f64::from(v.accuracy), None, f64::from(v.loss)))
        }
        Scoring::CrossValidation(k) => {
            let cv = cross_validate_splits(spec, &splits, k, &quiet, &mut |_| {})?;
            Ok((cv.accuracy.0, Some(cv.accuracy.1), cv.loss.0))
        }
    }
}

/// (next-token accuracy, none, validation loss) of a language model trained from `spec`.
fn score_language_model(spec: &LmSpec) -> Result<(f64, Option<f64>, f64)> {
    let run = train_language_model(spec, &RunOptions::default(), Vec::new())?;
    let accuracy = run
        .history
        .last()
        .and_then(|l| l.val_accuracy)
        .unwrap_or(f32::NAN);
    let loss = run.model.info.final_validation_loss.unwrap_or(f32::NAN);
    Ok((f64::from(accuracy), None, f64::from(loss)))
}

/// Whether a key changes the data loaded or its split (so it cannot be loaded once).
fn touches_data(path: &[Segment]) -> bool {
    match path {
        [Segment::Field(top), ..] if top == "data" => true,
        [Segment::Field(a), Segment::Field(b)] => a == "training" && b == "seed",
        _ => false,
    }
}
