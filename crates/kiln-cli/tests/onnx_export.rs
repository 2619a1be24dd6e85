//! `kiln export MODEL --format onnx`: the file is a valid ONNX model (`onnx.checker` with
//! `full_check`) that ONNX Runtime runs to the same outputs as `kiln predict` on MNIST's
//! 10 000 test images, read from the same IDX file: within 1e-5 for float models, the same
//! class for at least 99.9% of images for int8 (static and dynamic). The runtime tests need
//! `$KILN_DATA` (MNIST) and `$KILN_PYTHON` with numpy, onnx and onnxruntime: `#[ignore]`d,
//! and `.ci/run` runs them. The graph's structure and the refusals need neither.

mod common;

use std::path::Path;
use std::process::Command;

use common::{assert_one_line_error, assert_success, run_in, Sandbox};
use kiln::io::proto::onnx::{DimensionValue, ModelProto};
use kiln::io::proto::Message;

/// How far an ONNX Runtime probability may be from kiln's for a float model.
const FLOAT_TOLERANCE: f64 = 1e-5;
/// The share of test images an int8 model's ONNX form must classify as kiln does.
const INT8_AGREEMENT: f64 = 0.999;
/// How far an int8 model's ONNX probabilities, every node run as written (no fusion), may
/// be from kiln's for 99% of samples: the same codes multiplied, so most samples match as
/// closely as a float model's; a few differ more where an input sits on a rounding
/// boundary (ONNX divides by the scale and rounds ties to even, kiln multiplies by its
/// inverse and rounds ties up) and one code moves. A wrong mapping would move every
/// sample. ONNX Runtime's fused integer kernels round on their own, so its default run is
/// held to the class agreement only.
const INT8_TYPICAL: f64 = 1e-4;

fn in_crate(relative: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(relative)
        .to_string_lossy()
        .into_owned()
}

fn kiln_data() -> String {
    std::env::var("KILN_DATA").expect("set KILN_DATA to the shared data folder (../shared/data)")
}

/// Runs kiln in the sandbox with `$KILN_DATA` kept (MNIST), offline.
fn kiln_with_data(s: &Sandbox, args: &[&str]) {
    let data = kiln_data();
    let home = s.home();
    let envs = [
        ("KILN_OFFLINE", Some("1")),
        ("HOME", Some(home.as_str())),
        ("KILN_DATA", Some(data.as_str())),
    ];
    assert_success(&run_in(&s.dir, args, &envs));
}

/// The MNIST test images, uncompressed (the file both kiln and the script read).
fn test_images(s: &Sandbox) -> String {
    let gz = Path::new(&kiln_data()).join("mnist/t10k-images-idx3-ubyte.gz");
    let mut raw = Vec::new();
    use std::io::Read;
    flate2::read::GzDecoder::new(std::fs::File::open(gz).unwrap())
        .read_to_end(&mut raw)
        .unwrap();
    s.write("t10k-images.idx", raw)
}

/// What `kiln predict --format json` gives: per row, the class name and the outputs.
fn kiln_predictions(s: &Sandbox, model: &str, input: &str) -> (Vec<String>, Vec<Vec<f64>>) {
    let out = s.kiln(&["predict", model, "--input", input, "--format", "json"]);
    assert_success(&out);
    let rows: Vec<serde_json::Value> = serde_json::from_str(&out.1).unwrap();
    let classes = rows
        .iter()
        .map(|r| r["class"].as_str().unwrap().to_string())
        .collect();
    let outputs = rows
        .iter()
        .map(|r| {
            r["probabilities"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_f64().unwrap())
                .collect()
        })
        .collect();
    (classes, outputs)
}

/// What ONNX Runtime gives for the exported file (after the checker): class names (by the
/// metadata's `kiln.classes`), probabilities and the graph's operator counts.
struct OnnxRun {
    classes: Vec<String>,
    probabilities: Vec<Vec<f64>>,
    /// With the runtime's graph optimizations off: every node as written.
    unfused: Vec<Vec<f64>>,
    ops: serde_json::Value,
}

