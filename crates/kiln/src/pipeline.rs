//! The end-to-end jobs the `kiln` binary runs: train from a spec, reload a model's test
//! data, read prediction input. Kept in the library so programs and tests share them.

use std::path::Path;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use crate::artifact::{FinalMetrics, Lineage, ModelInfo};
use crate::data::{
    drop_rows_seen_in, read_feature_rows, read_idx, Cleaning, CleaningReport, Dataset, FittedNormalization,
    Normalization, Splits, Stage, TablePreprocessing,
};
use crate::error::{Error, Result};
use crate::nn::Sequential;
use crate::spec::{ModelSpec, TrainSpec};
use crate::train::checkpoint::{as_read_back, first_difference};
use crate::train::{
    Callback, Checkpoint, CheckpointTarget, Collective, Evaluation, FitOptions, History, HistoryFiles, Inert,
    Validation,
};

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

/// The checkpoint's file name inside a run folder.
pub const CHECKPOINT_FILE: &str = "checkpoint.safetensors";

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
    let train = match options.bootstrap {
        Some((seed, member)) => train.subset(&crate::select::bootstrap_indices(train.len(), seed, member)),
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
            model.init_from(&spec.model, &source.model, &source.info.architecture, path)?
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
    if let Some(a) = &spec.preprocessing.augmentation {
        a.check(&train.sample_shape)?;
        // Batches arrive normalized; moving a pixel normalized by another pixel's own
        // statistics to its place would corrupt it, so only a uniform scale goes with it.
        if matches!(
            spec.preprocessing.normalization,
            Normalization::ZScore | Normalization::MinMax
        ) {
            return Err(Error::Value(
                "preprocessing.augmentation moves pixels, which per-feature normalization (z_score, min_max) would then misscale; use { kind = \"scale\", max = … } with augmentation".into(),
            ));
        }
    }
    model.compile(t.optimizer.clone(), t.loss(), t.seed);
    model.set_learning_rate_schedule(t.learning_rate_schedule.clone())?;
    model.set_gradient_clipping(t.gradient_clipping)?;

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
        training: t.clone(),
        data: spec.data.clone(),
        lineage: Lineage {
            kiln_version: env!("CARGO_PKG_VERSION").into(),
            data_sha256: sha256,
            data_description: description,
            seed: t.seed,
            epochs_trained: 0,
            created_unix_seconds: 0,
            metrics: FinalMetrics::default(),
            compressed: Vec::new(),
            ensemble: None,
        },
        table,
    };
    // A callback watching val_* needs validation data: say so now, not after an epoch.
    if validation.is_none() {
        if let Some((i, m)) = t
            .callbacks
            .iter()
            .enumerate()
            .find_map(|(i, c)| c.monitor().filter(|m| m.starts_with("val_")).map(|m| (i, m)))
        {
            return Err(Error::Value(format!(
                "training.callbacks[{i}].monitor = \"{m}\" needs validation data; set training.validation_split above 0 or monitor \"{}\"",
                &m[4..]
            )));
        }
    }
    let is_root = options.distributed.is_none_or(|g| g.rank() == 0);
    let mut callbacks = t
        .callbacks
        .iter()
        .map(|c| {
            let mut c = c.clone();
            if let Some(dir) = options.run_dir {
                c.resolve_paths(dir);
            }
            let built = c.build(Some(&info))?;
            Ok(match c.writes_files() && !is_root {
                true => Box::new(Inert::replacing(built.as_ref())) as Box<dyn Callback>,
                false => built,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let context = serde_json::json!({ "spec": spec, "data_sha256": info.lineage.data_sha256 });
    let checkpoint_path = options
        .run_dir
        .filter(|_| options.checkpoints)
        .map(|d| d.join(CHECKPOINT_FILE));
    let resume_from = match (options.run_dir, options.resume) {
        (Some(dir), _) if is_root => {
            callbacks.push(Box::new(HistoryFiles::new(dir)));
            prepare_run_dir(dir, options.resume, &context, t.epochs)?
        }
        (Some(dir), _) => {
            // Another rank's run folder: hold the history writer's place, touch nothing.
            callbacks.push(Box::new(Inert::replacing(&HistoryFiles::new(dir))));
            None
        }
        (None, true) if is_root => {
            return Err(Error::Value(
                "resuming needs the run folder to resume from".into(),
            ))
        }
        (None, _) => None,
    };
    let resume_from = match options.distributed {
        Some(group) => share_checkpoint(group, resume_from)?,
        None => resume_from,
    };
    callbacks.extend(extra_callbacks);
    let fit = FitOptions {
        epochs: t.epochs,
        batch_size: t.batch_size,
        validation: validation.as_ref().map_or(Validation::None, Validation::Data),
        shuffle: t.shuffle,
        seed: t.seed,
        verbose: options.verbose,
        checkpoint: checkpoint_path.as_deref().map(|path| CheckpointTarget {
            path,
            context: &context,
        }),
        skip_nonfinite_batches: options.skip_nonfinite_batches,
        distributed: options.distributed,
        augmentation: spec.preprocessing.augmentation.as_ref(),
    };
    let history = match &resume_from {
        Some(checkpoint) => model.resume_fit(&train, &fit, &mut callbacks, checkpoint)?,
        None => model.fit_with_callbacks(&train, &fit, &mut callbacks)?,
    };
    let test_eval = model.evaluate_in(&test, 1024, options.distributed)?;
    let final_validation = validation
        .as_ref()
        .map(|v| model.evaluate_in(v, 1024, options.distributed))
        .transpose()?;

    let last = history.last().cloned();
    info.lineage.epochs_trained = history.epochs.len();
    info.lineage.created_unix_seconds = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    info.lineage.metrics = FinalMetrics {
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
            let parts = [("train", Some(&mut train), Stage::Train), ("validation", validation.as_mut(), Stage::Evaluate), ("test", Some(&mut test), Stage::Evaluate)];
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
                return Err(Error::Value("cleaning dropped every training row; loosen preprocessing.outliers or impute missing values instead of dropping".into()));
            }
            Some(table)
        }
        None if cleaning_spec != Cleaning::default() => {
            return Err(Error::Value(format!(
                "preprocessing.missing, outliers and drop_duplicates clean tabular (CSV) data; the {} data set has none to clean",
                spec.data.source_name()
            )))
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
        Some(k) if !(k >= 0.0 && k.is_finite()) => Err(Error::Value(format!(
            "preprocessing.outliers.threshold = {k} must be a non-negative number"
        ))),
        _ => Ok(()),
    }
}

/// Held-out data (raw, as its source loads it) prepared as the model's training data was:
/// cleaned and encoded if tabular (`stage` says whether rows may be dropped), normalized.
pub fn prepare_for_model(info: &ModelInfo, raw: Dataset, stage: Stage) -> Result<Dataset> {
    let mut data = match &info.table {
        Some(table) => table.apply(&raw, stage)?.0,
        None => raw,
    };
    let size = data.sample_size();
    info.preprocessing.apply(&mut data.features, size)?;
    Ok(data)
}

/// A model's data source loaded again, its schema checked against the model's (the file
/// must not have changed in a way that changes the columns).
fn reload_data(info: &ModelInfo, data_dir: Option<&Path>) -> Result<Splits> {
    let splits = info.data.load(info.training.seed, data_dir)?;
    if let (Some(table), Some(schema)) = (&info.table, &splits.schema) {
        if &table.schema != schema {
            return Err(Error::Value(format!(
                "the data ({}) no longer has the columns and categories the model was trained on",
                splits.description
            )));
        }
    }
    Ok(splits)
}

/// Rank 0's checkpoint to resume from, on every rank (none: a fresh run), so ranks on
/// machines that do not share rank 0's run folder resume too.
fn share_checkpoint(group: &dyn Collective, mine: Option<Checkpoint>) -> Result<Option<Checkpoint>> {
    let origin = Path::new("rank 0's checkpoint");
    let mut bytes = match (&mine, group.rank()) {
        (Some(c), 0) => c.encode(origin)?,
        _ => Vec::new(),
    };
    group.broadcast_bytes(&mut bytes);
    match (mine, bytes.is_empty()) {
        (Some(c), _) => Ok(Some(c)),
        (None, true) => Ok(None),
        (None, false) => Checkpoint::decode(&bytes, origin).map(Some),
    }
}

/// The spec a run folder's checkpoint was trained from (to resume without naming it).
pub fn spec_of_run(dir: &Path) -> Result<TrainSpec> {
    let path = dir.join(CHECKPOINT_FILE);
    if !path.exists() {
        return Err(Error::data(
            dir,
            format!("holds no {CHECKPOINT_FILE} to resume from"),
        ));
    }
    let checkpoint = Checkpoint::load(&path)?;
    let spec = checkpoint
        .progress
        .context
        .get("spec")
        .cloned()
        .unwrap_or_default();
    serde_json::from_value(spec).map_err(|e| Error::data(&path, format!("its stored spec is invalid: {e}")))
}

/// Creates the run folder; when resuming, loads its checkpoint and checks that it was made
/// by this spec on this data and has epochs left to train. A fresh run refuses a folder
/// that already holds a checkpoint, so nothing saved is overwritten.
fn prepare_run_dir(
    dir: &Path,
    resume: bool,
    context: &serde_json::Value,
    epochs: usize,
) -> Result<Option<Checkpoint>> {
    let path = dir.join(CHECKPOINT_FILE);
    if !resume {
        if path.exists() {
            return Err(Error::Value(format!(
                "{} already holds a training checkpoint; resume it, or choose another run folder",
                dir.display()
            )));
        }
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        return Ok(None);
    }
    if !path.exists() {
        return Err(Error::data(
            dir,
            format!("holds no {CHECKPOINT_FILE} to resume from"),
        ));
    }
    remove_interrupted_writes(dir)?;
    let checkpoint = Checkpoint::load(&path)?;
    let p = &checkpoint.progress;
    if let Some(field) = first_difference(&comparable(&p.context), &comparable(context), "") {
        return Err(Error::data(
            &path,
            format!("was made with a different `{field}` than this run's; resume with the spec and data it was made with"),
        ));
    }
    if p.stopped {
        return Err(Error::data(
            &path,
            format!(
                "training stopped early after epoch {} (a callback ended it); nothing to resume",
                p.epochs_done
            ),
        ));
    }
    if p.epochs_done >= epochs {
        return Err(Error::data(
            &path,
            format!(
                "already holds {} trained epochs of the {epochs} asked for; ask for more epochs to train further",
                p.epochs_done
            ),
        ));
    }
    Ok(Some(checkpoint))
}

/// Deletes the temporary files of writes a killed run left unfinished (`NAME.tmp-PID`
/// for the run folder's own files); the files they were replacing are intact.
fn remove_interrupted_writes(dir: &Path) -> Result<()> {
    let ours = [
        CHECKPOINT_FILE,
        "history.json",
        "history.csv",
        "model.safetensors",
    ];
    let entries = std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))?;
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let leftover = ours.iter().any(|f| {
            name.strip_prefix(f)
                .and_then(|rest| rest.strip_prefix(".tmp-"))
                .is_some_and(|pid| !pid.is_empty() && pid.bytes().all(|b| b.is_ascii_digit()))
        });
        if leftover && entry.path().is_file() {
            std::fs::remove_file(entry.path()).map_err(|e| Error::io(entry.path(), e))?;
        }
    }
    Ok(())
}

