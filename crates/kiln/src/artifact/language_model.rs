//! Language-model files: the same safetensors file as other kiln models (`kind: gpt`), with
//! the architecture, tokenizer and training record in the metadata under `kiln.lm` and
//! `kiln.tokenizer`, so a model file is all generation needs.

use std::collections::BTreeMap;
use std::path::Path;

use super::{ModelKind, FORMAT, FORMAT_VERSION, KIND_KEY};
use crate::error::{Error, Result};
use crate::io::{encode_safetensors_with_int8, read_f32_tensor, write_atomically, NamedBytes, NamedTensor};
use crate::lm::int8::{kernel_names, Int8Kernel, Int8Weights};
use crate::lm::{Gpt, Tokenizer};
use crate::spec::LmSpec;

/// A trained (or loaded) language model: the network and the tokenizer it reads.
#[derive(Debug)]
pub struct LanguageModel {
    pub gpt: Gpt,
    pub tokenizer: Tokenizer,
    pub info: LmInfo,
    /// A quantized model's int8 block kernels (`kiln compress --quantize int8`); `gpt`
    /// then holds them dequantized, for evaluation.
    pub int8: Option<Int8Weights>,
}

impl LanguageModel {
    /// How generation must read the linear kernels: a quantized model's int8 weights, or
    /// (None) the float ones.
    pub fn decode_kernels(&self) -> Option<crate::lm::generate::DecodeKernels> {
        self.int8.as_ref().map(crate::lm::generate::DecodeKernels::int8)
    }
}

/// `kiln.compression` of a quantized language model.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LmCompression {
    /// `int8_weights`: block kernels as int8 codes with a scale per output column.
    pub mode: String,
    /// The file name of the float model it was made from.
    pub source: String,
}

const COMPRESSION_KEY: &str = "kiln.compression";
const INT8_WEIGHTS: &str = "int8_weights";

/// What is saved with a language model besides its weights.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LmInfo {
    pub name: String,
    /// The spec it was trained from (data paths as given).
    pub spec: LmSpec,
    /// The corpus file and its SHA-256.
    pub corpus: String,
    pub corpus_sha256: String,
    pub train_tokens: usize,
    pub validation_tokens: usize,
    pub steps: usize,
    pub final_train_loss: Option<f32>,
    pub final_validation_loss: Option<f32>,
    /// Where an imported model came from (a Hugging Face checkpoint folder's name): it has
    /// no training text of its own, and `spec` only gives a starting point to fine-tune.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub imported_from: Option<String>,
}

pub(crate) const INFO_KEY: &str = "kiln.lm";

/// The record of a model file, written before text sources joined `[data]` or after.
fn parse_info(text: &str) -> serde_json::Result<LmInfo> {
    let mut value: serde_json::Value = serde_json::from_str(text)?;
    if let Some(data) = value.pointer_mut("/spec/data") {
        crate::data::add_implied_text_source(data);
    }
    serde_json::from_value(value)
}
const TOKENIZER_KEY: &str = "kiln.tokenizer";
const VOCAB_KEY: &str = "kiln.vocab_size";

/// Writes the model to `path` atomically (a crash mid-write leaves any old file whole).
pub fn save_language_model(model: &LanguageModel, path: &Path) -> Result<()> {
    let bytes = encode_with(model, None, path)?;
    write_atomically(path, &bytes)
}

/// Writes a quantized model: its block kernels as I8 codes (`{kernel}`) with F32 scales
/// (`{kernel}_scale`, one per output column), `kiln.compression` saying how.
pub fn save_quantized_language_model(
    model: &LanguageModel,
    compression: &LmCompression,
    path: &Path,
) -> Result<()> {
    let bytes = encode_with(model, Some(compression), path)?;
    write_atomically(path, &bytes)
}

/// The file's bytes for a GPT with its tokenizer and record (`path` names it in errors).
pub fn encode(gpt: &Gpt, tokenizer: &Tokenizer, info: &LmInfo, path: &Path) -> Result<Vec<u8>> {
    encode_parts(gpt, tokenizer, info, None, path)
}

fn encode_with(model: &LanguageModel, compression: Option<&LmCompression>, path: &Path) -> Result<Vec<u8>> {
    let int8 = match (&model.int8, compression) {
        (Some(weights), Some(c)) => Some((weights, c)),
        (None, None) => None,
        _ => {
            return Err(Error::Artifact {
                path: path.into(),
                message: "an int8 language model is saved with its compression record, a float one without"
                    .into(),
            })
        }
    };
    encode_parts(&model.gpt, &model.tokenizer, &model.info, int8, path)
}

