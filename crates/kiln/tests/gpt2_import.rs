//! A GPT-2 made by Hugging Face `transformers` (tests/fixtures/gpt2-tiny, made by its
//! `make_fixture.py`: random weights at initializer_range 0.5, random biases and LayerNorm
//! gains, a 400-token byte-level BPE) imported into kiln: the same ids as
//! `GPT2TokenizerFast` on mixed text, and the same logits as `GPT2LMHeadModel`.

use std::path::{Path, PathBuf};

use kiln::artifact::import_gpt2;
use kiln::lm::generate::KvCache;
use serde_json::Value;

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/gpt2-tiny")
}

fn expected() -> Value {
    let text = std::fs::read_to_string(fixture().join("expected.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn ids(value: &Value) -> Vec<u32> {
    value
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as u32)
        .collect()
}

#[test]
fn the_tokenizer_gives_gpt2_tokenizer_fasts_ids() {
    let model = import_gpt2(&fixture()).unwrap();
    let expected = expected();
    let mut checked = 0;
    for (name, case) in expected["texts"].as_object().unwrap() {
        let text = case["text"].as_str().unwrap();
        assert_eq!(
            model.tokenizer.encode(text).unwrap(),
            ids(&case["ids"]),
            "text `{name}`: {text:?}"
        );
        // Byte-level: decoding gives the text back (special tokens as their text).
        assert_eq!(
            model.tokenizer.decode(&ids(&case["ids"])),
            text,
            "decoding `{name}`"
        );
        checked += 1;
    }
    for prompt in expected["prompts"].as_array().unwrap() {
        let text = prompt["text"].as_str().unwrap();
        assert_eq!(
            model.tokenizer.encode(text).unwrap(),
            ids(&prompt["ids"]),
            "{text:?}"
        );
        checked += 1;
    }
    assert!(checked >= 15, "{checked} texts");
}

#[test]
fn the_imported_model_gives_transformers_logits() {
    let mut model = import_gpt2(&fixture()).unwrap();
    let expected = expected();
    let tolerance = expected["tolerance"].as_f64().unwrap() as f32;
    let vocab = model.gpt.vocab_size();
    for prompt in expected["prompts"].as_array().unwrap() {
        let name = prompt["name"].as_str().unwrap();
        let tokens = ids(&prompt["ids"]);
        let want: Vec<f32> = prompt["logits"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|row| row.as_array().unwrap().iter().map(|v| v.as_f64().unwrap() as f32))
            .collect();
        assert_eq!(want.len(), tokens.len() * vocab);
        let got = model.gpt.logits(&tokens, 1).unwrap();
        let worst = max_difference(&got, &want);
        eprintln!(
            "prompt `{name}` ({} tokens): logits within {worst:.1e}",
            tokens.len()
        );
        assert!(
            worst <= tolerance,
            "prompt `{name}`: logits differ by up to {worst}"
        );
        // The KV-cached generation path computes the same last-position logits.
        let mut cache = KvCache::new(&model.gpt);
        let mut last = Vec::new();
        model.gpt.feed(&mut cache, &tokens, &mut last).unwrap();
        let worst = max_difference(&last, &want[(tokens.len() - 1) * vocab..]);
        assert!(
            worst <= tolerance,
            "prompt `{name}`, KV cache: logits differ by up to {worst}"
        );
    }
}

#[test]
fn the_imported_model_saves_loads_and_writes_its_tokenizer_back() {
    let mut model = import_gpt2(&fixture()).unwrap();
    let dir = std::env::temp_dir().join(format!("kiln-gpt2-import-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("m.safetensors");
    kiln::artifact::save_language_model(&model, &path).unwrap();
    let mut loaded = kiln::artifact::load_language_model(&path).unwrap();
    let tokens = [1u32, 50, 120, 399, 7];
    assert_eq!(
        loaded.gpt.logits(&tokens, 1).unwrap(),
        model.gpt.logits(&tokens, 1).unwrap()
    );
    assert_eq!(loaded.tokenizer, model.tokenizer);
    assert_eq!(
        loaded.info.imported_from.as_deref(),
        Some("Hugging Face GPT-2 checkpoint gpt2-tiny")
    );
    let kiln::lm::Tokenizer::ByteLevel(bpe) = &loaded.tokenizer else {
        panic!("a byte-level tokenizer, got {}", loaded.tokenizer.kind())
    };
    bpe.write_files(&dir).unwrap();
    for file in ["vocab.json", "merges.txt"] {
        let written: Value = parse_either(&dir.join(file));
        let original: Value = parse_either(&fixture().join(file));
        assert_eq!(written, original, "{file} written back differs");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// vocab.json as JSON; merges.txt as its list of lines after the version line.
fn parse_either(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap();
    match path.extension().unwrap().to_str().unwrap() {
        "json" => serde_json::from_str(&text).unwrap(),
        _ => text
            .lines()
            .filter(|l| !l.starts_with("#version"))
            .map(Value::from)
            .collect(),
    }
}

#[test]
fn checkpoints_kiln_cannot_follow_are_refused_by_name() {
    let dir = std::env::temp_dir().join(format!("kiln-gpt2-refused-{}", std::process::id()));
    for (key, value, named) in [
        (
            "scale_attn_by_inverse_layer_idx",
            Value::from(true),
            "scale_attn_by_inverse_layer_idx",
        ),
        ("activation_function", Value::from("relu"), "activation_function"),
        ("n_inner", Value::from(100), "n_inner"),
        ("model_type", Value::from("bert"), "model_type"),
        ("vocab_size", Value::from(401), "vocab_size"),
        ("n_layer", Value::from(1), "more layers than n_layer"),
        ("n_layer", Value::from(3), "h.2."),
    ] {
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        for file in ["model.safetensors", "vocab.json", "merges.txt"] {
            std::fs::copy(fixture().join(file), dir.join(file)).unwrap();
        }
        let mut config: Value =
            serde_json::from_str(&std::fs::read_to_string(fixture().join("config.json")).unwrap()).unwrap();
        config[key] = value;
        std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
        let err = import_gpt2(&dir).unwrap_err().to_string();
        assert!(err.contains(named), "{key}: {err}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

fn max_difference(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}
