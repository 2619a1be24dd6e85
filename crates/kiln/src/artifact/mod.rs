//! Model artifacts: the official safetensors format, one f32 tensor per parameter
//! (`layers.{i}.kernel` shaped (in, units), `layers.{i}.bias` shaped (units)), with
//! `__metadata__` holding the architecture (the spec's own serde types, as JSON), the fitted
//! preprocessing, class names, training settings, data source and lineage.
//!
//! Every kiln model file is this format, with its `kind` in the metadata (`kiln.kind`:
//! `sequential` or `gpt`; a file from before the key existed is a language model when it
//! carries `kiln.lm`). [`load_any`] reads either kind; [`language_model`] has the GPT's
//! half.
//!
//! Files are written to a temporary sibling and renamed into place, so a crash or a full
//! disk never leaves a half-written model where a good one was.

mod classifier;
mod hf_gpt2;
pub mod language_model;
pub mod onnx;
mod sparse;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use safetensors::tensor::{Dtype, SafeTensors};
use serde::{de::DeserializeOwned, Deserialize, Serialize};

use crate::data::{DataSpec, FittedNormalization, TablePreprocessing};
use crate::error::{Error, Result};
pub use crate::io::{encode_safetensors, write_atomically};
use crate::io::{encode_safetensors_with_int8, read_f32_tensor, NamedBytes, NamedTensor};
use crate::nn::{Ensemble, Model, Sequential};
use crate::quant::{Compression, HalfFloat, QuantizedModel, QuantizedNetwork, QUANTIZATION_KEY};
use crate::spec::{ModelSpec, TrainingSpec};
use crate::tensor::Tensor;
use crate::train::{EpochLog, ModelWriter};

pub use classifier::{Classifier, ClassifierRef};
pub use hf_gpt2::import_gpt2;
pub use language_model::{
    load_language_model, save_language_model, save_quantized_language_model, LanguageModel, LmCompression,
    LmInfo,
};
use sparse::{SparseKernel, SPARSE_INT8_KEY, SPARSE_KEY};

/// Identifies kiln artifacts among other safetensors files.
pub const FORMAT: &str = "kiln";
pub const FORMAT_VERSION: &str = "1";
/// The metadata key naming the kind of model a file holds.
pub const KIND_KEY: &str = "kiln.kind";

/// The kinds of model a file can hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelKind {
    /// A layer stack (also its int8, pruned and ensemble forms).
    Sequential,
    /// A GPT language model with its tokenizer.
    Gpt,
}

impl ModelKind {
    pub fn name(self) -> &'static str {
        match self {
            ModelKind::Sequential => "sequential",
            ModelKind::Gpt => "gpt",
        }
    }

    /// The kind a file's metadata names; files written before `kiln.kind` existed are
    /// told apart by the language model's own key.
    pub(crate) fn of(
        metadata: &std::collections::HashMap<String, String>,
    ) -> std::result::Result<ModelKind, String> {
        match metadata.get(KIND_KEY).map(String::as_str) {
            Some("sequential") => Ok(ModelKind::Sequential),
            Some("gpt") => Ok(ModelKind::Gpt),
            Some(other) => Err(format!(
                "metadata `{KIND_KEY}` is `{other}`, a kind of model this kiln does not know (it reads sequential and gpt)"
            )),
            None if metadata.contains_key(language_model::INFO_KEY) => Ok(ModelKind::Gpt),
            None => Ok(ModelKind::Sequential),
        }
    }
}

/// A model file of either kind.
#[derive(Debug)]
pub enum SavedModel {
    Sequential(Box<Artifact>),
    LanguageModel(Box<LanguageModel>),
}

