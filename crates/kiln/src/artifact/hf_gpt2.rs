//! A Hugging Face GPT-2 checkpoint folder (`config.json`, `model.safetensors`,
//! `vocab.json`, `merges.txt`) as a kiln GPT.
//!
//! The layouts agree without reshaping: GPT-2's `Conv1D` weights are `[in, out]` like
//! kiln's Linear kernels, and `c_attn`'s output is `[q | k | v]` with each head's slice
//! contiguous, as kiln's fused attention reads it. The head is tied to `wte`.

use std::path::{Path, PathBuf};

use serde_json::Value;

use super::{LanguageModel, LmInfo};
use crate::data::{BpeSpec, BpeTag, DataSpec, TokenizerSpec};
use crate::error::{Error, Result};
use crate::io::{map_file, read_f32_tensor};
use crate::lm::byte_level::ByteLevelBpe;
use crate::lm::{Gpt, GptActivation, GptConfig, Tokenizer};
use crate::spec::{LmModelSpec, LmSpec, LmTrainingSpec};

/// Reads the checkpoint in `dir`; a config option kiln does not implement, a missing or
/// misshapen tensor, or a tensor kiln would not use is an error naming it.
pub fn import_gpt2(dir: &Path) -> Result<LanguageModel> {
    let config_path = dir.join("config.json");
    let config = read_config(&config_path)?;
    let tokenizer = ByteLevelBpe::from_files(&dir.join("vocab.json"), &dir.join("merges.txt"))?;
    let vocab = tokenizer.vocab_size();
    let declared = usize_field(&config.json, "vocab_size", &config_path)?;
    if declared != vocab {
        return Err(Error::data(
            &config_path,
            format!("vocab_size = {declared}, but vocab.json has {vocab} tokens"),
        ));
    }
    let weights_path = dir.join("model.safetensors");
    let gpt = read_weights(&weights_path, config.gpt.clone(), vocab)?;
    let name = dir
        .file_name()
        .map_or_else(|| "gpt2".to_string(), |n| n.to_string_lossy().into_owned());
    Ok(LanguageModel {
        gpt,
        tokenizer: Tokenizer::ByteLevel(tokenizer),
        info: imported_info(&name, config.gpt, vocab),
        int8: None,
    })
}

struct Gpt2Config {
    json: Value,
    gpt: GptConfig,
}

fn read_config(path: &Path) -> Result<Gpt2Config> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let json: Value =
        serde_json::from_str(&text).map_err(|e| Error::data(path, format!("is not JSON: {e}")))?;
    if let Some(kind) = json.get("model_type").and_then(Value::as_str) {
        if kind != "gpt2" {
            return Err(Error::data(
                path,
                format!("model_type = {kind:?}, expected \"gpt2\""),
            ));
        }
    }
    refuse_unimplemented(&json, path)?;
    let width = usize_field(&json, "n_embd", path)?;
    let hidden = match json.get("n_inner") {
        None | Some(Value::Null) => 4 * width,
        Some(_) => usize_field(&json, "n_inner", path)?,
    };
    if width == 0 || !hidden.is_multiple_of(width) {
        return Err(Error::data(
            path,
            format!("n_inner = {hidden}: kiln's MLP width is a whole multiple of n_embd = {width}"),
        ));
    }
    let context = match json.get("n_positions") {
        Some(_) => usize_field(&json, "n_positions", path)?,
        None => usize_field(&json, "n_ctx", path)?,
    };
    let gpt = GptConfig {
        layers: usize_field(&json, "n_layer", path)?,
        heads: usize_field(&json, "n_head", path)?,
        width,
        context,
        dropout: dropout(&json, path)?,
        tie_weights: true,
        mlp_ratio: hidden / width,
        layer_norm_epsilon: float_field(&json, "layer_norm_epsilon", 1e-5, path)?,
        activation: activation(&json, path)?,
    };
    gpt.validate().map_err(|e| Error::data(path, e.to_string()))?;
    Ok(Gpt2Config { json, gpt })
}

/// Options that change the computation in ways kiln's GPT does not follow.
fn refuse_unimplemented(json: &Value, path: &Path) -> Result<()> {
    let flag = |key: &str, default: bool| json.get(key).and_then(Value::as_bool).unwrap_or(default);
    for (key, supported) in [
        ("scale_attn_weights", true),
        ("scale_attn_by_inverse_layer_idx", false),
        ("add_cross_attention", false),
        ("tie_word_embeddings", true),
    ] {
        let default = supported;
        if flag(key, default) != supported {
            return Err(Error::data(
                path,
                format!(
                    "{key} = {}: kiln's GPT implements only {key} = {supported}",
                    !supported
                ),
            ));
        }
    }
    Ok(())
}

fn activation(json: &Value, path: &Path) -> Result<GptActivation> {
    match json
        .get("activation_function")
        .and_then(Value::as_str)
        .unwrap_or("gelu_new")
    {
        "gelu_new" | "gelu_pytorch_tanh" => Ok(GptActivation::GeluNew),
        "gelu" => Ok(GptActivation::Gelu),
        other => Err(Error::data(
            path,
            format!("activation_function = {other:?}: kiln's GPT has gelu_new (gelu_pytorch_tanh) and gelu"),
        )),
    }
}