fn onnx_runtime(onnx: &str, input: &str) -> OnnxRun {
    let python =
        std::env::var("KILN_PYTHON").expect("set KILN_PYTHON to a Python with numpy, onnx and onnxruntime");
    let out = Command::new(python)
        .args([&in_crate("tests/python/run_onnx.py"), onnx, input])
        .output()
        .expect("$KILN_PYTHON runs");
    assert!(
        out.status.success(),
        "run_onnx.py failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let names: Vec<String> = serde_json::from_str(v["metadata"]["kiln.classes"].as_str().unwrap()).unwrap();
    OnnxRun {
        classes: v["class"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| names[c.as_u64().unwrap() as usize].clone())
            .collect(),
        probabilities: rows(&v["probabilities"]),
        unfused: rows(&v["unfused_probabilities"]),
        ops: v["ops"].clone(),
    }
}

fn rows(v: &serde_json::Value) -> Vec<Vec<f64>> {
    let row = |r: &serde_json::Value| {
        r.as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect()
    };
    v.as_array().unwrap().iter().map(row).collect()
}

fn softmax(row: &[f64]) -> Vec<f64> {
    let top = row.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let e: Vec<f64> = row.iter().map(|v| (v - top).exp()).collect();
    let sum: f64 = e.iter().sum();
    e.iter().map(|v| v / sum).collect()
}

#[derive(Clone, Copy, PartialEq)]
enum Precision {
    Float,
    Int8,
}

/// The largest difference between two sets of probabilities, and the 99th percentile of
/// each sample's largest difference.
fn differences(a: &[Vec<f64>], b: &[Vec<f64>]) -> (f64, f64) {
    assert_eq!(a.len(), b.len());
    let mut per_sample: Vec<f64> = a
        .iter()
        .zip(b)
        .map(|(a, b)| a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f64::max))
        .collect();
    per_sample.sort_by(f64::total_cmp);
    (
        per_sample[per_sample.len() - 1],
        per_sample[per_sample.len() * 99 / 100],
    )
}

/// Exports `model`, runs it in ONNX Runtime on the test images and compares with `kiln
/// predict`; `logits`: kiln prints the model's logits, ONNX their softmax.
fn compare(s: &Sandbox, model: &str, images: &str, precision: Precision, logits: bool) -> OnnxRun {
    let onnx = format!("{model}.onnx");
    let out = s.kiln(&["export", model, "--format", "onnx", "--out", &onnx]);
    assert_success(&out);
    let (kiln_classes, kiln_outputs) = kiln_predictions(s, model, images);
    let run = onnx_runtime(&onnx, images);
    assert_eq!(run.probabilities.len(), kiln_outputs.len());
    let same = kiln_classes
        .iter()
        .zip(&run.classes)
        .filter(|(a, b)| a == b)
        .count();
    let agreement = same as f64 / kiln_classes.len() as f64;
    let kiln_probabilities: Vec<Vec<f64>> = match logits {
        true => kiln_outputs.iter().map(|k| softmax(k)).collect(),
        false => kiln_outputs,
    };
    let (worst, _) = differences(&kiln_probabilities, &run.probabilities);
    let (unfused_worst, typical) = differences(&kiln_probabilities, &run.unfused);
    // The figures the README quotes (`-- --nocapture` shows them).
    eprintln!(
        "{}: classes agree on {same}/{}, largest probability difference {worst:.2e}; unfused: largest {unfused_worst:.2e}, 99th percentile {typical:.2e}",
        Path::new(model).file_name().unwrap().to_string_lossy(),
        kiln_classes.len()
    );
    match precision {
        Precision::Float => {
            assert!(worst <= FLOAT_TOLERANCE, "{model}: largest difference {worst}");
            assert!(
                unfused_worst <= FLOAT_TOLERANCE,
                "{model}: unfused, largest difference {unfused_worst}"
            );
            assert_eq!(same, kiln_classes.len(), "{model}: classes differ");
        }
        Precision::Int8 => {
            assert!(
                agreement >= INT8_AGREEMENT,
                "{model}: classes agree on {agreement}"
            );
            assert!(
                typical <= INT8_TYPICAL,
                "{model}: 99th percentile difference {typical}"
            );
            for op in ["QuantizeLinear", "DequantizeLinear"] {
                assert!(
                    run.ops[op].as_u64().unwrap_or(0) > 0,
                    "{model}: no {op} in {}",
                    run.ops
                );
            }
        }
    }
    run
}

