//! The model file is enough to predict with: `tests/python/predict_from_model_file.py`
//! re-implements `kiln predict` for a tabular model from the README's description of the
//! file (The model file), with numpy and safetensors only, and these tests check that it
//! prints what `kiln predict --format json` prints: the same class for every row, every
//! probability within 1e-5. The models cover numeric and categorical columns, gaps,
//! outliers, unseen categories, every normalization, every layer kind and activation, and
//! the compressed (int8, dynamic, f16, bf16, pruned, structured) and bagged forms. The int8
//! models' quantized layers read values made by exact f32 operations only (ReLU, batch
//! normalization): an exp or tanh from another math library may differ in the last bit and
//! move a code by one. They need `$KILN_PYTHON`, a Python with `safetensors` and `numpy`:
//! `#[ignore]`d, and `.ci/run` runs them. The CSVs are in `tests/fixtures/model-file`
//! (synthetic; the `-new` files hold rows to predict, with gaps, outliers, unseen
//! categories, reordered and extra columns).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{assert_success, Sandbox};

/// How far a probability of the script's may be from kiln's.
const TOLERANCE: f64 = 1e-5;

/// Categorical columns (text, and numeric codes listed in `categorical_columns`), gaps
/// filled with the mean, outliers clipped by z-score, min-max scaling; tanh, batch
/// normalization, gelu, dropout and softmax.
const FRUIT_SPEC: &str = r#"
name = "fruit"
[data]
source = "csv"
train = "fruit.csv"
label_column = "kind"
categorical_columns = ["zip"]
test_fraction = 0.25
[preprocessing]
missing = "mean"
outliers = { method = "z_score", threshold = 2.5, action = "clip" }
normalization = { kind = "min_max" }
[model]
layers = [
  { type = "dense", units = 16, activation = "tanh" },
  { type = "batch_normalization" },
  { type = "dense", units = 8, activation = "gelu" },
  { type = "dropout", rate = 0.1 },
  { type = "dense", units = 3, activation = "softmax" },
]
[training]
optimizer = { type = "adam", learning_rate = 0.01 }
loss = "sparse_categorical_crossentropy"
epochs = 5
batch_size = 16
validation_split = 0.2
seed = 11
"#;

/// Some columns in another order, the most frequent value for gaps, outliers by IQR
/// (dropped from training, kept at prediction), a uniform scale; leaky ReLU, activation
/// layers (sigmoid, log-softmax), a Dense layer without bias, and logits out.
const FRUIT_LOGITS_SPEC: &str = r#"
name = "fruit-logits"
[data]
source = "csv"
train = "fruit.csv"
label_column = "kind"
feature_columns = ["sugar", "colour", "weight", "length", "origin"]
test_fraction = 0.25
[preprocessing]
missing = "most_frequent"
outliers = { method = "iqr", action = "drop" }
normalization = { kind = "scale", max = 10.0 }
[model]
layers = [
  { type = "dense", units = 12, activation = "leaky_relu" },
  { type = "activation", activation = "sigmoid" },
  { type = "dense", units = 6, activation = "relu", use_bias = false },
  { type = "activation", activation = "log_softmax" },
  { type = "dense", units = 3 },
]
[training]
optimizer = { type = "adam", learning_rate = 0.01 }
loss = "sparse_categorical_crossentropy"
from_logits = true
epochs = 5
batch_size = 16
seed = 5
"#;

/// No header (prediction rows are matched by position), integer labels, the median for
/// gaps, z-scores; batch normalization without β and with its own ε; one sigmoid output.
const BINARY_SPEC: &str = r#"
name = "binary"
[data]
source = "csv"
train = "binary.csv"
header = false
[preprocessing]
missing = "median"
normalization = { kind = "z_score" }
[model]
layers = [
  { type = "dense", units = 8, activation = "relu" },
  { type = "batch_normalization", center = false, epsilon = 0.01 },
  { type = "dense", units = 1, activation = "sigmoid" },
]
[training]
optimizer = { type = "sgd", learning_rate = 0.05 }
loss = "binary_crossentropy"
epochs = 5
batch_size = 16
seed = 2
"#;