/// kiln's GPT has one dropout rate; GPT-2's three must agree (they do in every released
/// checkpoint: 0.1).
fn dropout(json: &Value, path: &Path) -> Result<f32> {
    let rates: Vec<f32> = ["resid_pdrop", "embd_pdrop", "attn_pdrop"]
        .iter()
        .map(|key| float_field(json, key, 0.1, path))
        .collect::<Result<_>>()?;
    if rates.iter().any(|&r| r != rates[0]) {
        return Err(Error::data(
            path,
            format!(
                "resid_pdrop, embd_pdrop and attn_pdrop are {rates:?}: kiln's GPT has one dropout rate for all three"
            ),
        ));
    }
    Ok(rates[0])
}

fn usize_field(json: &Value, key: &str, path: &Path) -> Result<usize> {
    json.get(key)
        .and_then(Value::as_u64)
        .and_then(|v| usize::try_from(v).ok())
        .ok_or_else(|| Error::data(path, format!("{key} is missing or not a whole number")))
}

fn float_field(json: &Value, key: &str, default: f64, path: &Path) -> Result<f32> {
    match json.get(key) {
        None | Some(Value::Null) => Ok(default as f32),
        Some(v) => v
            .as_f64()
            .map(|v| v as f32)
            .ok_or_else(|| Error::data(path, format!("{key} = {v}: expected a number"))),
    }
}

/// The Hugging Face name of a kiln parameter (without the optional `transformer.` prefix).
fn hf_name(kiln: &str) -> String {
    kiln.replace("tok_embedding", "wte.weight")
        .replace("pos_embedding", "wpe.weight")
        .replace("blocks.", "h.")
        .replace(".attention.qkv.", ".attn.c_attn.")
        .replace(".attention.proj.", ".attn.c_proj.")
        .replace(".mlp.fc.", ".mlp.c_fc.")
        .replace(".mlp.proj.", ".mlp.c_proj.")
        .replace(".kernel", ".weight")
        .replace(".gamma", ".weight")
        .replace(".beta", ".bias")
}

/// Tensors a checkpoint may hold that kiln does not use: the causal-mask buffers of older
/// transformers versions, and the head, which is `wte` (tied).
fn ignored(name: &str) -> bool {
    name.ends_with(".attn.bias") || name.ends_with(".attn.masked_bias") || name == "lm_head.weight"
}

fn read_weights(path: &Path, config: GptConfig, vocab: usize) -> Result<Gpt> {
    let bytes = map_file(path)?;
    let fail = |message: String| Error::data(path, message);
    let (tensors, _) = crate::io::read_safetensors(&bytes, fail)?;
    let names: Vec<String> = tensors.names().into_iter().cloned().collect();
    let prefix = match names.iter().any(|n| n.starts_with("transformer.")) {
        true => "transformer.",
        false => "",
    };
    let mut used = std::collections::HashSet::new();
    let gpt = Gpt::with_values(config, vocab, |name, dims| {
        let hf = format!("{prefix}{}", hf_name(name));
        used.insert(hf.clone());
        read_f32_tensor(&tensors, &hf, dims).map_err(fail)
    })?;
    let unused: Vec<&String> = names
        .iter()
        .filter(|n| !used.contains(*n) && !ignored(n.strip_prefix(prefix).unwrap_or(n)))
        .collect();
    if let Some(first) = unused.first() {
        return Err(fail(format!(
            "holds {} tensor(s) a GPT-2 of this config does not have, such as `{first}` (more layers than n_layer?)",
            unused.len()
        )));
    }
    Ok(gpt)
}

/// The record an imported model carries: its source, and a spec to fine-tune it from
/// (its data `path` to be filled in; `steps` 0 as nothing was trained here).
fn imported_info(name: &str, gpt: GptConfig, vocab: usize) -> LmInfo {
    let spec = LmSpec {
        name: Some(name.to_string()),
        data: DataSpec::Text {
            path: PathBuf::new(),
            validation_fraction: 0.1,
            tokenizer: TokenizerSpec::Bpe(BpeSpec {
                kind: BpeTag::Bpe,
                vocab_size: vocab,
            }),
        },
        model: LmModelSpec::Gpt(gpt),
        training: LmTrainingSpec {
            steps: 0,
            init: None,
            batch_size: 4,
            optimizer: Default::default(),
            learning_rate_schedule: None,
            gradient_clipping: None,
            seed: 0,
            eval_interval: 500,
            eval_batches: 10,
            callbacks: Vec::new(),
        },
    };
    LmInfo {
        name: name.to_string(),
        spec,
        corpus: String::new(),
        corpus_sha256: String::new(),
        train_tokens: 0,
        validation_tokens: 0,
        steps: 0,
        final_train_loss: None,
        final_validation_loss: None,
        imported_from: Some(format!("Hugging Face GPT-2 checkpoint {name}")),
    }
}