#[test]
#[ignore = "needs $KILN_DATA (MNIST) and $KILN_PYTHON with onnx and onnxruntime; .ci/run runs it"]
fn the_reference_mlp_and_mnist_cnn_run_in_onnx_runtime_as_in_kiln() {
    let s = Sandbox::new("onnx-reference");
    let images = test_images(&s);
    for (name, spec) in [("mlp", "mnist-mlp.toml"), ("cnn", "mnist-cnn.toml")] {
        let model = s.arg(&format!("{name}.safetensors"));
        let spec = in_crate(&format!("../../examples/{spec}"));
        kiln_with_data(&s, &["train", &spec, "--epochs", "1", "--quiet", "--out", &model]);
        let float = compare(&s, &model, &images, Precision::Float, false);
        assert_eq!(float.ops["QuantizeLinear"], serde_json::Value::Null);
        for mode in ["int8", "dynamic"] {
            let int8 = s.arg(&format!("{name}-{mode}.safetensors"));
            kiln_with_data(&s, &["compress", &model, "--quantize", mode, "--out", &int8]);
            compare(&s, &int8, &images, Precision::Int8, false);
        }
    }
}

/// Every other layer kind and option: strided `same` convolutions with GELU, dilation and
/// leaky ReLU; batch normalization channels-first, on a two-channel image channels-last
/// (without a shift) and on feature vectors; average and max pooling with padding; global
/// average pooling after a convolution and on the input; a Dense layer applied to each
/// pixel; softmax over a convolution's channels and a Reshape after it; tanh and sigmoid;
/// z-score and min-max normalization; a model trained on logits.
#[test]
#[ignore = "needs $KILN_DATA (MNIST) and $KILN_PYTHON with onnx and onnxruntime; .ci/run runs it"]
fn every_layer_kind_runs_in_onnx_runtime_as_in_kiln() {
    let s = Sandbox::new("onnx-layers");
    let images = test_images(&s);
    let specs = [
        (
            "convolutions",
            r#"normalization = { kind = "z_score" }
[model]
layers = [
  { type = "reshape", target_shape = [28, 28, 1] },
  { type = "conv2d", filters = 4, kernel_size = 3, strides = 2, padding = "same", activation = "gelu" },
  { type = "batch_normalization" },
  { type = "average_pooling2d", pool_size = 3, strides = 2, padding = "same" },
  { type = "conv2d", filters = 6, kernel_size = [3, 2], dilation_rate = 2, activation = "leaky_relu" },
  { type = "max_pooling2d", pool_size = 2, strides = 1, padding = "same" },
  { type = "global_average_pooling2d" },
  { type = "activation", activation = "tanh" },
  { type = "dense", units = 10 },
]"#,
            true,
        ),
        (
            "pixels",
            r#"normalization = { kind = "min_max" }
[model]
layers = [
  { type = "reshape", target_shape = [14, 28, 2] },
  { type = "batch_normalization", center = false },
  { type = "dense", units = 3, activation = "relu" },
  { type = "conv2d", filters = 4, kernel_size = 3, activation = "softmax" },
  { type = "max_pooling2d", pool_size = 2 },
  { type = "reshape", target_shape = [312] },
  { type = "batch_normalization" },
  { type = "dense", units = 16, activation = "sigmoid" },
  { type = "dropout", rate = 0.1 },
  { type = "dense", units = 10, activation = "softmax" },
]"#,
            false,
        ),
        (
            "pooled-input",
            r#"normalization = { kind = "scale", max = 255.0 }
[model]
layers = [
  { type = "reshape", target_shape = [28, 28, 1] },
  { type = "global_average_pooling2d" },
  { type = "dense", units = 10, activation = "softmax" },
]"#,
            false,
        ),
    ];
    for (name, body, logits) in specs {
        let spec = s.write(
            &format!("{name}.toml"),
            format!(
                "name = \"{name}\"\n[data]\nsource = \"mnist\"\n[preprocessing]\n{body}\n[training]\n\
                 optimizer = {{ type = \"adam\", learning_rate = 0.01 }}\nloss = \"sparse_categorical_crossentropy\"\n\
                 from_logits = {logits}\nepochs = 1\nbatch_size = 128\nvalidation_split = 0.1\nseed = 1\n"
            ),
        );
        let model = s.arg(&format!("{name}.safetensors"));
        kiln_with_data(&s, &["train", &spec, "--quiet", "--out", &model]);
        compare(&s, &model, &images, Precision::Float, logits);
        let int8 = s.arg(&format!("{name}-int8.safetensors"));
        let mode = if name == "pixels" { "dynamic" } else { "int8" };
        kiln_with_data(&s, &["compress", &model, "--quantize", mode, "--out", &int8]);
        compare(&s, &int8, &images, Precision::Int8, logits);
    }
}

