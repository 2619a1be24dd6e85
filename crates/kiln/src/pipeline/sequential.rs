//! Training a layer-stack model from its spec: load and prepare the data (cleaning and
//! normalization fitted on the training part only), train with the spec's callbacks in a
//! run folder, and evaluate on the held-out test split.

use std::sync::Arc;
use std::time::Instant;

use super::run_dir::{callbacks_for_run, Goal};
use super::RunOptions;
use crate::artifact::{FinalMetrics, Lineage, ModelInfo};
use crate::data::{
    drop_rows_seen_in, Cleaning, CleaningReport, Dataset, FittedNormalization, Normalization, Splits, Stage,
    TablePreprocessing,
};
use crate::error::{Error, Result};
use crate::nn::Sequential;
use crate::spec::{ModelSpec, TrainSpec};
use crate::train::{
    Callback, EvalData, Evaluation, FitOptions, History, ModelWriter, TrainData, Trainer, Validation,
};

#[derive(Debug)]
pub struct TrainOutcome {
    pub model: Sequential,
    pub info: ModelInfo,
    pub history: History,
    pub test: Evaluation,
    /// The final model on the validation split: the last epoch's figures, or the best
    /// epoch's when a callback restored its weights.
    pub validation: Option<Evaluation>,
    pub load_seconds: f64,
    /// Epochs that came from the checkpoint when resuming (0 for a fresh run).
    pub resumed_epochs: usize,
    /// For tabular data, what cleaning did to each split ("train", "validation", "test").
    pub cleaning: Vec<(String, CleaningReport)>,
    /// The layers whose weights came from [`RunOptions::init`].
    pub initialized: Vec<String>,
}

impl TrainOutcome {
    /// The trained model's loss (the spec's) and accuracy on `data` (Keras `evaluate`).
    pub fn evaluate(&mut self, data: &Dataset) -> Result<Evaluation> {
        let loss = self.info.training()?.loss();
        crate::train::evaluate(&mut self.model, &loss, EvalData::Samples(data), None)
    }
}

/// Loads the data, fits preprocessing on the training part, trains and evaluates on the
/// held-out test split.
pub fn train(spec: &TrainSpec, options: &RunOptions) -> Result<TrainOutcome> {
    train_with(spec, options, Vec::new())
}

/// [`train`], with more callbacks after the spec's (a progress display, say).
pub fn train_with(
    spec: &TrainSpec,
    options: &RunOptions,
    extra_callbacks: Vec<Box<dyn Callback>>,
) -> Result<TrainOutcome> {
    let load_start = Instant::now();
    let splits = spec.data.load(spec.training.seed, options.data_dir)?;
    train_on(spec, splits, options, extra_callbacks, load_start)
}