/// The context with what a resumed run may change left out: the epoch count (it may ask
/// for more) and the name (the same spec under another file name).
fn comparable(context: &serde_json::Value) -> serde_json::Value {
    let mut c = as_read_back(context);
    if let Some(spec) = c.get_mut("spec").and_then(|s| s.as_object_mut()) {
        spec.remove("name");
        if let Some(t) = spec.get_mut("training").and_then(|t| t.as_object_mut()) {
            t.remove("epochs");
        }
    }
    c
}

/// The test split a model was evaluated on, reloaded from its recorded data source and
/// preprocessed the way the model expects.
pub fn load_test_split(info: &ModelInfo, data_dir: Option<&Path>) -> Result<Dataset> {
    prepare_for_model(info, reload_data(info, data_dir)?.test, Stage::Evaluate)
}

/// Trains a loaded model `epochs` more epochs on its own training data and settings
/// (the data source, seed, optimizer, loss, batch size and validation split it records;
/// a fresh optimizer), after `prepare(model, steps per epoch)` (which may set pruning,
/// say) — the fine-tuning step of compression. Returns the final test evaluation.
pub fn fine_tune(
    model: &mut Sequential,
    info: &ModelInfo,
    data_dir: Option<&Path>,
    epochs: usize,
    prepare: impl FnOnce(&mut Sequential, usize) -> Result<()>,
) -> Result<Evaluation> {
    let t = &info.training;
    let Splits { train, test, .. } = reload_data(info, data_dir)?;
    let train = prepare_for_model(info, train, Stage::Train)?;
    let test = prepare_for_model(info, test, Stage::Evaluate)?;
    model.compile(t.optimizer.clone(), t.loss(), t.seed);
    model.freeze_layers(&info.architecture.frozen);
    let held_out = (train.len() as f64 * t.validation_split as f64).ceil() as usize;
    let steps_per_epoch = (train.len() - held_out.min(train.len())).div_ceil(t.batch_size.max(1));
    prepare(model, steps_per_epoch)?;
    let options = FitOptions {
        epochs,
        batch_size: t.batch_size,
        validation: match t.validation_split > 0.0 {
            true => Validation::Split(t.validation_split),
            false => Validation::None,
        },
        shuffle: t.shuffle,
        seed: t.seed,
        ..Default::default()
    };
    model.fit(&train, &options)?;
    model.set_pruning(None)?;
    model.evaluate(&test, 1024)
}