/// A row reshaped into a 2 × 4 image: convolutions (same and valid padding, a rectangular
/// kernel, dilation, strides) with batch normalization without γ after one, max, average
/// and global average pooling.
const GRID_SPEC: &str = r#"
name = "grid"
[data]
source = "csv"
train = "grid.csv"
[preprocessing]
normalization = { kind = "z_score" }
[model]
layers = [
  { type = "reshape", target_shape = [2, 4, 1] },
  { type = "conv2d", filters = 4, kernel_size = [2, 3], padding = "same" },
  { type = "batch_normalization", scale = false },
  { type = "activation", activation = "relu" },
  { type = "max_pooling2d", pool_size = [1, 2], padding = "same" },
  { type = "conv2d", filters = 3, kernel_size = 2, padding = "same", dilation_rate = [1, 2], activation = "relu" },
  { type = "average_pooling2d", pool_size = 2, strides = 1, padding = "same" },
  { type = "conv2d", filters = 5, kernel_size = 1, strides = [1, 2], activation = "tanh" },
  { type = "global_average_pooling2d" },
  { type = "dense", units = 3, activation = "softmax" },
]
[training]
optimizer = { type = "adam", learning_rate = 0.01 }
loss = "sparse_categorical_crossentropy"
epochs = 5
batch_size = 16
seed = 4
"#;

fn python() -> String {
    std::env::var("KILN_PYTHON").expect("set KILN_PYTHON to a Python with safetensors and numpy")
}

/// A path in this crate's folder.
fn in_crate(relative: &str) -> String {
    let path: PathBuf = Path::new(env!("CARGO_MANIFEST_DIR")).join(relative);
    path.to_str().expect("the source path is UTF-8").to_string()
}

/// Copies tests/fixtures/model-file/NAME into the sandbox (where the specs and `kiln
/// compress` look for their data); returns its path there.
fn fixture(s: &Sandbox, name: &str) -> String {
    let bytes = std::fs::read(in_crate(&format!("tests/fixtures/model-file/{name}"))).unwrap();
    s.write(name, bytes)
}

/// Trains `spec`, written as NAME.toml in the sandbox, into NAME.safetensors.
fn train(s: &Sandbox, name: &str, spec: &str) -> String {
    let spec = s.write(&format!("{name}.toml"), spec);
    let model = s.arg(&format!("{name}.safetensors"));
    assert_success(&s.kiln(&["train", &spec, "--quiet", "--no-checkpoint", "--out", &model]));
    model
}

/// `kiln compress MODEL --out NAME.safetensors ARGS…`; returns the new model's path.
fn compress(s: &Sandbox, model: &str, name: &str, args: &[&str]) -> String {
    let out = s.arg(&format!("{name}.safetensors"));
    let mut command: Vec<&str> = vec!["compress", model, "--out", out.as_str()];
    command.extend_from_slice(args);
    assert_success(&s.kiln(&command));
    out
}

