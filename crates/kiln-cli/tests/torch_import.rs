//! PyTorch state dicts into kiln (`kiln import torch`): an MLP and a CNN with batch norm
//! trained briefly by PyTorch on the digits (crates/kiln/tests/fixtures/torch-import, made
//! by its make_fixture.py), imported with the kiln spec of the same model; `kiln predict`
//! then gives PyTorch's probabilities within 1e-5, and mismatches are named.

mod common;

use std::path::PathBuf;

use common::*;
use serde_json::Value;

fn fixture(name: &str) -> String {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../kiln/tests/fixtures/torch-import");
    path_str(&dir.join(name))
}

fn expected() -> Value {
    serde_json::from_str(&std::fs::read_to_string(fixture("expected.json")).unwrap()).unwrap()
}

#[test]
fn imported_models_predict_as_pytorch_does() {
    let s = Sandbox::new("torch-import");
    let expected = expected();
    let rows: String = expected["pixels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|row| {
            let cells: Vec<String> = row.as_array().unwrap().iter().map(|v| v.to_string()).collect();
            cells.join(",") + "\n"
        })
        .collect();
    let rows = s.write("rows.csv", rows);
    for name in ["mlp", "cnn"] {
        let model = s.arg(&format!("{name}.safetensors"));
        let state = fixture(&format!("{name}.safetensors"));
        let spec = fixture(&format!("{name}.toml"));
        assert_success(&s.kiln(&["import", "torch", &state, "--spec", &spec, "--out", &model]));
        let out = s.kiln(&["predict", &model, "--input", &rows, "--format", "json"]);
        assert_success(&out);
        let got: Value = serde_json::from_str(&out.1).unwrap();
        let want = &expected["models"][name]["probabilities"];
        let mut worst = 0f64;
        for (row, probabilities) in got.as_array().unwrap().iter().zip(want.as_array().unwrap()) {
            for (a, b) in row["probabilities"]
                .as_array()
                .unwrap()
                .iter()
                .zip(probabilities.as_array().unwrap())
            {
                worst = worst.max((a.as_f64().unwrap() - b.as_f64().unwrap()).abs());
            }
        }
        assert!(
            worst <= 1e-5,
            "{name}: probabilities differ from PyTorch's by {worst}"
        );
        // The spec's data source is recorded: eval finds the digits' test split.
        let out = s.kiln(&["eval", &model]);
        assert_success(&out);
        assert!(out.1.contains("test_accuracy: 0.9"), "{name}: {}", out.1);
    }
}

#[test]
fn mismatches_are_named_with_both_sides() {
    let s = Sandbox::new("torch-import-bad");
    let out_file = s.arg("x.safetensors");
    let import = |state: &str, spec: &str| {
        s.kiln(&[
            "import",
            "torch",
            &fixture(state),
            "--spec",
            spec,
            "--out",
            &out_file,
        ])
    };
    // The CNN's state dict for the MLP's spec: both lists in the message.
    let out = import("cnn.safetensors", &fixture("mlp.toml"));
    assert_one_line_error(
        &out,
        &["2 layers with weights", "4 modules", "running_var [8]", "3 dense"],
    );
    assert_eq!(out.0.code(), Some(65));
    // One layer narrower than the weights.
    let narrow = std::fs::read_to_string(fixture("mlp.toml"))
        .unwrap()
        .replace("units = 32", "units = 31");
    let out = import("mlp.safetensors", &s.write("narrow.toml", narrow));
    assert_one_line_error(&out, &["layer 1 (dense)", "`1.weight`", "[32, 64]"]);
    // No --spec, or a normalization fitted by kiln.
    let out = s.kiln(&["import", "torch", &fixture("mlp.safetensors"), "--out", &out_file]);
    assert_one_line_error(&out, &["--spec"]);
    assert_eq!(out.0.code(), Some(2));
    let fitted = std::fs::read_to_string(fixture("mlp.toml"))
        .unwrap()
        .replace("{ kind = \"scale\", max = 16.0 }", "{ kind = \"z_score\" }");
    let out = import("mlp.safetensors", &s.write("fitted.toml", fitted));
    assert_one_line_error(&out, &["fitted.toml", "z_score"]);
    assert!(!s.path("x.safetensors").exists(), "nothing written on failure");
}