/// The first `count` samples of a model's training data (its recorded source and seed,
/// the model's preprocessing applied): a representative sample for calibrating
/// quantization. Never test data, whose figures the compressed model is judged by.
pub fn load_calibration_samples(info: &ModelInfo, data_dir: Option<&Path>, count: usize) -> Result<Dataset> {
    let train = reload_data(info, data_dir)?.train;
    let count = count.min(train.len());
    let size = train.sample_size();
    let sample = Dataset {
        features: train.features[..count * size].to_vec(),
        sample_shape: train.sample_shape.clone(),
        labels: train.labels[..count].to_vec(),
    };
    prepare_for_model(info, sample, Stage::Evaluate)
}

/// Samples to predict on, from an IDX file (images) or a CSV of feature rows (for a
/// tabular model, raw rows matched to its columns by name), prepared as the model's
/// training data was: (values, rows).
pub fn load_prediction_input(path: &Path, info: &ModelInfo) -> Result<(Vec<f32>, usize)> {
    let sample_size: usize = info.architecture.input_shape.iter().flatten().product();
    if let Some(table) = &info.table {
        let (raw, rows) = table.schema.read_rows(path)?;
        let raw = Dataset::new(raw, vec![table.schema.columns.len()], vec![0; rows])?;
        let data =
            prepare_for_model(info, raw, Stage::Predict).map_err(|e| Error::data(path, e.to_string()))?;
        return Ok((data.features, rows));
    }
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
    info.preprocessing.apply(&mut values, sample_size)?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

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

    #[test]
    fn names_the_first_differing_field() {
        let a = json!({"spec": {"training": {"batch_size": 64, "lr": [1, 2]}}, "data_sha256": "x"});
        let b = json!({"spec": {"training": {"batch_size": 32, "lr": [1, 2]}}, "data_sha256": "x"});
        assert_eq!(
            first_difference(&a, &b, "").as_deref(),
            Some("spec.training.batch_size")
        );
        let c = json!({"spec": {"training": {"batch_size": 64, "lr": [1, 3]}}, "data_sha256": "x"});
        assert_eq!(
            first_difference(&a, &c, "").as_deref(),
            Some("spec.training.lr[1]")
        );
        assert_eq!(first_difference(&a, &a, ""), None);
    }
}