/// The script's output, or its failure (exit status and stderr).
fn run_script(model: &str, rows: &str) -> Result<String, String> {
    let out = Command::new(python())
        .arg(in_crate("tests/python/predict_from_model_file.py"))
        .arg(model)
        .arg(rows)
        .output()
        .expect("$KILN_PYTHON runs");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    match out.status.success() {
        true => Ok(stdout),
        false => Err(format!(
            "{}: {stdout}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        )),
    }
}

/// `kiln predict MODEL --input ROWS --format json` and the script agree: the same rows,
/// the same class for each, every probability within [`TOLERANCE`].
fn assert_script_matches(s: &Sandbox, model: &str, rows: &str) {
    let kiln = s.kiln(&["predict", model, "--input", rows, "--format", "json"]);
    assert_success(&kiln);
    let script =
        run_script(model, rows).unwrap_or_else(|e| panic!("the script failed on {model} and {rows}: {e}"));
    let expected: serde_json::Value = serde_json::from_str(&kiln.1).expect("kiln prints JSON");
    let got: serde_json::Value = serde_json::from_str(&script).expect("the script prints JSON");
    let (expected, got) = (expected.as_array().unwrap(), got.as_array().unwrap());
    assert_eq!(expected.len(), got.len(), "rows predicted by {model} from {rows}");
    assert!(!expected.is_empty(), "{rows} has rows");
    let mut worst = 0.0f64;
    for (e, g) in expected.iter().zip(got) {
        let at = format!("{model} on {rows}, row {}", e["row"]);
        assert_eq!(e["row"], g["row"], "{at}");
        assert_eq!(e["class"], g["class"], "{at}");
        let (pe, pg) = (
            e["probabilities"].as_array().unwrap(),
            g["probabilities"].as_array().unwrap(),
        );
        assert_eq!(pe.len(), pg.len(), "{at}");
        for (a, b) in pe.iter().zip(pg) {
            let (a, b) = (a.as_f64().unwrap(), b.as_f64().unwrap());
            assert!((a - b).abs() <= TOLERANCE, "{at}: kiln {a}, the script {b}");
            worst = worst.max((a - b).abs());
        }
    }
    let count = expected.len();
    println!("{model} on {rows}: {count} rows, largest difference {worst:e}");
}

#[test]
#[ignore = "needs $KILN_PYTHON with safetensors and numpy; .ci/run runs it"]
fn the_wine_example_and_its_compressed_forms_predict_from_the_file_alone() {
    let s = Sandbox::new("model-file-wine");
    let spec = in_crate("../../examples/wine.toml");
    let data = in_crate("../../examples/data");
    let dirty = format!("{data}/wine-dirty.csv");
    let model = s.arg("wine.safetensors");
    let train: [&str; 8] = [
        "train",
        &spec,
        "--epochs",
        "3",
        "--quiet",
        "--no-checkpoint",
        "--out",
        &model,
    ];
    assert_success(&s.kiln(&train));
    // Gaps filled by the median, outliers clipped, z-scores; ReLU, dropout, softmax.
    assert_script_matches(&s, &model, &dirty);
    let variants: [(&str, &[&str]); 4] = [
        ("wine-int8", &["--quantize", "int8"]),
        ("wine-dynamic", &["--quantize", "dynamic"]),
        ("wine-f16", &["--quantize", "f16"]),
        ("wine-sparse-int8", &["--prune", "0.8", "--quantize", "int8"]),
    ];
    for (name, args) in variants {
        let mut args = args.to_vec();
        args.extend(["--data-dir", data.as_str()]);
        let compressed = compress(&s, &model, name, &args);
        assert_script_matches(&s, &compressed, &dirty);
    }
}

#[test]
#[ignore = "needs $KILN_PYTHON with safetensors and numpy; .ci/run runs it"]
fn categorical_columns_gaps_and_unseen_categories_predict_from_the_file_alone() {
    let s = Sandbox::new("model-file-fruit");
    let train_rows = fixture(&s, "fruit.csv");
    let rows = fixture(&s, "fruit-new.csv");
    let model = train(&s, "fruit", FRUIT_SPEC);
    assert_script_matches(&s, &model, &rows);
    assert_script_matches(&s, &model, &train_rows);
    let variants: [(&str, &[&str]); 3] = [
        ("fruit-bf16", &["--quantize", "bf16"]),
        ("fruit-sparse", &["--prune", "0.8"]),
        ("fruit-structured", &["--prune", "0.5", "--structured"]),
    ];
    for (name, args) in variants {
        let compressed = compress(&s, &model, name, args);
        assert_script_matches(&s, &compressed, &rows);
    }
    let spec = s.arg("fruit.toml");
    let ensemble = s.arg("fruit-ensemble.safetensors");
    assert_success(&s.kiln(&["ensemble", &spec, "--members", "3", "--out", &ensemble]));
    assert_script_matches(&s, &ensemble, &rows);
}

#[test]
#[ignore = "needs $KILN_PYTHON with safetensors and numpy; .ci/run runs it"]
fn scaled_features_activation_layers_and_logits_predict_from_the_file_alone() {
    let s = Sandbox::new("model-file-logits");
    let train_rows = fixture(&s, "fruit.csv");
    let rows = fixture(&s, "fruit-new.csv");
    let model = train(&s, "fruit-logits", FRUIT_LOGITS_SPEC);
    assert_script_matches(&s, &model, &rows);
    assert_script_matches(&s, &model, &train_rows);
    let f16 = compress(&s, &model, "fruit-logits-f16", &["--quantize", "f16"]);
    assert_script_matches(&s, &f16, &rows);
}

#[test]
#[ignore = "needs $KILN_PYTHON with safetensors and numpy; .ci/run runs it"]
fn a_headerless_binary_model_predicts_from_the_file_alone() {
    let s = Sandbox::new("model-file-binary");
    fixture(&s, "binary.csv");
    let rows = fixture(&s, "binary-new.csv");
    let model = train(&s, "binary", BINARY_SPEC);
    assert_script_matches(&s, &model, &rows);
    // Batch normalization between the Dense layers: int8 layer by layer, f32 in between.
    for (name, mode) in [("binary-int8", "int8"), ("binary-dynamic", "dynamic")] {
        let compressed = compress(&s, &model, name, &["--quantize", mode]);
        assert_script_matches(&s, &compressed, &rows);
    }
}

#[test]
#[ignore = "needs $KILN_PYTHON with safetensors and numpy; .ci/run runs it"]
fn convolutions_over_a_reshaped_row_predict_from_the_file_alone() {
    let s = Sandbox::new("model-file-grid");
    let train_rows = fixture(&s, "grid.csv");
    let rows = fixture(&s, "grid-new.csv");
    let model = train(&s, "grid", GRID_SPEC);
    assert_script_matches(&s, &model, &rows);
    assert_script_matches(&s, &model, &train_rows);
    // What the script does not re-implement, it refuses rather than guess.
    let int8 = compress(&s, &model, "grid-int8", &["--quantize", "int8"]);
    let refused = run_script(&int8, &rows).expect_err("the script has no int8 convolutions");
    assert!(refused.contains("error: an int8 Conv2D layer"), "{refused}");
}
