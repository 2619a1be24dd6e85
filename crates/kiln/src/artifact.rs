//! Model artifacts: the official safetensors format, one f32 tensor per parameter
//! (`layers.{i}.kernel` shaped (in, units), `layers.{i}.bias` shaped (units)), with
//! `__metadata__` holding the architecture (the spec's own serde types, as JSON), the fitted
//! preprocessing, class names, training settings, data source and lineage.
//!
//! Files are written to a temporary sibling and renamed into place, so a crash or a full
//! disk never leaves a half-written model where a good one was.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use safetensors::tensor::{Dtype, SafeTensors};
use serde::{de::DeserializeOwned, Deserialize, Serialize};

use crate::data::{DataSpec, FittedNormalization, TablePreprocessing};
use crate::error::{Error, Result};
use crate::nn::Sequential;
use crate::quant::{Compression, HalfFloat, QuantizedNetwork, QUANTIZATION_KEY};
use crate::select::EnsembleInfo;
use crate::spec::{ModelSpec, TrainingSpec};
use crate::tensor::Tensor;

/// Identifies kiln artifacts among other safetensors files.
pub const FORMAT: &str = "kiln";
pub const FORMAT_VERSION: &str = "1";

/// Everything saved next to the weights.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelInfo {
    pub name: String,
    /// Layers and input shape (always filled in a saved model).
    pub architecture: ModelSpec,
    pub preprocessing: FittedNormalization,
    /// Class names by label index.
    pub classes: Vec<String>,
    pub training: TrainingSpec,
    pub data: DataSpec,
    pub lineage: Lineage,
    /// For tabular data: column types, categories and cleaning statistics, applied to raw
    /// rows before `preprocessing`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table: Option<TablePreprocessing>,
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

/// Writes `model` and `info` to `path` atomically.
pub fn save(model: &Sequential, info: &ModelInfo, path: &Path) -> Result<()> {
    let bytes = to_bytes(model, info).map_err(|message| Error::Artifact {
        path: path.into(),
        message,
    })?;
    write_atomically(path, &bytes)
}