/// The kind of model the kiln file at `path` holds, from its header alone (only the length
/// prefix and the JSON header are read).
pub fn kind_of(path: &Path) -> Result<ModelKind> {
    use std::io::Read;
    let fail = |message: String| Error::Artifact {
        path: path.into(),
        message,
    };
    let mut file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut length = [0u8; 8];
    file.read_exact(&mut length).map_err(|e| match e.kind() {
        std::io::ErrorKind::UnexpectedEof => {
            fail("not a safetensors file (shorter than its header length)".into())
        }
        _ => Error::io(path, e),
    })?;
    let length = usize::try_from(u64::from_le_bytes(length)).unwrap_or(usize::MAX);
    // safetensors caps its header at 100 MB; anything larger is not one.
    if length > 100 << 20 {
        return Err(fail(format!(
            "not a safetensors file (a header of {length} bytes)"
        )));
    }
    // Read as it comes, so a file claiming a long header costs only what it holds.
    let mut json = Vec::new();
    file.take(length as u64)
        .read_to_end(&mut json)
        .map_err(|e| Error::io(path, e))?;
    if json.len() < length {
        return Err(fail("not a safetensors file (its header is cut short)".into()));
    }
    let header: serde_json::Value =
        serde_json::from_slice(&json).map_err(|e| fail(format!("not a safetensors file ({e})")))?;
    let metadata: std::collections::HashMap<String, String> =
        serde_json::from_value(header["__metadata__"].clone()).unwrap_or_default();
    check_format(&metadata).map_err(fail)?;
    ModelKind::of(&metadata).map_err(fail)
}

/// A kiln file, and one this kiln can read: `format: kiln`, and a `format_version` no
/// newer than this kiln writes (files from before the version was recorded have none).
pub(crate) fn check_format(
    metadata: &std::collections::HashMap<String, String>,
) -> std::result::Result<(), String> {
    if metadata.get("format").map(String::as_str) != Some(FORMAT) {
        return Err("a safetensors file, but not a kiln model (no `format: kiln` in its metadata)".into());
    }
    let Some(version) = metadata.get("format_version") else {
        return Ok(());
    };
    match version.parse::<u32>() {
        Ok(v) if v <= FORMAT_VERSION.parse::<u32>().expect("a number") => Ok(()),
        Ok(v) => Err(format!(
            "metadata format_version = {v}: written by a newer kiln; this one reads format_version {FORMAT_VERSION} and older"
        )),
        Err(_) => Err(format!("metadata format_version = {version:?}: expected a whole number")),
    }
}

/// Reads a kiln model file of either kind.
pub fn load_any(path: &Path) -> Result<SavedModel> {
    Ok(match kind_of(path)? {
        ModelKind::Sequential => SavedModel::Sequential(Box::new(load(path)?)),
        ModelKind::Gpt => SavedModel::LanguageModel(Box::new(load_language_model(path)?)),
    })
}

/// How an ensemble was made, recorded in its lineage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnsembleInfo {
    pub members: usize,
    /// "bootstrap": each member trained on n samples drawn with replacement.
    pub sampling: String,
    /// "average": the members' outputs averaged (soft voting).
    pub combine: String,
    /// Each member's own test accuracy, and loss.
    pub member_test_accuracy: Vec<f32>,
    pub member_test_loss: Vec<f32>,
}

/// Everything saved next to the weights.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelInfo {
    pub name: String,
    /// Layers and input shape (always filled in a saved model).
    pub architecture: ModelSpec,
    pub preprocessing: FittedNormalization,
    /// Class names by label index.
    pub classes: Vec<String>,
    /// How it was trained, where its data came from and what came of it: recorded by
    /// `kiln train` and the pipeline; none for a model built and trained in memory through
    /// the library (nothing is made up for it).
    pub training: Option<TrainingSpec>,
    pub data: Option<DataSpec>,
    pub lineage: Option<Lineage>,
    /// For tabular data: column types, categories and cleaning statistics, applied to raw
    /// rows before `preprocessing`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table: Option<TablePreprocessing>,
    /// The float weights' precision in the file: f32 (None), or f16/bf16 after `kiln
    /// compress --quantize f16|bf16`. Read from the tensors' dtype, not the metadata.
    #[serde(skip)]
    pub storage: Option<HalfFloat>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Lineage {
    pub kiln_version: String,
    /// SHA-256 of the training data as loaded (raw, uncompressed).
    pub data_sha256: String,
    pub data_description: String,
    pub seed: u64,
    pub epochs_trained: usize,
    pub created_unix_seconds: u64,
    pub metrics: FinalMetrics,
    /// What `kiln compress` did to the trained model, step by step (pruning, fine-tuning,
    /// quantization); empty for a model as trained.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub compressed: Vec<String>,
    /// For a bagged ensemble: its members and how they were combined.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ensemble: Option<EnsembleInfo>,
}