/// [`train_with`] on data already loaded (a cross-validation fold, say); `load_start` is
/// when loading began, for the reported load time.
pub fn train_on(
    spec: &TrainSpec,
    splits: Splits,
    options: &RunOptions,
    extra_callbacks: Vec<Box<dyn Callback>>,
    load_start: Instant,
) -> Result<TrainOutcome> {
    let t = &spec.training;
    let sha256 = splits.sha256.clone();
    let description = splits.description.clone();
    let Prepared {
        train,
        validation,
        test,
        normalization,
        table,
        cleaning,
    } = prepare_splits(spec, splits)?;
    // An empty test split would report test_accuracy 0 as if it were a result.
    if test.is_empty() {
        return Err(Error::too_few(
            format!(
                "test samples in {description} (training reports test metrics: raise test_fraction \
                 above 0 or give a test file with rows; `kiln cv` needs no test split)"
            ),
            0,
            1,
        ));
    }
    let train = match options.bootstrap {
        Some((seed, member)) => train.subset(&crate::data::bootstrap_indices(train.len(), seed, member)),
        None => train,
    };
    let load_seconds = load_start.elapsed().as_secs_f64();

    let input_shape = spec
        .model
        .input_shape
        .clone()
        .unwrap_or_else(|| train.sample_shape.clone());
    let mut model = Sequential::new(&input_shape, spec.model.layers.clone(), t.seed)?;
    let initialized = match options.init {
        Some(path) => {
            let source = crate::artifact::load(path)?;
            model.init_from(&spec.model, source.model.float(), &source.info.architecture, path)?
        }
        None => Vec::new(),
    };
    model.freeze_layers(&spec.model.frozen);
    let num_classes = [Some(&train), validation.as_ref(), Some(&test)]
        .into_iter()
        .flatten()
        .map(Dataset::num_classes)
        .max()
        .unwrap_or(0);
    model.check_classifier_output(num_classes)?;
    crate::nn::memory::check_training_memory(&model, t.batch_size)?;
    if let Some(a) = &spec.preprocessing.augmentation {
        a.check(&train.sample_shape)?;
        // Batches arrive normalized; moving a pixel normalized by another pixel's own
        // statistics to its place would corrupt it, so only a uniform scale goes with it.
        if matches!(
            spec.preprocessing.normalization,
            Normalization::ZScore | Normalization::MinMax
        ) {
            return Err(Error::unsupported(
                "preprocessing.augmentation with per-feature normalization (z_score, min_max)",
                "augmentation moves pixels, which per-feature normalization would then misscale; use { kind = \"scale\", max = … } with augmentation",
            ));
        }
    }
    let mut trainer = Trainer::new(t.optimizer.clone(), t.loss(), t.seed)
        .with_schedule(t.learning_rate_schedule.clone())?
        .with_clipping(t.gradient_clipping)?;

    let units = model.output_shape().numel();
    let mut info = ModelInfo {
        name: spec.name.clone().unwrap_or_else(|| "model".into()),
        architecture: ModelSpec {
            input_shape: Some(input_shape),
            ..spec.model.clone()
        },
        preprocessing: normalization,
        classes: match table.as_ref().and_then(|t| t.schema.class_names.clone()) {
            Some(names) => names,
            None => (0..units.max(num_classes)).map(|c| c.to_string()).collect(),
        },
        training: Some(t.clone()),
        data: Some(spec.data.without_folders()),
        lineage: Some(Lineage {
            kiln_version: env!("CARGO_PKG_VERSION").into(),
            data_sha256: sha256.clone(),
            data_description: description,
            seed: t.seed,
            epochs_trained: 0,
            created_unix_seconds: 0,
            metrics: FinalMetrics::default(),
            compressed: Vec::new(),
            ensemble: None,
        }),
        table,
        storage: None,
    };
    // A callback watching val_* needs validation data: say so now, not after an epoch.
    if validation.is_none() {
        if let Some((i, m)) = t
            .callbacks
            .iter()
            .enumerate()
            .find_map(|(i, c)| c.monitor().filter(|m| m.starts_with("val_")).map(|m| (i, m)))
        {
            return Err(Error::setting(
                format!("training.callbacks[{i}].monitor"),
                format!("\"{m}\""),
                format!(
                    "a value this run logs ({m} needs validation data: set training.validation_split above 0, or monitor \"{}\")",
                    &m[4..]
                ),
            ));
        }
    }
    let writer: Arc<dyn ModelWriter> = Arc::new(info.clone());
    let context = serde_json::json!({ "spec": spec, "data_sha256": sha256 });
    let mut run = callbacks_for_run(&t.callbacks, writer, options, &context, Goal::Epochs(t.epochs))?;
    let (mut callbacks, resume_from) = (std::mem::take(&mut run.callbacks), run.resume_from.take());
    callbacks.extend(extra_callbacks);
    let fit = FitOptions {
        epochs: t.epochs,
        batch_size: t.batch_size,
        validation: validation.as_ref().map_or(Validation::None, Validation::Data),
        shuffle: t.shuffle,
        seed: t.seed,
        verbose: options.verbose,
        checkpoint: run.checkpoint_target(&context),
        skip_nonfinite_batches: options.skip_nonfinite_batches,
        distributed: options.distributed,
        augmentation: spec.preprocessing.augmentation.as_ref(),
    };
    let data = TrainData::Samples(&train);
    let history = match &resume_from {
        Some(checkpoint) => trainer.resume_fit(&mut model, data, &fit, &mut callbacks, checkpoint)?,
        None => trainer.fit_with_callbacks(&mut model, data, &fit, &mut callbacks)?,
    };
    let test_eval = trainer.evaluate_in(&mut model, EvalData::Samples(&test), options.distributed)?;
    let final_validation = validation
        .as_ref()
        .map(|v| trainer.evaluate_in(&mut model, EvalData::Samples(v), options.distributed))
        .transpose()?;

    let last = history.last().cloned();
    let lineage = info.lineage_mut()?;
    lineage.epochs_trained = history.epochs.len();
    lineage.created_unix_seconds = crate::artifact::creation_time();
    lineage.metrics = FinalMetrics {
        loss: last.as_ref().map_or(0.0, |l| l.loss),
        accuracy: last.as_ref().map_or(0.0, |l| l.accuracy),
        val_loss: final_validation.map(|v| v.loss),
        val_accuracy: final_validation.map(|v| v.accuracy),
        test_loss: Some(test_eval.loss),
        test_accuracy: Some(test_eval.accuracy),
    };
    Ok(TrainOutcome {
        model,
        info,
        history,
        test: test_eval,
        validation: final_validation,
        load_seconds,
        resumed_epochs: resume_from.map_or(0, |c| c.progress.epochs_done),
        cleaning,
        initialized,
    })
}