/// A one-unit (sigmoid) model on feature vectors, built through the library, float and
/// static int8: `class` is 1 where the probability is above ½, as `kiln predict` decides.
#[test]
#[ignore = "needs $KILN_PYTHON with onnx and onnxruntime; .ci/run runs it"]
fn a_one_unit_model_on_feature_rows_runs_in_onnx_runtime_as_in_kiln() {
    use kiln::artifact::{self, ModelInfo};
    use kiln::nn::{Activation, BatchNormalization, Dense, Sequential};
    use kiln::quant::{Calibration, QuantMode, QuantizedModel};
    let s = Sandbox::new("onnx-binary");
    let model = Sequential::builder(&[4])
        .add(Dense::new(8).activation(Activation::Tanh))
        .add(BatchNormalization::new())
        .add(Dense::new(1).activation(Activation::Sigmoid))
        .build(5)
        .unwrap();
    let mut info = ModelInfo::for_model("binary", &model);
    info.classes = vec!["no".into(), "yes".into()];
    // Irregular values (a grid would put many inputs exactly halfway between two int8
    // codes, where ONNX and kiln round differently), spread so that both classes occur.
    let rows: Vec<Vec<f32>> = (0..400)
        .map(|i| {
            (0..4)
                .map(|j| 2.0 * ((i * 4 + j) as f32 * 0.618_034).sin())
                .collect()
        })
        .collect();
    let csv: String = rows
        .iter()
        .map(|r| r.iter().map(|v| v.to_string()).collect::<Vec<_>>().join(",") + "\n")
        .collect();
    let input = s.write("rows.csv", csv);
    let float_path = s.arg("binary.safetensors");
    artifact::save(&model, &info, Path::new(&float_path)).unwrap();
    let run = compare(&s, &float_path, &input, Precision::Float, false);
    assert!(run.classes.iter().any(|c| c == "yes") && run.classes.iter().any(|c| c == "no"));
    let samples: Vec<f32> = rows.concat();
    let int8 =
        QuantizedModel::quantize(model, QuantMode::Static, Calibration::MinMax, &samples, "binary").unwrap();
    let int8_path = s.arg("binary-int8.safetensors");
    artifact::save(&int8, &info, Path::new(&int8_path)).unwrap();
    compare(&s, &int8_path, &input, Precision::Int8, false);
}