#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct FinalMetrics {
    pub loss: f32,
    pub accuracy: f32,
    pub val_loss: Option<f32>,
    pub val_accuracy: Option<f32>,
    pub test_loss: Option<f32>,
    pub test_accuracy: Option<f32>,
}

/// Metadata key of a tabular model's [`TablePreprocessing`] (absent for other models).
const TABLE_KEY: &str = "kiln.table";

const KEYS: [&str; 7] = [
    "kiln.name",
    "kiln.architecture",
    "kiln.preprocessing",
    "kiln.classes",
    "kiln.training",
    "kiln.data",
    "kiln.lineage",
];

/// Writes `model` (a Sequential, a quantized model, an ensemble or a loaded
/// [`Classifier`]) and `info` to `path` atomically.
pub fn save<'a>(model: impl Into<ClassifierRef<'a>>, info: &ModelInfo, path: &Path) -> Result<()> {
    let bytes = to_bytes(model.into(), info).map_err(|message| Error::Artifact {
        path: path.into(),
        message,
    })?;
    write_atomically(path, &bytes)
}

/// The safetensors layout: an 8-byte little-endian header length, a JSON header, the
/// tensor bytes. kiln writes it itself (and reads it with the `safetensors` crate) so that
/// the header's keys come out sorted and the same model always gives the same bytes.
fn to_bytes(classifier: ClassifierRef, info: &ModelInfo) -> std::result::Result<Vec<u8>, String> {
    let model = classifier.float();
    let values = [
        Some(json(&info.name)),
        Some(json(&info.architecture)),
        Some(json(&info.preprocessing)),
        Some(json(&info.classes)),
        info.training.as_ref().map(json),
        info.data.as_ref().map(json),
        info.lineage.as_ref().map(json),
    ];
    let mut metadata: BTreeMap<String, String> = KEYS
        .iter()
        .zip(values)
        .filter_map(|(k, v)| Some((k.to_string(), v?)))
        .collect();
    if let Some(table) = &info.table {
        metadata.insert(TABLE_KEY.into(), json(table));
    }
    metadata.insert("format".into(), FORMAT.into());
    metadata.insert("format_version".into(), FORMAT_VERSION.into());
    metadata.insert(KIND_KEY.into(), ModelKind::Sequential.name().into());
    let quantized = match classifier {
        ClassifierRef::Quantized(q) => Some(q.network()),
        _ => None,
    };
    // A compressed model stores its quantized kernels as I8 (plus a scale per column)
    // in place of the float ones.
    let int8_names: Vec<String> = quantized
        .map(|q| q.kernels().map(|(i, ..)| format!("layers.{i}.kernel")).collect())
        .unwrap_or_default();
    let scale_names: Vec<String> = int8_names.iter().map(|n| format!("{n}_scale")).collect();
    let sparse: Vec<SparseKernel<f32>> = model
        .params
        .iter()
        .filter(|p| p.name.ends_with(".kernel") && !int8_names.contains(&p.name))
        .filter_map(|p| SparseKernel::if_smaller(&p.name, p.value.data()))
        .collect();
    if !sparse.is_empty() {
        let names: Vec<&str> = sparse.iter().map(|k| k.name.as_str()).collect();
        metadata.insert(SPARSE_KEY.into(), json(&names));
    }
    let dense = model
        .params
        .iter()
        .filter(|p| !int8_names.contains(&p.name) && !sparse.iter().any(|k| k.name == p.name));
    let mut tensors: Vec<NamedTensor> = Vec::new();
    let mut int8: Vec<NamedBytes> = Vec::new();
    for p in dense {
        match info.storage {
            Some(h) => int8.push((
                p.name.clone(),
                p.value.dims().to_vec(),
                h.dtype(),
                h.encode(p.value.data()),
            )),
            None => tensors.push((p.name.clone(), p.value.dims(), p.value.data())),
        }
    }
    for k in &sparse {
        tensors.push((format!("{}.values", k.name), &k.count, &k.values));
        int8.push((
            format!("{}.bitmap", k.name),
            vec![k.bitmap.len()],
            "U8",
            k.bitmap.clone(),
        ));
    }
    if let Some(q) = quantized {
        metadata.insert(QUANTIZATION_KEY.into(), json(&q.compression));
        let mut sparse_int8 = Vec::new();
        for (((_, codes, scales), name), scale_name) in q.kernels().zip(&int8_names).zip(&scale_names) {
            let dims = model
                .params
                .iter()
                .find(|p| &p.name == name)
                .map(|p| p.value.dims())
                .ok_or_else(|| format!("no parameter {name}"))?;
            let bytes = |codes: &[i8]| codes.iter().map(|&c| c as u8).collect();
            match SparseKernel::if_smaller(name, codes) {
                Some(k) => {
                    int8.push((format!("{name}.values"), k.count.to_vec(), "I8", bytes(&k.values)));
                    int8.push((format!("{name}.bitmap"), vec![k.bitmap.len()], "U8", k.bitmap));
                    sparse_int8.push(name.clone());
                }
                None => int8.push((name.clone(), dims.to_vec(), "I8", bytes(codes))),
            }
            // One scale per output: the kernel's last axis (units, or filters).
            tensors.push((scale_name.clone(), &dims[dims.len() - 1..], scales));
        }
        if !sparse_int8.is_empty() {
            metadata.insert(SPARSE_INT8_KEY.into(), json(&sparse_int8));
        }
    }
    // An ensemble's other members, in full precision, under `members.M.`.
    let others = match classifier {
        ClassifierRef::Ensemble(e) => &e.members()[1..],
        _ => &[],
    };
    let member_names: Vec<Vec<String>> = others
        .iter()
        .enumerate()
        .map(|(m, member)| {
            member
                .params
                .iter()
                .map(|p| format!("members.{}.{}", m + 1, p.name))
                .collect()
        })
        .collect();
    for (member, names) in others.iter().zip(&member_names) {
        for (p, name) in member.params.iter().zip(names) {
            tensors.push((name.clone(), p.value.dims(), p.value.data()));
        }
    }
    encode_safetensors_with_int8(&metadata, &tensors, &int8)
}