/// The splits a run trains and is judged on, preprocessed with statistics fitted on the
/// training part only.
struct Prepared {
    train: Dataset,
    validation: Option<Dataset>,
    test: Dataset,
    normalization: FittedNormalization,
    table: Option<TablePreprocessing>,
    cleaning: Vec<(String, CleaningReport)>,
}

/// Splits off validation, then fits cleaning (tabular data) and normalization on what is
/// left for training — nothing of validation or test leaks in — and applies them to all.
fn prepare_splits(spec: &TrainSpec, splits: Splits) -> Result<Prepared> {
    let t = &spec.training;
    let Splits {
        train,
        mut test,
        schema,
        first_missing,
        ..
    } = splits;
    let (mut train, mut validation) = if t.validation_split > 0.0 {
        let (a, b) = train.into_split_tail(t.validation_split)?;
        (a, Some(b))
    } else {
        (train, None)
    };
    let cleaning_spec = spec.preprocessing.cleaning();
    let mut cleaning = Vec::new();
    let table = match schema {
        Some(schema) => {
            check_cleaning(&cleaning_spec)?;
            let table = TablePreprocessing::fit(schema, &cleaning_spec, &train, first_missing.as_deref())?;
            let raw_train = cleaning_spec.drop_duplicates.then(|| train.clone());
            let parts = [
                ("train", Some(&mut train), Stage::Train),
                ("validation", validation.as_mut(), Stage::Evaluate),
                ("test", Some(&mut test), Stage::Evaluate),
            ];
            for (name, part, stage) in parts {
                if let Some(part) = part {
                    // Held-out rows repeating a training row go first (as drop_duplicates
                    // before a split would have it), then the part is cleaned.
                    let repeats = match (&raw_train, stage) {
                        (Some(t), Stage::Evaluate) => {
                            let (kept, dropped) = drop_rows_seen_in(t, part);
                            *part = kept;
                            dropped
                        }
                        _ => 0,
                    };
                    let (clean, mut report) = table.apply(part, stage)?;
                    report.rows_in += repeats;
                    report.dropped_duplicates += repeats;
                    *part = clean;
                    cleaning.push((name.to_string(), report));
                }
            }
            if train.is_empty() {
                return Err(Error::too_few(
                    "training rows left after cleaning (loosen preprocessing.outliers or impute missing values instead of dropping)",
                    0,
                    1,
                ));
            }
            Some(table)
        }
        None if cleaning_spec != Cleaning::default() => {
            return Err(Error::unsupported(
                format!("cleaning the {} data set", spec.data.source_name()),
                "preprocessing.missing, outliers and drop_duplicates clean tabular (CSV) data",
            ))
        }
        None => None,
    };
    let normalization = spec.preprocessing.normalization.fit(&train)?;
    for part in [Some(&mut train), validation.as_mut(), Some(&mut test)]
        .into_iter()
        .flatten()
    {
        let size = part.sample_size();
        normalization.apply(&mut part.features, size)?;
    }
    Ok(Prepared {
        train,
        validation,
        test,
        normalization,
        table,
        cleaning,
    })
}

/// Outlier thresholds must be usable numbers.
fn check_cleaning(cleaning: &Cleaning) -> Result<()> {
    match cleaning.outliers.and_then(|o| o.threshold) {
        Some(k) if !(k >= 0.0 && k.is_finite()) => Err(Error::setting(
            "preprocessing.outliers.threshold",
            k,
            "a non-negative number",
        )),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    #[test]
    fn augmentation_refuses_per_pixel_normalization() {
        let text = r#"
[data]
source = "digits"
[preprocessing]
normalization = { kind = "z_score" }
augmentation = { transforms = [{ type = "random_flip" }] }
[model]
layers = [{ type = "flatten" }, { type = "dense", units = 10, activation = "softmax" }]
[training]
loss = "sparse_categorical_crossentropy"
epochs = 1
"#;
        let spec = TrainSpec::parse(text, Path::new("aug.toml")).unwrap();
        let e = train(&spec, &RunOptions::default()).unwrap_err().to_string();
        assert!(e.contains("per-feature normalization (z_score, min_max)"), "{e}");
    }
}
