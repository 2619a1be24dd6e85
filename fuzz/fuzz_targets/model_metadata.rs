//! Real model files with fuzzed metadata: the safetensors container and its tensors stay
//! valid, so every input reaches the code that reads kiln's own metadata (`kiln.*` keys:
//! architecture, preprocessing, compression, sparse kernels, lineage, tabular schema,
//! the language model's record, tokenizer and vocabulary size).
//!
//! Input: byte 0 picks the base model (one of the legacy fixtures in `seeds/model_load/`:
//! an MLP, a CNN, an int8 MLP, a pruned MLP, a 3-member ensemble, a character GPT);
//! byte 1 picks what changes:
//!
//! - below 128: metadata key `KEYS[b % KEYS.len()]` gets the rest of the input (UTF-8,
//!   invalid bytes replaced) as its value, added if the base has no such key;
//! - 128 to 254: that key is removed (the rest is ignored);
//! - 255: the rest is a JSON object of strings that replaces the whole metadata.
//!
//! The file is re-encoded with the `safetensors` crate and read every way kiln reads a
//! model (`kiln_fuzz::load_every_way`).
#![no_main]

use std::collections::HashMap;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use safetensors::tensor::{SafeTensors, TensorView};

/// The metadata keys kiln reads (`artifact/mod.rs`, `artifact/language_model.rs`,
/// `artifact/sparse.rs`, `quant`). The order is the input format: keep it.
const KEYS: [&str; 17] = [
    "format",
    "format_version",
    "kiln.kind",
    "kiln.name",
    "kiln.architecture",
    "kiln.preprocessing",
    "kiln.classes",
    "kiln.training",
    "kiln.data",
    "kiln.lineage",
    "kiln.table",
    "kiln.compression",
    "kiln.sparse",
    "kiln.sparse_int8",
    "kiln.lm",
    "kiln.tokenizer",
    "kiln.vocab_size",
];

/// Model files written by kiln's earlier release (crates/kiln-cli/tests/fixtures/legacy),
/// copied into the seeds. The order is the input format: keep it.
static BASES: [&[u8]; 6] = [
    include_bytes!("../seeds/model_load/mlp.safetensors"),
    include_bytes!("../seeds/model_load/cnn.safetensors"),
    include_bytes!("../seeds/model_load/int8.safetensors"),
    include_bytes!("../seeds/model_load/pruned.safetensors"),
    include_bytes!("../seeds/model_load/ensemble.safetensors"),
    include_bytes!("../seeds/model_load/gpt.safetensors"),
];

struct Base {
    tensors: Vec<(String, TensorView<'static>)>,
    metadata: HashMap<String, String>,
}

fn bases() -> &'static [Base] {
    static PARSED: OnceLock<Vec<Base>> = OnceLock::new();
    PARSED.get_or_init(|| {
        BASES
            .iter()
            .map(|bytes| {
                let (_, header) = SafeTensors::read_metadata(bytes).expect("a base model's header");
                let tensors = SafeTensors::deserialize(bytes).expect("a base model's tensors");
                Base {
                    tensors: tensors.tensors(),
                    metadata: header.metadata().clone().unwrap_or_default(),
                }
            })
            .collect()
    })
}

fuzz_target!(|data: &[u8]| {
    let [base, change, rest @ ..] = data else {
        return;
    };
    let base = &bases()[usize::from(*base) % BASES.len()];
    let key = KEYS[usize::from(*change) % KEYS.len()];
    let metadata = match *change {
        255 => match serde_json::from_slice::<HashMap<String, String>>(rest) {
            Ok(map) => map,
            Err(_) => return,
        },
        128.. => {
            let mut m = base.metadata.clone();
            m.remove(key);
            m
        }
        _ => {
            let mut m = base.metadata.clone();
            m.insert(key.to_string(), String::from_utf8_lossy(rest).into_owned());
            m
        }
    };
    let bytes = safetensors::serialize(base.tensors.iter().map(|(n, v)| (n, v)), &Some(metadata))
        .expect("the base's tensors serialize");
    let path = kiln_fuzz::write_scratch("model.safetensors", &bytes);
    kiln_fuzz::load_every_way(&path);
});