/// The bytes of a one-byte-per-value tensor of `tensors` by name and dtype.
fn read_bytes(tensors: &SafeTensors, name: &str, dtype: Dtype) -> std::result::Result<Vec<u8>, String> {
    let view = tensors
        .tensor(name)
        .map_err(|_| format!("tensor `{name}` is missing"))?;
    if view.dtype() != dtype {
        return Err(format!(
            "tensor `{name}` is {:?}, expected {dtype:?}",
            view.dtype()
        ));
    }
    Ok(view.data().to_vec())
}

/// An I8 tensor of `tensors` by name, checked against the expected dimensions.
fn read_i8_tensor(tensors: &SafeTensors, name: &str, dims: &[usize]) -> std::result::Result<Vec<i8>, String> {
    let view = tensors
        .tensor(name)
        .map_err(|_| format!("tensor `{name}` is missing"))?;
    if view.dtype() != Dtype::I8 || view.shape() != dims {
        return Err(format!(
            "tensor `{name}` is {:?} {:?}, expected I8 {dims:?}",
            view.dtype(),
            view.shape()
        ));
    }
    Ok(view.data().iter().map(|&b| b as i8).collect())
}

fn json<T: Serialize>(value: &T) -> String {
    serde_json::to_string(value).expect("metadata types serialise to JSON")
}