/// The safetensors layout: an 8-byte little-endian header length, a JSON header, the
/// tensor bytes. kiln writes it itself (and reads it with the `safetensors` crate) so that
/// the header's keys come out sorted and the same model always gives the same bytes.
fn to_bytes(model: &Sequential, info: &ModelInfo) -> std::result::Result<Vec<u8>, String> {
    let values = [
        json(&info.name),
        json(&info.architecture),
        json(&info.preprocessing),
        json(&info.classes),
        json(&info.training),
        json(&info.data),
        json(&info.lineage),
    ];
    let mut metadata: BTreeMap<String, String> = KEYS.iter().map(|k| k.to_string()).zip(values).collect();
    if let Some(table) = &info.table {
        metadata.insert(TABLE_KEY.into(), json(table));
    }
    metadata.insert("format".into(), FORMAT.into());
    metadata.insert("format_version".into(), FORMAT_VERSION.into());
    let quantized = model.quantized();
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
        match model.half_storage() {
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
    let member_names: Vec<Vec<String>> = model
        .members()
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
    for (member, names) in model.members().iter().zip(&member_names) {
        for (p, name) in member.params.iter().zip(names) {
            tensors.push((name.clone(), p.value.dims(), p.value.data()));
        }
    }
    encode_safetensors_with_int8(&metadata, &tensors, &int8)
}

/// A tensor to store: name, dimensions, values.
pub(crate) type NamedTensor<'a> = (String, &'a [usize], &'a [f32]);

/// A tensor of bytes to store: name, dimensions, dtype ("I8", "U8", "F16", "BF16"), bytes.
pub(crate) type NamedBytes = (String, Vec<usize>, &'static str, Vec<u8>);

/// Metadata key listing the float kernels stored sparsely.
const SPARSE_KEY: &str = "kiln.sparse";
/// Metadata key listing the int8 kernels stored sparsely (a pruned, then quantized model).
const SPARSE_INT8_KEY: &str = "kiln.sparse_int8";

/// A pruned kernel stored as a bitmap of its nonzero weights (bit i % 8 of byte i / 8)
/// and their values in order: smaller than the dense tensor once 1 weight in 32 (f32) or
/// 1 in 8 (int8 codes) is zero.
struct SparseKernel<T> {
    name: String,
    bitmap: Vec<u8>,
    values: Vec<T>,
    /// `[values.len()]`, kept to lend as the values' dimensions.
    count: [usize; 1],
}

impl<T: Copy + Default + PartialEq> SparseKernel<T> {
    fn if_smaller(name: &str, weights: &[T]) -> Option<SparseKernel<T>> {
        let zero = T::default();
        let values: Vec<T> = weights.iter().copied().filter(|w| *w != zero).collect();
        let bitmap_bytes = weights.len().div_ceil(8);
        let width = std::mem::size_of::<T>();
        if bitmap_bytes + width * values.len() >= std::mem::size_of_val(weights) {
            return None;
        }
        let mut bitmap = vec![0u8; bitmap_bytes];
        for (i, w) in weights.iter().enumerate() {
            if *w != zero {
                bitmap[i / 8] |= 1 << (i % 8);
            }
        }
        Some(SparseKernel {
            name: name.to_string(),
            count: [values.len()],
            bitmap,
            values,
        })
    }

    /// The dense weights back, or why the stored pieces do not make `len` of them.
    fn expand(bitmap: &[u8], values: &[T], len: usize) -> std::result::Result<Vec<T>, String> {
        if bitmap.len() != len.div_ceil(8) {
            return Err(format!("a bitmap of {} bytes for {len} weights", bitmap.len()));
        }
        let mut next = values.iter();
        let dense: Vec<T> = (0..len)
            .map(|i| match bitmap[i / 8] >> (i % 8) & 1 {
                1 => next.next().copied().ok_or(()),
                _ => Ok(T::default()),
            })
            .collect::<std::result::Result<_, ()>>()
            .map_err(|()| {
                format!(
                    "the bitmap marks more weights than the {} values stored",
                    values.len()
                )
            })?;
        if next.next().is_some() {
            return Err(format!("{} values stored for fewer marked weights", values.len()));
        }
        Ok(dense)
    }
}

/// f32 tensors and string metadata in the safetensors layout, keys sorted, data 8-byte
/// aligned. Shared by model artifacts and training checkpoints.
pub(crate) fn encode_safetensors(
    metadata: &BTreeMap<String, String>,
    tensors: &[NamedTensor],
) -> std::result::Result<Vec<u8>, String> {
    encode_safetensors_with_int8(metadata, tensors, &[])
}

/// [`encode_safetensors`] with I8 tensors too (after the f32 ones in the data).
pub(crate) fn encode_safetensors_with_int8(
    metadata: &BTreeMap<String, String>,
    tensors: &[NamedTensor],
    int8: &[NamedBytes],
) -> std::result::Result<Vec<u8>, String> {
    // serde_json's map keeps keys sorted, so the header is deterministic.
    let mut header = serde_json::Map::new();
    header.insert(
        "__metadata__".into(),
        serde_json::to_value(metadata).map_err(|e| e.to_string())?,
    );
    let mut offset = 0usize;
    for (name, dims, data) in tensors {
        let end = offset + data.len() * 4;
        let entry = serde_json::json!({ "dtype": "F32", "shape": dims, "data_offsets": [offset, end] });
        if header.insert(name.clone(), entry).is_some() {
            return Err(format!("two tensors are named `{name}`"));
        }
        offset = end;
    }
    for (name, dims, dtype, data) in int8 {
        let end = offset + data.len();
        let entry = serde_json::json!({ "dtype": dtype, "shape": dims, "data_offsets": [offset, end] });
        if header.insert(name.clone(), entry).is_some() {
            return Err(format!("two tensors are named `{name}`"));
        }
        offset = end;
    }
    let mut header_bytes = serde_json::to_vec(&header).map_err(|e| e.to_string())?;
    // Pad with spaces so the tensor data starts 8-byte aligned, as the format recommends.
    while header_bytes.len() % 8 != 0 {
        header_bytes.push(b' ');
    }
    let mut bytes = Vec::with_capacity(8 + header_bytes.len() + offset);
    bytes.extend_from_slice(&(header_bytes.len() as u64).to_le_bytes());
    bytes.extend_from_slice(&header_bytes);
    for (_, _, data) in tensors {
        bytes.extend(data.iter().flat_map(|v| v.to_le_bytes()));
    }
    for (_, _, _, data) in int8 {
        bytes.extend_from_slice(data);
    }
    Ok(bytes)
}

/// An F32 tensor of `tensors` by name, checked against the expected dimensions; F16 and
/// BF16 tensors (a model saved with half storage) are widened to f32.
pub(crate) fn read_f32_tensor(
    tensors: &SafeTensors,
    name: &str,
    dims: &[usize],
) -> std::result::Result<Tensor, String> {
    let view = tensors
        .tensor(name)
        .map_err(|_| format!("tensor `{name}` is missing"))?;
    if view.shape() != dims {
        return Err(format!(
            "tensor `{name}` has shape {:?}, expected {dims:?}",
            view.shape()
        ));
    }
    let values = match (view.dtype(), HalfFloat::of(view.dtype())) {
        (Dtype::F32, _) => view
            .data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect(),
        (_, Some(h)) => h.decode(view.data()),
        (other, None) => {
            return Err(format!(
                "tensor `{name}` is {other:?}, expected F32 (or F16, BF16)"
            ))
        }
    };
    Tensor::new(dims, values).map_err(|e| e.to_string())
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

/// Writes to `path.tmp-PID`, syncs, then renames over `path`.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let file_name = path.file_name().ok_or_else(|| Error::Artifact {
        path: path.into(),
        message: "is not a file path".into(),
    })?;
    let mut tmp_name = file_name.to_os_string();
    tmp_name.push(format!(".tmp-{}", std::process::id()));
    let tmp = path.with_file_name(tmp_name);
    let pause = fault_injection_pause();
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        let (head, tail) = bytes.split_at(if pause.is_some() { bytes.len() / 2 } else { 0 });
        f.write_all(head)?;
        if let Some(pause) = pause {
            f.sync_all()?;
            std::thread::sleep(pause);
        }
        f.write_all(tail)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        sync_folder(path)
    };
    write().map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        Error::io(path, e)
    })
}

