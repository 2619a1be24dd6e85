//! The end-to-end jobs the `kiln` binary runs: train from a spec, reload a model's test
//! data, read prediction input. Kept in the library so programs and tests share them.

use std::path::Path;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use crate::artifact::{FinalMetrics, Lineage, ModelInfo};
use crate::data::{read_feature_rows, read_idx, Dataset, FittedNormalization, Splits};
use crate::error::{Error, Result};
use crate::nn::Sequential;
use crate::spec::{ModelSpec, TrainSpec};
use crate::train::{Evaluation, FitOptions, History, Validation};

pub struct RunOptions<'a> {
    /// Overrides where MNIST is looked for (`--data-dir`).
    pub data_dir: Option<&'a Path>,
    /// One line per epoch on stdout.
    pub verbose: bool,
}

pub struct TrainOutcome {
    pub model: Sequential,
    pub info: ModelInfo,
    pub history: History,
    pub test: Evaluation,
    pub load_seconds: f64,
}

/// Loads the data, fits preprocessing on the training part, trains and evaluates on the
/// held-out test split.
pub fn train(spec: &TrainSpec, options: &RunOptions) -> Result<TrainOutcome> {
    let t = &spec.training;
    let load_start = Instant::now();
    let Splits {
        train,
        mut test,
        sha256,
        description,
    } = spec.data.load(t.seed, options.data_dir)?;
    let (mut train, mut validation) = if t.validation_split > 0.0 {
        let (a, b) = train.into_split_tail(t.validation_split)?;
        (a, Some(b))
    } else {
        (train, None)
    };
    // Statistics from the training part only: nothing of validation or test leaks in.
    let normalization = spec.preprocessing.normalization.fit(&train)?;
    for part in [Some(&mut train), validation.as_mut(), Some(&mut test)]
        .into_iter()
        .flatten()
    {
        let size = part.sample_size();
        normalization.apply(&mut part.features, size)?;
    }
    let load_seconds = load_start.elapsed().as_secs_f64();

    let input_shape = spec
        .model
        .input_shape
        .clone()
        .unwrap_or_else(|| train.sample_shape.clone());
    let mut model = Sequential::new(&input_shape, spec.model.layers.clone(), t.seed)?;
    let num_classes = [Some(&train), validation.as_ref(), Some(&test)]
        .into_iter()
        .flatten()
        .map(Dataset::num_classes)
        .max()
        .unwrap_or(0);
    model.check_classifier_output(num_classes)?;
    model.compile(t.optimizer.clone(), t.loss(), t.seed);
    model.set_learning_rate_schedule(t.learning_rate_schedule.clone())?;
    model.set_gradient_clipping(t.gradient_clipping)?;
    let fit = FitOptions {
        epochs: t.epochs,
        batch_size: t.batch_size,
        validation: validation.as_ref().map_or(Validation::None, Validation::Data),
        shuffle: t.shuffle,
        seed: t.seed,
        verbose: options.verbose,
    };
    let mut callbacks = t
        .callbacks
        .iter()
        .map(|c| c.build())
        .collect::<Result<Vec<_>>>()?;
    let history = model.fit_with_callbacks(&train, &fit, &mut callbacks)?;
    let test_eval = model.evaluate(&test, 1024)?;

    let last = history.last().cloned();
    let units = model.output_shape().numel();
    let info = ModelInfo {
        name: spec.name.clone().unwrap_or_else(|| "model".into()),
        architecture: ModelSpec {
            input_shape: Some(input_shape),
            layers: spec.model.layers.clone(),
        },
        preprocessing: normalization,
        classes: (0..units.max(num_classes)).map(|c| c.to_string()).collect(),
        training: t.clone(),
        data: spec.data.clone(),
        lineage: Lineage {
            kiln_version: env!("CARGO_PKG_VERSION").into(),
            data_sha256: sha256,
            data_description: description,
            seed: t.seed,
            epochs_trained: history.epochs.len(),
            created_unix_seconds: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            metrics: FinalMetrics {
                loss: last.as_ref().map_or(0.0, |l| l.loss),
                accuracy: last.as_ref().map_or(0.0, |l| l.accuracy),
                val_loss: last.as_ref().and_then(|l| l.val_loss),
                val_accuracy: last.as_ref().and_then(|l| l.val_accuracy),
                test_loss: Some(test_eval.loss),
                test_accuracy: Some(test_eval.accuracy),
            },
        },
    };
    Ok(TrainOutcome {
        model,
        info,
        history,
        test: test_eval,
        load_seconds,
    })
}

/// The test split a model was evaluated on, reloaded from its recorded data source and
/// preprocessed the way the model expects.
pub fn load_test_split(info: &ModelInfo, data_dir: Option<&Path>) -> Result<Dataset> {
    let mut test = info.data.load(info.training.seed, data_dir)?.test;
    let size = test.sample_size();
    info.preprocessing.apply(&mut test.features, size)?;
    Ok(test)
}

/// Samples to predict on, from an IDX file (images) or a CSV of feature rows, with the
/// model's preprocessing applied: (values, rows).
pub fn load_prediction_input(
    path: &Path,
    sample_size: usize,
    preprocessing: &FittedNormalization,
) -> Result<(Vec<f32>, usize)> {
    let (mut values, rows) = if looks_like_idx(path)? {
        let idx = read_idx(path)?;
        let rows = idx.dims.first().copied().unwrap_or(0);
        if rows == 0 {
            return Err(Error::data(path, "holds no samples (its first dimension is 0)"));
        }
        let per_row: usize = idx.dims.iter().skip(1).product();
        if per_row != sample_size {
            return Err(Error::data(
                path,
                format!("IDX samples have shape {:?} ({per_row} values), the model expects {sample_size} values per sample", &idx.dims[1..]),
            ));
        }
        (idx.data.iter().map(|&v| v as f32).collect(), rows)
    } else {
        let (values, rows, _) = read_feature_rows(path, Some(sample_size))?;
        (values, rows)
    };
    preprocessing.apply(&mut values, sample_size)?;
    Ok((values, rows))
}

/// IDX rather than CSV: the content (decompressed if gzip) starts with IDX's two zero
/// bytes, which no text file does. Any type code counts, so that an unsupported one gets
/// the IDX reader's precise error rather than a CSV parse failure.
fn looks_like_idx(path: &Path) -> Result<bool> {
    use std::io::Read;
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut raw = std::io::BufReader::new(file);
    let mut magic = [0u8; 2];
    let is_gzip = raw.read_exact(&mut magic).is_ok() && magic == [0x1f, 0x8b];
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut reader: Box<dyn Read> = if is_gzip {
        Box::new(flate2::read::GzDecoder::new(file))
    } else {
        Box::new(file)
    };
    let mut head = [0u8; 2];
    Ok(reader.read_exact(&mut head).is_ok() && head == [0, 0])
}
