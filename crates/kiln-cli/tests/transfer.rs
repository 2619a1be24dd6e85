//! `kiln train --init MODEL`: a new head on a frozen, pretrained body from the command line.

mod common;

use common::*;

fn spec(layers: &str) -> String {
    format!(
        r#"
[data]
source = "digits"
[preprocessing]
normalization = {{ kind = "scale", max = 16.0 }}
[model]
layers = [{layers}]
[training]
optimizer = {{ type = "adam", learning_rate = 0.003 }}
loss = "sparse_categorical_crossentropy"
epochs = 3
seed = 2
"#
    )
}

#[test]
fn init_starts_from_named_layers_and_reports_them() {
    let s = Sandbox::new("init");
    let base = s.write(
        "base.toml",
        spec(r#"{ type = "flatten" }, { type = "dense", units = 32, activation = "relu", name = "body" }, { type = "dense", units = 10, activation = "softmax" }"#),
    );
    let base_model = s.arg("base.safetensors");
    assert_success(&s.kiln(&["train", &base, "--out", &base_model, "--quiet"]));
    let fine = s.write(
        "fine.toml",
        spec(r#"{ type = "flatten" }, { type = "dense", units = 32, activation = "relu", name = "body", trainable = false }, { type = "dense", units = 10, activation = "softmax", name = "new_head" }"#),
    );
    let out = s.kiln(&["train", &fine, "--init", &base_model]);
    assert_success(&out);
    assert!(
        out.1
            .contains(&format!("started from {base_model}: layers body (frozen: body)")),
        "{}",
        out.1
    );

    let wide = s.write(
        "wide.toml",
        spec(r#"{ type = "flatten" }, { type = "dense", units = 16, name = "body" }, { type = "dense", units = 10, activation = "softmax" }"#),
    );
    assert_one_line_error(
        &s.kiln(&["train", &wide, "--init", &base_model]),
        &[
            &base_model,
            "layer \"body\": kernel has shape [64, 32] there but [64, 16] in the spec",
        ],
    );
    let missing = s.arg("nope.safetensors");
    assert_one_line_error(&s.kiln(&["train", &fine, "--init", &missing]), &[&missing]);
}