/// The graph kiln writes, read back with the same protobuf structs: one float input with a
/// batch axis, `probabilities` and `class` out, opset 17, the weights as initializers.
#[test]
fn the_exported_graph_has_the_documented_inputs_and_outputs() {
    let s = Sandbox::new("onnx-structure");
    let model = s.digits_model("digits.safetensors");
    let onnx = s.arg("digits.onnx");
    let out = s.kiln(&["export", &model, "--out", &onnx]);
    assert_success(&out);
    assert!(out.1.contains("opset 17"), "{}", out.1);
    let proto = ModelProto::decode(std::fs::read(&onnx).unwrap().as_slice()).unwrap();
    assert_eq!(proto.opset_import[0].version, 17);
    assert_eq!(proto.producer_name, "kiln");
    let graph = proto.graph.unwrap();
    let names =
        |v: &[kiln::io::proto::onnx::ValueInfoProto]| v.iter().map(|i| i.name.clone()).collect::<Vec<_>>();
    assert_eq!(names(&graph.input), ["input"]);
    assert_eq!(names(&graph.output), ["probabilities", "class"]);
    let dims = &graph.input[0]
        .r#type
        .as_ref()
        .unwrap()
        .tensor_type
        .as_ref()
        .unwrap()
        .shape
        .as_ref()
        .unwrap()
        .dim;
    assert_eq!(dims[0].value, Some(DimensionValue::DimParam("batch".into())));
    let ops: Vec<&str> = graph.node.iter().map(|n| n.op_type.as_str()).collect();
    assert_eq!(
        ops,
        ["Div", "Flatten", "MatMul", "Add", "Relu", "MatMul", "Add", "Softmax", "Identity", "ArgMax"]
    );
    // Two kernels, two biases and the normalization's divisor.
    assert_eq!(graph.initializer.len(), 5);
    let classes = proto
        .metadata_props
        .iter()
        .find(|p| p.key == "kiln.classes")
        .unwrap();
    assert!(classes.value.starts_with("[\"0\""), "{}", classes.value);
}

#[test]
fn models_without_an_onnx_form_are_refused_and_nothing_is_written() {
    let s = Sandbox::new("onnx-refused");
    let out_file = s.arg("out.onnx");
    // A language model.
    let gpt = s.arg("gpt.safetensors");
    let fixture = in_crate("../kiln/tests/fixtures/gpt2-tiny");
    assert_success(&s.kiln(&["import", "gpt2", &fixture, "--out", &gpt]));
    let refused = s.kiln(&["export", &gpt, "--out", &out_file]);
    assert_one_line_error(&refused, &["gpt.safetensors", "language model", "classifiers"]);
    assert_eq!(refused.0.code(), Some(65));
    // An ensemble.
    let bag = s.arg("bag.safetensors");
    assert_success(&s.kiln(&["ensemble", "--members", "2", "--epochs", "1", "--out", &bag]));
    let refused = s.kiln(&["export", &bag, "--out", &out_file]);
    assert_one_line_error(&refused, &["bag.safetensors", "ensemble of 2", "single model"]);
    assert_eq!(refused.0.code(), Some(65));
    // A model on CSV table rows.
    let wine = s.arg("wine.safetensors");
    let spec = in_crate("../../examples/wine.toml");
    assert_success(&s.kiln(&["train", &spec, "--epochs", "1", "--quiet", "--out", &wine]));
    let refused = s.kiln(&["export", &wine, "--out", &out_file]);
    assert_one_line_error(&refused, &["wine.safetensors", "CSV table"]);
    assert_eq!(refused.0.code(), Some(65));
    assert!(!Path::new(&out_file).exists());
    // No such model (66), no folder for the output (73), a format kiln does not write (2).
    let digits = s.digits_model("digits.safetensors");
    let missing = s.kiln(&["export", &s.arg("nope.safetensors"), "--out", &out_file]);
    assert_one_line_error(&missing, &["nope.safetensors"]);
    assert_eq!(missing.0.code(), Some(66));
    let no_dir = s.kiln(&["export", &digits, "--out", &s.arg("no/such/dir/m.onnx")]);
    assert_one_line_error(&no_dir, &["--out", "does not exist"]);
    assert_eq!(no_dir.0.code(), Some(73));
    let format = s.kiln(&["export", &digits, "--format", "tflite", "--out", &out_file]);
    assert_eq!(format.0.code(), Some(2));
    assert!(format.2.contains("tflite"), "{}", format.2);
    assert!(!Path::new(&out_file).exists());
}
