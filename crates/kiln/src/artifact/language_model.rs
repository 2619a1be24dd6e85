//! Language-model files: the same safetensors file as other kiln models (`kind: gpt`), with
//! the architecture, tokenizer and training record in the metadata under `kiln.lm` and
//! `kiln.tokenizer`, so a model file is all generation needs.

use std::collections::BTreeMap;
use std::path::Path;

use super::{ModelKind, FORMAT, FORMAT_VERSION, KIND_KEY};
use crate::error::{Error, Result};
use crate::io::{encode_safetensors, read_f32_tensor, write_atomically, NamedTensor};
use crate::lm::{Gpt, Tokenizer};
use crate::spec::LmSpec;

/// A trained (or loaded) language model: the network and the tokenizer it reads.
#[derive(Debug)]
pub struct LanguageModel {
    pub gpt: Gpt,
    pub tokenizer: Tokenizer,
    pub info: LmInfo,
}

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
    let bytes = encode(&model.gpt, &model.tokenizer, &model.info, path)?;
    write_atomically(path, &bytes)
}

/// The file's bytes for a GPT with its tokenizer and record (`path` names it in errors).
pub fn encode(gpt: &Gpt, tokenizer: &Tokenizer, info: &LmInfo, path: &Path) -> Result<Vec<u8>> {
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
    let tensors: Vec<NamedTensor> = gpt
        .params()
        .iter()
        .map(|p| (p.name.clone(), p.value.dims(), p.value.data()))
        .collect();
    encode_safetensors(&metadata, &tensors).map_err(fail)
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
    let gpt = Gpt::with_values(config, vocab, |name, dims| {
        read_f32_tensor(&tensors, name, dims).map_err(fail)
    })
    .map_err(|e| match e {
        Error::Artifact { .. } => e,
        other => fail(other.to_string()),
    })?;
    Ok(LanguageModel { gpt, tokenizer, info })
}