/// Makes the rename itself durable: on Unix a new directory entry survives a power cut only
/// once the folder is synced. (Elsewhere folders cannot be opened for syncing; skip it.)
fn sync_folder(path: &Path) -> std::io::Result<()> {
    if cfg!(unix) {
        let dir = path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// `KILN_FAULT_PAUSE_MID_WRITE_MS`: a test hook that stops every atomic write halfway for
/// that long, so a test can kill the process mid-write and check nothing saved was lost.
fn fault_injection_pause() -> Option<std::time::Duration> {
    let ms: u64 = std::env::var("KILN_FAULT_PAUSE_MID_WRITE_MS")
        .ok()?
        .parse()
        .ok()?;
    Some(std::time::Duration::from_millis(ms))
}

/// A loaded model with its metadata.
#[derive(Debug)]
pub struct Artifact {
    pub model: Sequential,
    pub info: ModelInfo,
    pub path: PathBuf,
    pub file_bytes: u64,
}

/// Reads a kiln model; every way a file can fail to be one is a named error.
pub fn load(path: &Path) -> Result<Artifact> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let fail = |message: String| Error::Artifact {
        path: path.into(),
        message,
    };
    let (_, header) =
        SafeTensors::read_metadata(&bytes).map_err(|e| fail(format!("not a safetensors file ({e:?})")))?;
    let tensors =
        SafeTensors::deserialize(&bytes).map_err(|e| fail(format!("not a safetensors file ({e:?})")))?;
    let metadata = header.metadata().clone().unwrap_or_default();
    if metadata.get("format").map(String::as_str) != Some(FORMAT) {
        return Err(fail(
            "a safetensors file, but not a kiln model (no `format: kiln` in its metadata)".into(),
        ));
    }
    if metadata.contains_key(crate::lm::artifact::INFO_KEY) {
        return Err(fail(
            "is a language model: use `kiln generate`, `kiln eval` or `kiln inspect` with it".into(),
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
    let info = ModelInfo {
        name: parse(KEYS[0], field(KEYS[0])?, &fail)?,
        architecture: parse(KEYS[1], field(KEYS[1])?, &fail)?,
        preprocessing: parse(KEYS[2], field(KEYS[2])?, &fail)?,
        classes: parse(KEYS[3], field(KEYS[3])?, &fail)?,
        training: parse(KEYS[4], field(KEYS[4])?, &fail)?,
        data: parse(KEYS[5], field(KEYS[5])?, &fail)?,
        lineage: parse(KEYS[6], field(KEYS[6])?, &fail)?,
        table: metadata
            .get(TABLE_KEY)
            .map(|text| parse(TABLE_KEY, text, &fail))
            .transpose()?,
    };
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
    let mut model = Sequential::with_params(&input_shape, info.architecture.layers.clone(), &mut take)
        .map_err(|e| fail(e.to_string()))?;
    // A model stored in 16 bits is saved in 16 bits again.
    let half = tensors
        .tensors()
        .iter()
        .find_map(|(_, view)| HalfFloat::of(view.dtype()));
    model.set_half_storage(half);
    if let Some(compression) = compression {
        let network =
            QuantizedNetwork::from_saved(&model, compression, codes).map_err(|e| fail(e.to_string()))?;
        model.set_quantized(Some(network));
    }
    if let Some(ensemble) = &info.lineage.ensemble {
        let members = (1..ensemble.members)
            .map(|m| {
                let mut take = |name: &str, dims: &[usize]| {
                    read_f32_tensor(&tensors, &format!("members.{m}.{name}"), dims).map_err(&fail)
                };
                Sequential::with_params(&input_shape, info.architecture.layers.clone(), &mut take)
            })
            .collect::<Result<Vec<_>>>()?;
        model.set_members(members).map_err(|e| fail(e.to_string()))?;
    }
    Ok(Artifact {
        model,
        info,
        path: path.into(),
        file_bytes: bytes.len() as u64,
    })
}

#[cfg(test)]
mod tests {
    use super::SparseKernel;

    #[test]
    fn sparse_kernels_round_trip_and_refuse_pieces_that_do_not_fit() {
        let weights = [0.0, 1.5, 0.0, 0.0, -2.0, 0.0, 0.0, 0.0, 0.0, 3.0];
        let k = SparseKernel::if_smaller("k", &weights).expect("7 of 10 zero: smaller");
        assert_eq!(k.values, [1.5, -2.0, 3.0]);
        assert_eq!(k.bitmap, [0b0001_0010, 0b0000_0010]);
        assert_eq!(SparseKernel::expand(&k.bitmap, &k.values, 10).unwrap(), weights);
        assert!(SparseKernel::if_smaller("dense", &[1.0; 64]).is_none());
        let short = SparseKernel::expand(&k.bitmap, &k.values[..2], 10).unwrap_err();
        assert!(short.contains("more weights than the 2 values"), "{short}");
        let long = SparseKernel::expand(&k.bitmap, &[1.0, 2.0, 3.0, 4.0], 10).unwrap_err();
        assert!(long.contains("4 values stored for fewer"), "{long}");
        assert!(SparseKernel::expand(&k.bitmap, &k.values, 30).is_err());
        // int8 codes: worth it once more than 1 in 8 is zero.
        let codes: Vec<i8> = (0..64)
            .map(|i| if i % 4 == 0 { (i - 30) as i8 } else { 0 })
            .collect();
        let k = SparseKernel::if_smaller("q", &codes).expect("3 of 4 zero");
        assert_eq!((k.values.len(), k.bitmap.len()), (16, 8));
        assert_eq!(SparseKernel::expand(&k.bitmap, &k.values, 64).unwrap(), codes);
        assert!(SparseKernel::if_smaller("q", &[1i8; 64]).is_none());
    }
}