/// A loaded model with its metadata.
#[derive(Debug)]
pub struct Artifact {
    pub model: Classifier,
    pub info: ModelInfo,
    pub path: PathBuf,
    pub file_bytes: u64,
}

/// ModelCheckpoint saving a Sequential under training: its metadata brought up to the epoch.
impl ModelWriter for ModelInfo {
    fn write(&self, model: &dyn Model, log: &EpochLog, path: &Path) -> Result<()> {
        let model = model.as_any().downcast_ref::<Sequential>().ok_or_else(|| {
            Error::mismatch(
                "the model saved with Sequential metadata",
                "a Sequential model",
                "another kind of model",
            )
        })?;
        let mut info = self.clone();
        if let Some(lineage) = info.lineage.as_mut() {
            lineage.epochs_trained = log.epoch;
            lineage.created_unix_seconds = creation_time();
            lineage.metrics = FinalMetrics {
                loss: log.loss,
                accuracy: log.accuracy,
                val_loss: log.val_loss,
                val_accuracy: log.val_accuracy,
                test_loss: None,
                test_accuracy: None,
            };
        }
        save(model, &info, path)
    }
}

impl ModelInfo {
    /// What a model built in memory records: its architecture and class indices, no
    /// preprocessing, and no training settings, data source or lineage.
    pub fn for_model(name: &str, model: &Sequential) -> ModelInfo {
        let classes = model.output_shape().numel();
        ModelInfo {
            name: name.to_string(),
            architecture: model.architecture(),
            preprocessing: FittedNormalization::None,
            classes: (0..classes).map(|c| c.to_string()).collect(),
            training: None,
            data: None,
            lineage: None,
            table: None,
            storage: None,
        }
    }

    /// The training settings, or an error saying the model records none.
    pub fn training(&self) -> Result<&TrainingSpec> {
        self.training
            .as_ref()
            .ok_or_else(|| self.unrecorded("training settings"))
    }

    /// The data source, or an error saying the model records none.
    pub fn data(&self) -> Result<&DataSpec> {
        self.data.as_ref().ok_or_else(|| self.unrecorded("data source"))
    }

    /// The lineage to add to, or an error saying the model records none.
    pub fn lineage_mut(&mut self) -> Result<&mut Lineage> {
        let missing = self.unrecorded("lineage");
        self.lineage.as_mut().ok_or(missing)
    }

    fn unrecorded(&self, what: &str) -> Error {
        Error::unsupported(
            format!("reading the {what} of model `{}`", self.name),
            format!("it was built in memory and records no {what}; train it with `kiln train` (or the pipeline) to keep them"),
        )
    }
}

impl Artifact {
    /// The model's loss (the one it was trained with) and accuracy on `data`.
    pub fn evaluate(&mut self, data: &crate::data::Dataset) -> Result<crate::train::Evaluation> {
        let loss = self.info.training()?.loss();
        crate::train::evaluate(
            &mut self.model,
            &loss,
            crate::train::EvalData::Samples(data),
            None,
        )
    }
}

/// The time a model file records as its creation: `SOURCE_DATE_EPOCH` when set (as
/// reproducible builds use it, so the same spec, seed and data give the same bytes), else now.
pub fn creation_time() -> u64 {
    std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs())
        })
}

/// Weights a model can predict with: finite (a NaN anywhere would make every prediction NaN).
fn check_loaded(model: &Sequential) -> std::result::Result<(), String> {
    match model
        .params
        .iter()
        .find(|p| p.value.data().iter().any(|v| !v.is_finite()))
    {
        Some(p) => Err(format!("tensor `{}` holds NaN or infinite values", p.name)),
        None => Ok(()),
    }
}

/// One name per output, or two for a single sigmoid output (the classes 0 and 1).
fn check_class_names(classes: &[String], outputs: usize) -> std::result::Result<(), String> {
    if classes.len() == outputs || (outputs == 1 && classes.len() == 2) {
        return Ok(());
    }
    let expected = match outputs {
        1 => "1 or 2".to_string(),
        n => n.to_string(),
    };
    Err(format!(
        "metadata `kiln.classes` names {} classes, but the model has {outputs} outputs (expected {expected} names)",
        classes.len()
    ))
}

