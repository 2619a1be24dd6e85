//! Bagging: members trained with one spec on bootstrap samples of its training data (each
//! with its own seed for weights, shuffling and dropout), their predicted probabilities
//! averaged. The ensemble is saved as one artifact that eval, predict, inspect and serve
//! accept as they accept a single model.

use std::time::Instant;

use crate::artifact::{EnsembleInfo, ModelInfo};
use crate::data::Stage;
use crate::error::{Error, Result};
use crate::nn::Ensemble;
use crate::pipeline::{prepare_for_model, train_on, RunOptions, TrainOutcome};
use crate::spec::TrainSpec;
use crate::train::{EvalData, Evaluation};

pub struct EnsembleOutcome {
    pub model: Ensemble,
    pub info: ModelInfo,
    pub members: Vec<Evaluation>,
    pub test: Evaluation,
}

/// Trains `count` members of `spec` on bootstrap samples of its training split and
/// combines them; `on_member` sees each member's run as it finishes.
pub fn train_ensemble(
    spec: &TrainSpec,
    count: usize,
    options: &RunOptions,
    on_member: &mut dyn FnMut(usize, &TrainOutcome),
) -> Result<EnsembleOutcome> {
    if count < 2 {
        return Err(Error::setting(
            "--members",
            count,
            "an ensemble needs at least 2 members",
        ));
    }
    let splits = spec.data.load(spec.training.seed, options.data_dir)?;
    let raw_test = splits.test.clone();
    let mut shared = Some(splits); // the last member takes it rather than a copy
    let mut runs: Vec<TrainOutcome> = Vec::with_capacity(count);
    for m in 0..count {
        let mut member_spec = spec.clone();
        member_spec.training.seed = spec.training.seed.wrapping_add(m as u64);
        let member_options = RunOptions {
            data_dir: options.data_dir,
            bootstrap: Some((spec.training.seed, m)),
            ..Default::default()
        };
        let member_splits = match m + 1 == count {
            true => shared.take(),
            false => shared.clone(),
        }
        .expect("the data is kept until the last member");
        let run = train_on(
            &member_spec,
            member_splits,
            &member_options,
            Vec::new(),
            Instant::now(),
        )?;
        on_member(m, &run);
        runs.push(run);
    }
    let members: Vec<Evaluation> = runs.iter().map(|r| r.test).collect();
    let mut runs = runs.into_iter();
    let first = runs.next().expect("at least 2 members");
    let mut info = first.info;
    let mut model = Ensemble::new(
        std::iter::once(first.model)
            .chain(runs.map(|r| r.model))
            .collect(),
    )?;
    info.training = Some(spec.training.clone());
    let test = prepare_for_model(&info, raw_test, Stage::Evaluate)?;
    let loss = spec.training.loss();
    let evaluation = crate::train::evaluate(&mut model, &loss, EvalData::Samples(&test), None)?;
    let lineage = info.lineage_mut()?;
    lineage.metrics.test_loss = Some(evaluation.loss);
    lineage.metrics.test_accuracy = Some(evaluation.accuracy);
    lineage.metrics.val_loss = None;
    lineage.metrics.val_accuracy = None;
    lineage.ensemble = Some(EnsembleInfo {
        members: count,
        sampling: "bootstrap".into(),
        combine: "average".into(),
        member_test_accuracy: members.iter().map(|e| e.accuracy).collect(),
        member_test_loss: members.iter().map(|e| e.loss).collect(),
    });
    Ok(EnsembleOutcome {
        model,
        info,
        members,
        test: evaluation,
    })
}
