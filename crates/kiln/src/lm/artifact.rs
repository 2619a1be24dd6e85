//! Saving and loading language models: the same safetensors file as other kiln models,
//! with the architecture, tokenizer and training record in the metadata under `kiln.lm`
//! and `kiln.tokenizer`, so a model file is all generation needs.

use std::collections::BTreeMap;
use std::path::Path;

use safetensors::SafeTensors;

use super::gpt::Gpt;
use super::tokenizer::Tokenizer;
use super::train::{LanguageModel, LmInfo};
use crate::artifact::{
    encode_safetensors, read_f32_tensor, write_atomically, NamedTensor, FORMAT, FORMAT_VERSION,
};
use crate::error::{Error, Result};

pub(crate) const INFO_KEY: &str = "kiln.lm";
const TOKENIZER_KEY: &str = "kiln.tokenizer";
const VOCAB_KEY: &str = "kiln.vocab_size";

/// Writes the model to `path` atomically (a crash mid-write leaves any old file whole).
pub fn save_language_model(model: &LanguageModel, path: &Path) -> Result<()> {
    let fail = |message: String| Error::Artifact {
        path: path.into(),
        message,
    };
    let mut metadata = BTreeMap::new();
    metadata.insert("format".to_string(), FORMAT.to_string());
    metadata.insert("format_version".to_string(), FORMAT_VERSION.to_string());
    metadata.insert(
        INFO_KEY.to_string(),
        serde_json::to_string(&model.info).map_err(|e| fail(e.to_string()))?,
    );
    metadata.insert(TOKENIZER_KEY.to_string(), model.tokenizer.to_json());
    metadata.insert(VOCAB_KEY.to_string(), model.gpt.vocab_size().to_string());
    let tensors: Vec<NamedTensor> = model
        .gpt
        .params()
        .iter()
        .map(|p| (p.name.clone(), p.value.dims(), p.value.data()))
        .collect();
    let bytes = encode_safetensors(&metadata, &tensors).map_err(fail)?;
    write_atomically(path, &bytes)
}

/// Whether the file at `path` is a kiln language model (and not a layer-stack model),
/// judged from its header alone: only the length prefix and the JSON header are read.
pub fn is_language_model(path: &Path) -> bool {
    use std::io::Read;
    let header = || -> Option<serde_json::Value> {
        let mut file = std::fs::File::open(path).ok()?;
        let mut length = [0u8; 8];
        file.read_exact(&mut length).ok()?;
        let length = usize::try_from(u64::from_le_bytes(length)).ok()?;
        // safetensors caps its header at 100 MB; anything larger is not one.
        if length > 100 << 20 {
            return None;
        }
        let mut json = vec![0u8; length];
        file.read_exact(&mut json).ok()?;
        serde_json::from_slice(&json).ok()
    };
    header().is_some_and(|h| h["__metadata__"].get(INFO_KEY).is_some())
}

/// Reads a language model saved by [`save_language_model`].
pub fn load_language_model(path: &Path) -> Result<LanguageModel> {
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
    let field = |key: &str| {
        metadata
            .get(key)
            .ok_or_else(|| fail(format!("metadata has no `{key}`: not a kiln language model")))
    };
    let info: LmInfo = serde_json::from_str(field(INFO_KEY)?)
        .map_err(|e| fail(format!("metadata `{INFO_KEY}` is invalid: {e}")))?;
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
    let mut gpt = Gpt::new(info.spec.model.gpt().clone(), vocab, 0).map_err(|e| fail(e.to_string()))?;
    let mut missing = None;
    gpt.load_values(|name| {
        let dims = tensors.tensor(name).ok()?.shape().to_vec();
        match read_f32_tensor(&tensors, name, &dims) {
            Ok(t) => Some(t),
            Err(e) => {
                missing = Some(e);
                None
            }
        }
    })
    .map_err(|e| fail(missing.clone().unwrap_or_else(|| e.to_string())))?;
    Ok(LanguageModel { gpt, tokenizer, info })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lm::generate::{generate, Sampling};
    use crate::lm::spec::LmSpec;
    use crate::lm::train::train_language_model;

    fn temp_dir(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("kiln-lm-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// A short run on a repeating text: the loss must fall far below chance, and the saved
    /// model must load back to generate exactly the same tokens.
    #[test]
    fn trains_saves_loads_and_generates_identically() {
        let dir = temp_dir("roundtrip");
        let text = "to be or not to be, that is the question.\n".repeat(60);
        std::fs::write(dir.join("text.txt"), &text).unwrap();
        let spec_text = r#"
            [data]
            path = "text.txt"
            [model]
            type = "gpt"
            layers = 1
            heads = 2
            width = 16
            context = 16
            [training]
            steps = 120
            batch_size = 8
            eval_interval = 60
            eval_batches = 4
            [training.optimizer]
            type = "adam"
            learning_rate = 0.01
        "#;
        let spec_path = dir.join("spec.toml");
        std::fs::write(&spec_path, spec_text).unwrap();
        let spec = LmSpec::from_file(&spec_path).unwrap();
        let mut events = 0;
        let outcome = train_language_model(&spec, None, &mut |_| events += 1).unwrap();
        assert_eq!(events, 2);
        let chance = (outcome.model.tokenizer.vocab_size() as f32).ln();
        let val = outcome.model.info.final_validation_loss.unwrap();
        assert!(val < 0.5 * chance, "validation loss {val} vs chance {chance}");

        let path = dir.join("lm.safetensors");
        save_language_model(&outcome.model, &path).unwrap();
        assert!(is_language_model(&path));
        let loaded = load_language_model(&path).unwrap();
        assert_eq!(loaded.tokenizer, outcome.model.tokenizer);
        assert_eq!(loaded.info, outcome.model.info);
        let sampling = Sampling {
            temperature: 0.8,
            top_k: Some(5),
            top_p: None,
            seed: 9,
        };
        let prompt = loaded.tokenizer.encode("to be").unwrap();
        let before = generate(&outcome.model.gpt, &prompt, 50, &sampling, true, &mut |_| {}).unwrap();
        let after = generate(&loaded.gpt, &prompt, 50, &sampling, true, &mut |_| {}).unwrap();
        assert_eq!(before, after);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn files_that_are_not_language_models_are_named() {
        let dir = temp_dir("notlm");
        let path = dir.join("x.safetensors");
        std::fs::write(&path, b"not a model").unwrap();
        assert!(!is_language_model(&path));
        let err = load_language_model(&path).unwrap_err().to_string();
        assert!(
            err.contains("x.safetensors") && err.contains("not a safetensors file"),
            "{err}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