/// Reads a kiln model; every way a file can fail to be one is a named error.
pub fn load(path: &Path) -> Result<Artifact> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let fail = |message: String| Error::Artifact {
        path: path.into(),
        message,
    };
    let (tensors, metadata) = crate::io::read_safetensors(&bytes, fail)?;
    check_format(&metadata).map_err(fail)?;
    if ModelKind::of(&metadata).map_err(fail)? != ModelKind::Sequential {
        return Err(fail(
            "is a language model, not a layer-stack model: use `kiln generate`, `kiln eval` or `kiln inspect` with it".into(),
        ));
    }
    let field = |key: &str| -> Result<&String> {
        metadata
            .get(key)
            .ok_or_else(|| fail(format!("metadata has no `{key}`")))
    };
    fn parse<T: DeserializeOwned>(key: &str, text: &str, fail: &dyn Fn(String) -> Error) -> Result<T> {
        serde_json::from_str(text).map_err(|e| fail(format!("metadata `{key}` is invalid: {e}")))
    }
    // Absent from a model built in memory through the library.
    fn optional_field<T: DeserializeOwned>(
        metadata: &std::collections::HashMap<String, String>,
        key: &str,
        fail: &dyn Fn(String) -> Error,
    ) -> Result<Option<T>> {
        metadata.get(key).map(|text| parse(key, text, fail)).transpose()
    }
    let info = ModelInfo {
        name: parse(KEYS[0], field(KEYS[0])?, &fail)?,
        architecture: parse(KEYS[1], field(KEYS[1])?, &fail)?,
        preprocessing: parse(KEYS[2], field(KEYS[2])?, &fail)?,
        classes: parse(KEYS[3], field(KEYS[3])?, &fail)?,
        training: optional_field(&metadata, KEYS[4], &fail)?,
        data: optional_field(&metadata, KEYS[5], &fail)?,
        lineage: optional_field(&metadata, KEYS[6], &fail)?,
        table: metadata
            .get(TABLE_KEY)
            .map(|text| parse(TABLE_KEY, text, &fail))
            .transpose()?,
        // A model stored in 16 bits is saved in 16 bits again.
        storage: tensors
            .tensors()
            .iter()
            .find_map(|(_, view)| HalfFloat::of(view.dtype())),
    };
    if let Some(table) = &info.table {
        table.validate().map_err(|e| fail(e.to_string()))?;
    }
    let raw_width = match &info.table {
        Some(table) => table.schema.encoded_width(),
        None => info.architecture.input_shape.iter().flatten().product(),
    };
    info.preprocessing
        .validate(raw_width)
        .map_err(|e| fail(e.to_string()))?;
    let input_shape = info
        .architecture
        .input_shape
        .clone()
        .ok_or_else(|| fail("metadata `kiln.architecture` has no input_shape".into()))?;
    let compression: Option<Compression> = metadata
        .get(QUANTIZATION_KEY)
        .map(|text| parse(QUANTIZATION_KEY, text, &fail))
        .transpose()?;
    let quantized_kernels: Vec<String> = compression
        .iter()
        .flat_map(|c| c.inputs.iter().map(|(i, _)| format!("layers.{i}.kernel")))
        .collect();
    let sparse: Vec<String> = metadata
        .get(SPARSE_KEY)
        .map(|text| parse(SPARSE_KEY, text, &fail))
        .transpose()?
        .unwrap_or_default();
    let sparse_int8: Vec<String> = metadata
        .get(SPARSE_INT8_KEY)
        .map(|text| parse(SPARSE_INT8_KEY, text, &fail))
        .transpose()?
        .unwrap_or_default();
    let mut codes = Vec::new();
    let mut take = |name: &str, dims: &[usize]| -> Result<Tensor> {
        if sparse.iter().any(|k| k == name) {
            let bitmap = read_bytes(&tensors, &format!("{name}.bitmap"), Dtype::U8).map_err(&fail)?;
            let values_name = format!("{name}.values");
            let count = tensors
                .tensor(&values_name)
                .map_err(|_| fail(format!("tensor `{values_name}` is missing")))?
                .shape()
                .to_vec();
            let values = read_f32_tensor(&tensors, &values_name, &count).map_err(&fail)?;
            let len = dims.iter().product();
            let dense = SparseKernel::expand(&bitmap, values.data(), len)
                .map_err(|e| fail(format!("sparse kernel `{name}`: {e}")))?;
            return Tensor::new(dims, dense);
        }
        if !quantized_kernels.iter().any(|k| k == name) {
            return read_f32_tensor(&tensors, name, dims).map_err(&fail);
        }
        // An int8 kernel: keep its codes for the integer path, and give the float model
        // their values (code × column scale).
        let q = match sparse_int8.iter().any(|k| k == name) {
            true => {
                let bitmap = read_bytes(&tensors, &format!("{name}.bitmap"), Dtype::U8).map_err(&fail)?;
                let values: Vec<i8> = read_bytes(&tensors, &format!("{name}.values"), Dtype::I8)
                    .map_err(&fail)?
                    .into_iter()
                    .map(|b| b as i8)
                    .collect();
                SparseKernel::expand(&bitmap, &values, dims.iter().product())
                    .map_err(|e| fail(format!("sparse int8 kernel `{name}`: {e}")))?
            }
            false => read_i8_tensor(&tensors, name, dims).map_err(&fail)?,
        };
        let n = *dims.last().expect("a kernel has axes");
        let scales = read_f32_tensor(&tensors, &format!("{name}_scale"), &[n]).map_err(&fail)?;
        let values = q
            .iter()
            .enumerate()
            .map(|(i, &c)| c as f32 * scales.data()[i % n])
            .collect();
        let layer = name
            .strip_prefix("layers.")
            .and_then(|r| r.split('.').next())
            .and_then(|i| i.parse().ok())
            .expect("kernel names are layers.N.kernel");
        codes.push((layer, q, scales.data().to_vec()));
        Tensor::new(dims, values)
    };
    // A tensor's own error already names this file; others (the architecture's) get it.
    let float =
        Sequential::with_params(&input_shape, info.architecture.layers.clone(), &mut take).map_err(|e| {
            match e {
                Error::Artifact { .. } => e,
                other => fail(other.to_string()),
            }
        })?;
    check_loaded(&float).map_err(fail)?;
    check_class_names(&info.classes, float.output_shape().numel()).map_err(fail)?;
    let mut model = Classifier::Float(float);
    let ensemble = info.lineage.as_ref().and_then(|l| l.ensemble.as_ref());
    if compression.is_some() && ensemble.is_some() {
        return Err(fail(format!(
            "metadata has both `{QUANTIZATION_KEY}` and an ensemble in `kiln.lineage`; kiln quantizes single models only"
        )));
    }
    if let Some(compression) = compression {
        let network = QuantizedNetwork::from_saved(model.float(), compression, codes)
            .map_err(|e| fail(e.to_string()))?;
        let float = model.into_float("loading").expect("a float model");
        model = QuantizedModel::from_parts(float, network).into();
    } else if let Some(ensemble) = ensemble {
        let others = (1..ensemble.members)
            .map(|m| {
                let mut take = |name: &str, dims: &[usize]| {
                    read_f32_tensor(&tensors, &format!("members.{m}.{name}"), dims).map_err(&fail)
                };
                Sequential::with_params(&input_shape, info.architecture.layers.clone(), &mut take)
            })
            .collect::<Result<Vec<_>>>()?;
        let first = model.into_float("loading").expect("a float model");
        let members = std::iter::once(first).chain(others).collect();
        model = Classifier::Ensemble(Ensemble::new(members).map_err(|e| fail(e.to_string()))?);
    }
    Ok(Artifact {
        model,
        info,
        path: path.into(),
        file_bytes: bytes.len() as u64,
    })
}
