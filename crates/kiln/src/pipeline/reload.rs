//! A saved model's data again: its test split, its training data for fine-tuning and
//! calibration, and new samples to predict on, each prepared as the model's training data
//! was.

use std::path::Path;

use crate::artifact::ModelInfo;
use crate::compress::Pruning;
use crate::data::{read_feature_rows, read_idx, Dataset, Splits, Stage};
use crate::error::{Error, Result};
use crate::nn::Sequential;
use crate::train::{EvalData, Evaluation, FitOptions, TrainData, Trainer, Validation};

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
    let splits = info
        .data()?
        .located(data_dir)?
        .load(info.training()?.seed, data_dir)?;
    if let (Some(table), Some(schema)) = (&info.table, &splits.schema) {
        if &table.schema != schema {
            return Err(Error::mismatch(
                format!("the data ({})", splits.description),
                "the columns and categories the model was trained on",
                "other columns or categories",
            ));
        }
    }
    Ok(splits)
}

/// The test split a model was evaluated on, reloaded from its recorded data source and
/// preprocessed the way the model expects.
pub fn load_test_split(info: &ModelInfo, data_dir: Option<&Path>) -> Result<Dataset> {
    prepare_for_model(info, reload_data(info, data_dir)?.test, Stage::Evaluate)
}

/// Trains a loaded model `epochs` more epochs on its own training data and settings
/// (the data source, seed, optimizer, loss, batch size and validation split it records;
/// a fresh optimizer), pruning it as it goes by what `pruning(model, steps per epoch)`
/// returns — the fine-tuning step of compression. Returns the final test evaluation.
pub fn fine_tune(
    model: &mut Sequential,
    info: &ModelInfo,
    data_dir: Option<&Path>,
    epochs: usize,
    pruning: impl FnOnce(&Sequential, usize) -> Result<Option<Pruning>>,
) -> Result<Evaluation> {
    let t = info.training()?;
    let Splits { train, test, .. } = reload_data(info, data_dir)?;
    let train = prepare_for_model(info, train, Stage::Train)?;
    let test = prepare_for_model(info, test, Stage::Evaluate)?;
    let mut trainer = Trainer::new(t.optimizer.clone(), t.loss(), t.seed);
    model.freeze_layers(&info.architecture.frozen);
    let held_out = (train.len() as f64 * t.validation_split as f64).ceil() as usize;
    let steps_per_epoch = (train.len() - held_out.min(train.len())).div_ceil(t.batch_size.max(1));
    trainer.set_pruning(pruning(model, steps_per_epoch)?);
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
    trainer.fit(model, TrainData::Samples(&train), &options)?;
    trainer.evaluate(model, EvalData::Samples(&test))
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
/// bytes, which no text file does, or the name says IDX (`.idx*`, `-ubyte`). Any type code
/// or magic counts, so that a damaged IDX file gets the IDX reader's precise error rather
/// than a CSV parse failure.
fn looks_like_idx(path: &Path) -> Result<bool> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_lowercase())
        .unwrap_or_default();
    let name = name.strip_suffix(".gz").unwrap_or(&name);
    let named_idx = name.ends_with("-ubyte")
        || Path::new(name)
            .extension()
            .is_some_and(|e| e.to_string_lossy().starts_with("idx"));
    if named_idx {
        return Ok(true);
    }
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
