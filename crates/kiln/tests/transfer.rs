//! Transfer learning on the embedded digits: a body trained once, then a new head trained
//! on top of it with the body frozen — the frozen weights do not move, the head does —
//! and every mismatch between the spec and the model it starts from is a named error.

use std::path::{Path, PathBuf};

use kiln::pipeline::{train, RunOptions};
use kiln::spec::TrainSpec;

fn spec(layers: &str, epochs: usize) -> TrainSpec {
    let text = format!(
        r#"
[data]
source = "digits"
[preprocessing]
normalization = {{ kind = "scale", max = 16.0 }}
[model]
layers = [
{layers}
]
[training]
optimizer = {{ type = "adam", learning_rate = 0.003 }}
loss = "sparse_categorical_crossentropy"
epochs = {epochs}
seed = 4
"#
    );
    TrainSpec::parse(&text, Path::new("t.toml")).unwrap()
}

const BODY: &str = r#"
  { type = "flatten" },
  { type = "dense", units = 48, activation = "relu", name = "features" },
  { type = "dense", units = 10, activation = "softmax", name = "head" },
"#;

fn base_model(dir: &Path) -> PathBuf {
    let outcome = train(&spec(BODY, 5), &RunOptions::default()).unwrap();
    let path = dir.join("base.safetensors");
    kiln::artifact::save(&outcome.model, &outcome.info, &path).unwrap();
    path
}

fn weights(model: &kiln::nn::Sequential, name: &str) -> Vec<f32> {
    model
        .params
        .iter()
        .find(|p| p.name == name)
        .unwrap()
        .value
        .data()
        .to_vec()
}

#[test]
fn a_new_head_trains_on_a_frozen_body_that_does_not_move() {
    let dir = std::env::temp_dir().join(format!("kiln-transfer-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let base_path = base_model(&dir);
    let base = kiln::artifact::load(&base_path).unwrap();
    let fine = spec(
        r#"
  { type = "flatten" },
  { type = "dense", units = 48, activation = "relu", name = "features", trainable = false },
  { type = "dropout", rate = 0.1 },
  { type = "dense", units = 10, activation = "softmax", name = "new_head" },
"#,
        3,
    );
    assert_eq!(fine.model.frozen, vec![1]);
    let options = RunOptions {
        init: Some(&base_path),
        ..Default::default()
    };
    let outcome = train(&fine, &options).unwrap();
    assert_eq!(outcome.initialized, vec!["features".to_string()]);
    // The frozen body is bit-identical to the base model's; the new head has learned.
    assert_eq!(
        weights(&outcome.model, "layers.1.kernel"),
        weights(base.model.float(), "layers.1.kernel")
    );
    assert_eq!(
        weights(&outcome.model, "layers.1.bias"),
        weights(base.model.float(), "layers.1.bias")
    );
    let fresh = kiln::nn::Sequential::new(&[8, 8], fine.model.layers.clone(), fine.training.seed).unwrap();
    assert_ne!(
        weights(&outcome.model, "layers.3.kernel"),
        weights(&fresh, "layers.3.kernel")
    );
    assert!(
        outcome.test.accuracy > 0.85,
        "a head on learned features: {}",
        outcome.test.accuracy
    );
    // The saved model remembers which layers were frozen and their names.
    let saved = dir.join("fine.safetensors");
    kiln::artifact::save(&outcome.model, &outcome.info, &saved).unwrap();
    let again = kiln::artifact::load(&saved).unwrap();
    assert_eq!(again.info.architecture.frozen, vec![1]);
    assert_eq!(
        again.info.architecture.layer_names(),
        ["flatten", "features", "dropout", "new_head"]
    );

    // Unfrozen, the same start moves the body.
    let mut unfrozen = fine.clone();
    unfrozen.model.frozen.clear();
    let moved = train(&unfrozen, &options).unwrap();
    assert_ne!(
        weights(&moved.model, "layers.1.kernel"),
        weights(base.model.float(), "layers.1.kernel")
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn mismatched_layers_are_errors_naming_the_layer() {
    let dir = std::env::temp_dir().join(format!("kiln-transfer-bad-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let base_path = base_model(&dir);
    let options = RunOptions {
        init: Some(&base_path),
        ..Default::default()
    };
    let err = |layers: &str| train(&spec(layers, 1), &options).unwrap_err().to_string();
    let wide = err(
        r#"{ type = "flatten" }, { type = "dense", units = 64, name = "features" }, { type = "dense", units = 10, activation = "softmax" }"#,
    );
    assert!(
        wide.contains("layer \"features\": kernel has shape [64, 48] there but [64, 64] in the spec"),
        "{wide}"
    );
    assert!(wide.starts_with(&base_path.display().to_string()), "{wide}");
    let kind = err(
        r#"{ type = "flatten", name = "features" }, { type = "dense", units = 10, activation = "softmax" }"#,
    );
    assert!(
        kind.contains("layer \"features\" is a dense there but a flatten in the spec"),
        "{kind}"
    );
    let none = err(
        r#"{ type = "flatten", name = "a" }, { type = "dense", units = 10, activation = "softmax", name = "b" }"#,
    );
    assert!(none.contains("has no layer with weights named like one of the spec's (its layers: flatten, features, head; the spec's: a, b)"), "{none}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn layer_names_default_like_keras_and_must_be_unique() {
    let s = spec(
        r#"{ type = "flatten" }, { type = "dense", units = 8 }, { type = "dense", units = 10, activation = "softmax" }"#,
        1,
    );
    assert_eq!(s.model.layer_names(), ["flatten", "dense", "dense_1"]);
    let text = |layers: &str| {
        format!("[data]\nsource = \"digits\"\n[model]\nlayers = [{layers}]\n[training]\nloss = \"sparse_categorical_crossentropy\"\nepochs = 1\n")
    };
    let dup = TrainSpec::parse(
        &text(r#"{ type = "dense", units = 8, name = "x" }, { type = "dense", units = 10, name = "x" }"#),
        Path::new("d.toml"),
    );
    assert!(dup
        .unwrap_err()
        .to_string()
        .contains("model.layers[1]: the name \"x\" is already another layer's"));
    let bad = TrainSpec::parse(
        &text(r#"{ type = "dense", units = 8, trainable = "no" }"#),
        Path::new("d.toml"),
    );
    assert!(bad
        .unwrap_err()
        .to_string()
        .contains("trainable = \"no\" must be true or false"));
    // Written back, a spec keeps its names and frozen layers.
    let frozen = TrainSpec::parse(&text(r#"{ type = "dense", units = 8, name = "body", trainable = false }, { type = "dense", units = 10 }"#), Path::new("d.toml")).unwrap();
    let again = TrainSpec::parse(&frozen.to_toml().unwrap(), Path::new("d.toml")).unwrap();
    assert_eq!(again, frozen);
    assert_eq!(again.model.frozen, vec![0]);
}