fn encode_parts(
    gpt: &Gpt,
    tokenizer: &Tokenizer,
    info: &LmInfo,
    int8: Option<(&Int8Weights, &LmCompression)>,
    path: &Path,
) -> Result<Vec<u8>> {
    let fail = |message: String| Error::Artifact {
        path: path.into(),
        message,
    };
    let mut metadata = BTreeMap::new();
    metadata.insert("format".to_string(), FORMAT.to_string());
    metadata.insert("format_version".to_string(), FORMAT_VERSION.to_string());
    metadata.insert(KIND_KEY.to_string(), ModelKind::Gpt.name().to_string());
    metadata.insert(
        INFO_KEY.to_string(),
        serde_json::to_string(info).map_err(|e| fail(e.to_string()))?,
    );
    metadata.insert(TOKENIZER_KEY.to_string(), tokenizer.to_json());
    metadata.insert(VOCAB_KEY.to_string(), gpt.vocab_size().to_string());
    let mut quantized = std::collections::BTreeSet::new();
    let mut bytes: Vec<NamedBytes> = Vec::new();
    if let Some((weights, compression)) = int8 {
        metadata.insert(
            COMPRESSION_KEY.to_string(),
            serde_json::to_string(compression).map_err(|e| fail(e.to_string()))?,
        );
        for (layer, kernels) in weights.blocks.iter().enumerate() {
            for (name, kernel) in kernel_names(layer).into_iter().zip(kernels) {
                let outputs = kernel.scales.len();
                let dims = vec![kernel.codes.len() / outputs, outputs];
                let codes = kernel.codes.iter().map(|&c| c as u8).collect();
                let scales = kernel.scales.iter().flat_map(|s| s.to_le_bytes()).collect();
                bytes.push((format!("{name}_scale"), vec![outputs], "F32", scales));
                bytes.push((name.clone(), dims, "I8", codes));
                quantized.insert(name);
            }
        }
    }
    let tensors: Vec<NamedTensor> = gpt
        .params()
        .iter()
        .filter(|p| !quantized.contains(&p.name))
        .map(|p| (p.name.clone(), p.value.dims(), p.value.data()))
        .collect();
    encode_safetensors_with_int8(&metadata, &tensors, &bytes).map_err(fail)
}

/// Reads a language model saved by [`save_language_model`].
pub fn load_language_model(path: &Path) -> Result<LanguageModel> {
    let bytes = crate::io::map_file(path)?;
    let fail = |message: String| Error::Artifact {
        path: path.into(),
        message,
    };
    let (tensors, metadata) = crate::io::read_safetensors(&bytes, fail)?;
    super::check_format(&metadata).map_err(fail)?;
    if ModelKind::of(&metadata).map_err(fail)? != ModelKind::Gpt {
        return Err(fail("is a layer-stack model, not a language model".into()));
    }
    let field = |key: &str| {
        metadata
            .get(key)
            .ok_or_else(|| fail(format!("metadata has no `{key}`: not a kiln language model")))
    };
    let info =
        parse_info(field(INFO_KEY)?).map_err(|e| fail(format!("metadata `{INFO_KEY}` is invalid: {e}")))?;
    let tokenizer = Tokenizer::from_json(field(TOKENIZER_KEY)?).map_err(|e| fail(e.to_string()))?;
    let vocab: usize = field(VOCAB_KEY)?
        .parse()
        .map_err(|e| fail(format!("metadata `{VOCAB_KEY}` is invalid: {e}")))?;
    if vocab != tokenizer.vocab_size() {
        return Err(fail(format!(
            "the network has {vocab} outputs but its tokenizer {} tokens",
            tokenizer.vocab_size()
        )));
    }
    // Sizes come from the metadata: a file claiming a model larger than the values it holds
    // is refused before that model is allocated and initialized.
    let config = info.spec.model.gpt().clone();
    config.validate().map_err(|e| fail(e.to_string()))?;
    let held: usize = tensors
        .tensors()
        .iter()
        .map(|(_, view)| view.shape().iter().product::<usize>())
        .sum();
    let claimed = config.parameter_count(vocab);
    if claimed > held {
        return Err(fail(format!(
            "metadata `{INFO_KEY}` describes a model of {claimed} parameters, but the file holds {held} values"
        )));
    }
    let compression: Option<LmCompression> = match metadata.get(COMPRESSION_KEY) {
        None => None,
        Some(text) => {
            let c: LmCompression = serde_json::from_str(text)
                .map_err(|e| fail(format!("metadata `{COMPRESSION_KEY}` is invalid: {e}")))?;
            if c.mode != INT8_WEIGHTS {
                return Err(fail(format!(
                    "metadata `{COMPRESSION_KEY}` has mode `{}`; this kiln reads `{INT8_WEIGHTS}`",
                    c.mode
                )));
            }
            Some(c)
        }
    };
    let mut int8_kernels = BTreeMap::new();
    let gpt = Gpt::with_values(config, vocab, |name, dims| {
        if compression.is_some() && name.starts_with("blocks.") && name.ends_with(".kernel") {
            let kernel = read_int8_kernel(&tensors, name, dims).map_err(fail)?;
            let values = kernel.dequantized();
            int8_kernels.insert(name.to_string(), kernel);
            return crate::tensor::Tensor::new(dims, values);
        }
        read_f32_tensor(&tensors, name, dims).map_err(fail)
    })
    .map_err(|e| match e {
        Error::Artifact { .. } => e,
        other => fail(other.to_string()),
    })?;
    let int8 = compression.map(|_| {
        let blocks = (0..gpt.config().layers)
            .map(|layer| kernel_names(layer).map(|name| int8_kernels.remove(&name).expect("read above")))
            .collect();
        Int8Weights { blocks }
    });
    Ok(LanguageModel {
        gpt,
        tokenizer,
        info,
        int8,
    })
}

/// An int8 block kernel: I8 codes of the float kernel's shape and an F32 scale per column.
fn read_int8_kernel(
    tensors: &safetensors::SafeTensors,
    name: &str,
    dims: &[usize],
) -> std::result::Result<Int8Kernel, String> {
    let view = tensors
        .tensor(name)
        .map_err(|_| format!("tensor `{name}` is missing"))?;
    if view.dtype() != safetensors::Dtype::I8 || view.shape() != dims {
        return Err(format!(
            "tensor `{name}` is {:?} {:?}, expected I8 {dims:?} (the model is int8)",
            view.dtype(),
            view.shape()
        ));
    }
    let codes = view.data().iter().map(|&b| b as i8).collect();
    let scales = read_f32_tensor(tensors, &format!("{name}_scale"), &dims[1..])?.into_data();
    Ok(Int8Kernel { codes, scales })
}
