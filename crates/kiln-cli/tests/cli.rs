//! End-to-end tests of the `kiln` binary: every bad input is a one-line `error: …` naming
//! the file, field or value at fault (never a panic), nothing saved is lost when a command
//! fails, and the offline happy path (train, inspect, eval, predict) works and agrees with
//! itself.
//!
//! Tests that need MNIST read it through `$KILN_DATA` (e.g. `KILN_DATA=../shared/data`), and
//! the Python interop test runs `$KILN_PYTHON` (a python with `safetensors` and `numpy`):
//! both are `#[ignore]`d, so cargo counts them, and `.ci/run` runs them.

mod common;

use std::path::Path;
use std::process::Command;

use common::*;

/// A raw IDX file: two zero bytes, the type code, the number of dimensions, the
/// dimensions as big-endian u32, then `data`.
fn idx(type_code: u8, dims: &[u32], data: &[u8]) -> Vec<u8> {
    let mut bytes = vec![0, 0, type_code, dims.len() as u8];
    for d in dims {
        bytes.extend_from_slice(&d.to_be_bytes());
    }
    bytes.extend_from_slice(data);
    bytes
}

/// Deterministic pseudo-random digit-like values 0..=16.
fn pixel_values(count: usize, seed: u64) -> Vec<u8> {
    let mut state = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..count)
        .map(|_| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((state >> 33) % 17) as u8
        })
        .collect()
}

/// `rows` lines of 64 integer features 0..=16, no header.
fn digits_csv(rows: usize) -> String {
    pixel_values(rows * 64, 11)
        .chunks(64)
        .map(|r| {
            let cells: Vec<String> = r.iter().map(|v| v.to_string()).collect();
            cells.join(",") + "\n"
        })
        .collect()
}

/// A spec for a labelled CSV file next to it.
fn csv_spec(train: &str, layers: &str) -> String {
    format!(
        r#"
[data]
source = "csv"
train = "{train}"

[model]
layers = [
{layers}
]

[training]
loss = "sparse_categorical_crossentropy"
epochs = 1
"#
    )
}

const MNIST_SPEC: &str = r#"
[data]
source = "mnist"

[preprocessing]
normalization = { kind = "scale", max = 255.0 }

[model]
layers = [
  { type = "flatten" },
  { type = "dense", units = 10, activation = "softmax" },
]

[training]
optimizer = { type = "adam", learning_rate = 0.001 }
loss = "sparse_categorical_crossentropy"
epochs = 1
batch_size = 128
seed = 1
"#;

const MNIST_FILES: [&str; 4] = [
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
];

/// `$KILN_DATA`, which the `#[ignore]`d MNIST tests require.
fn kiln_data() -> String {
    match std::env::var("KILN_DATA") {
        Ok(d) if !d.is_empty() => d,
        _ => panic!("set KILN_DATA to the shared data folder (../shared/data) to run this test"),
    }
}

// ---------------------------------------------------------------------------------------
// Bad input

#[test]
fn mnist_missing_from_a_given_data_dir_names_that_dir() {
    let s = Sandbox::new("mnist-given-dir");
    let spec = s.write("mnist.toml", MNIST_SPEC);
    std::fs::create_dir(s.path("empty")).unwrap();
    let empty = s.arg("empty");
    let out = s.kiln(&["train", &spec, "--data-dir", &empty]);
    assert_one_line_error(
        &out,
        &[&empty, "MNIST not found", "missing train-images-idx3-ubyte"],
    );
    // A folder that does not exist is reported the same way.
    let nowhere = s.arg("nowhere");
    let out = s.kiln(&["train", &spec, "--data-dir", &nowhere]);
    assert_one_line_error(&out, &[&nowhere, "no such folder"]);
}

#[test]
fn mnist_missing_offline_says_where_to_put_the_files() {
    let s = Sandbox::new("mnist-offline");
    let spec = s.write("mnist.toml", MNIST_SPEC);
    let out = s.kiln(&["train", &spec]);
    let cache = format!("{}/.cache/kiln/mnist", s.home());
    assert_one_line_error(
        &out,
        &[
            "MNIST is not available",
            &cache,
            "$KILN_DATA is not set",
            "KILN_OFFLINE=1",
            "Put the four MNIST files",
            "$KILN_DATA/mnist",
            "--data-dir",
        ],
    );
    assert!(
        !s.path("home/.cache").exists(),
        "offline must not create the cache"
    );
}

#[test]
fn mnist_download_failure_is_reported() {
    let s = Sandbox::new("mnist-download");
    let spec = s.write("mnist.toml", MNIST_SPEC);
    let home = s.home();
    let out = run(
        &["train", &spec],
        &[
            ("KILN_OFFLINE", None),
            ("KILN_DATA", None),
            ("HOME", Some(&home)),
            ("KILN_MNIST_MIRROR", Some("http://127.0.0.1:9/")),
        ],
    );
    assert_one_line_error(
        &out,
        &[
            "MNIST is not available",
            "the download failed",
            "http://127.0.0.1:9/train-images-idx3-ubyte.gz",
        ],
    );
    // Nothing partial is left in the cache it tried to download into.
    let cache = s.path("home/.cache/kiln/mnist");
    if cache.is_dir() {
        let left: Vec<_> = std::fs::read_dir(&cache).unwrap().collect();
        assert!(left.is_empty(), "left in the cache: {left:?}");
    }
}

#[test]
fn a_truncated_mnist_file_is_named() {
    // The loader checks each file's SHA-256 before parsing it, so a short file in a data
    // folder is reported as not being the MNIST file, by name.
    let s = Sandbox::new("mnist-truncated");
    let spec = s.write("mnist.toml", MNIST_SPEC);
    s.write(
        "data/train-images-idx3-ubyte",
        idx(0x08, &[60_000, 28, 28], &[0; 100]),
    );
    s.write("data/train-labels-idx1-ubyte", idx(0x08, &[60_000], &[0; 10]));
    s.write(
        "data/t10k-images-idx3-ubyte",
        idx(0x08, &[10_000, 28, 28], &[0; 100]),
    );
    s.write("data/t10k-labels-idx1-ubyte", idx(0x08, &[10_000], &[0; 10]));
    let data = s.arg("data");
    let out = s.kiln(&["train", &spec, "--data-dir", &data]);
    let images = s.arg("data/train-images-idx3-ubyte");
    assert_one_line_error(&out, &[&images, "SHA-256", "corrupt"]);
}

#[test]
fn a_truncated_idx_input_is_named() {
    let s = Sandbox::new("idx-truncated");
    let model = s.digits_model("m.safetensors");
    let input = s.write("truncated.idx", idx(0x08, &[2, 8, 8], &[1; 100]));
    let out = s.kiln(&["predict", &model, "--input", &input]);
    assert_one_line_error(&out, &[&input, "truncated", "expected 128 bytes", "found 100"]);
    // A header cut short, too.
    let input = s.write("short-header.idx", &idx(0x08, &[2, 8, 8], &[])[..9]);
    let out = s.kiln(&["predict", &model, "--input", &input]);
    assert_one_line_error(&out, &[&input, "truncated IDX header"]);
}

#[test]
fn an_idx_input_with_a_wrong_type_code_or_garbage_is_an_error_not_a_panic() {
    let s = Sandbox::new("idx-magic");
    let model = s.digits_model("m.safetensors");
    // Type code 0x09 (signed byte) instead of 0x08: the IDX reader names the code.
    let input = s.write("signed.idx", idx(0x09, &[2, 8, 8], &[1; 128]));
    let out = s.kiln(&["predict", &model, "--input", &input]);
    assert_one_line_error(&out, &[&input, "type code 0x09"]);
    // A wrong magic in a file named as IDX is not read as CSV: it is said not to be IDX.
    let mut wrong_magic = idx(0x08, &[2, 8, 8], &[1; 128]);
    wrong_magic[..2].copy_from_slice(&[0x12, 0x34]);
    for name in ["magic.idx", "images-idx3-ubyte", "images-idx3-ubyte.gz"] {
        let input = s.write(name, &wrong_magic);
        let out = s.kiln(&["predict", &model, "--input", &input]);
        assert_one_line_error(&out, &[&input, "not an IDX file", "0x12 0x34"]);
    }
    // Binary garbage under any other name: neither CSV text nor IDX, with the first odd byte.
    let garbage: Vec<u8> = (0..512u32).map(|i| (i * 97 % 256) as u8 | 0x80).collect();
    let input = s.write("garbage.bin", &garbage);
    let out = s.kiln(&["predict", &model, "--input", &input]);
    assert_one_line_error(
        &out,
        &[&input, "is binary, not CSV text", "offset 0", "nor is it IDX"],
    );
    let input = s.write("nul.csv", b"1,2\n3,\x004\n");
    let out = s.kiln(&["predict", &model, "--input", &input]);
    assert_one_line_error(&out, &[&input, "byte 0x00 at offset 6"]);
    // Garbage behind a gzip magic: a corrupt gzip stream.
    let mut gz = vec![0x1f, 0x8b];
    gz.extend_from_slice(&garbage);
    let input = s.write("garbage.gz", &gz);
    let out = s.kiln(&["predict", &model, "--input", &input]);
    assert_one_line_error(&out, &[&input, "gzip"]);
    // A well-formed IDX file whose samples are not the model's size.
    let input = s.write("big.idx", idx(0x08, &[1, 28, 28], &[0; 784]));
    let out = s.kiln(&["predict", &model, "--input", &input]);
    assert_one_line_error(&out, &[&input, "[28, 28]", "784", "64 values"]);
}

#[test]
fn a_non_numeric_csv_cell_is_named_with_line_and_column() {
    let s = Sandbox::new("csv-cell");
    s.write("train.csv", "1,2,0\n3,4,1\n5,abc,0\n7,8,1\n");
    let spec = s.write(
        "spec.toml",
        csv_spec(
            "train.csv",
            r#"{ type = "flatten" }, { type = "dense", units = 2, activation = "softmax" }"#,
        ),
    );
    let out = s.kiln(&["train", &spec]);
    let train = s.arg("train.csv");
    assert_one_line_error(&out, &[&train, "line 3", "column 2", "abc"]);

    // The same in a features file given to predict.
    let model = s.digits_model("m.safetensors");
    let mut rows: Vec<String> = digits_csv(4).lines().map(String::from).collect();
    let mut cells: Vec<&str> = rows[2].split(',').collect();
    cells[4] = "x1";
    rows[2] = cells.join(",");
    let input = s.write("features.csv", rows.join("\n") + "\n");
    let out = s.kiln(&["predict", &model, "--input", &input]);
    assert_one_line_error(&out, &[&input, "line 3", "column 5", "x1"]);
    // And a features file with the wrong number of columns.
    let input = s.write("narrow.csv", "1,2,3\n4,5,6\n");
    let out = s.kiln(&["predict", &model, "--input", &input]);
    assert_one_line_error(&out, &[&input, "3 columns", "expected 64"]);
}

#[test]
fn spec_typos_and_unknown_layer_types_name_the_field_and_the_line() {
    let s = Sandbox::new("spec-typos");
    let spec = |layers: &str, training_extra: &str| {
        format!(
            "[data]\nsource = \"digits\"\n\n[model]\nlayers = [\n  {{ type = \"flatten\" }},\n  {layers},\n]\n\n\
             [training]\nloss = \"sparse_categorical_crossentropy\"\nepochs = 1\n{training_extra}"
        )
    };
    // Unknown layer type, in the second layer. (A layer is read whole before its fields
    // are checked, so the line is the model section's; the index names the layer.)
    let path = s.write("variant.toml", spec(r#"{ type = "dense2", units = 10 }"#, ""));
    let out = s.kiln(&["train", &path]);
    assert_one_line_error(
        &out,
        &[
            &format!("spec {path}: line 4"),
            "model.layers[1]: unknown variant `dense2`",
        ],
    );
    // A misspelled layer field.
    let path = s.write(
        "unit.toml",
        spec(r#"{ type = "dense", unit = 10, activation = "softmax" }"#, ""),
    );
    let out = s.kiln(&["train", &path]);
    assert_one_line_error(
        &out,
        &[
            &format!("spec {path}: line "),
            "unknown field `unit`, expected one of `units`",
        ],
    );
    assert!(
        out.2.contains("model.layers[1]: unknown field `unit`"),
        "{}",
        out.2
    );
    // A misspelled training field, on line 13.
    let path = s.write(
        "batch.toml",
        spec(
            r#"{ type = "dense", units = 10, activation = "softmax" }"#,
            "batch_sise = 64\n",
        ),
    );
    let out = s.kiln(&["train", &path]);
    assert_one_line_error(
        &out,
        &[&format!("spec {path}: line 13"), "unknown field `batch_sise`"],
    );
    // Not TOML at all, and a spec that does not exist.
    let path = s.write("broken.toml", "[data\nsource = ");
    assert_one_line_error(&s.kiln(&["train", &path]), &[&format!("spec {path}: line 1")]);
    let missing = s.arg("missing.toml");
    assert_one_line_error(&s.kiln(&["train", &missing]), &[&missing]);
}

#[test]
fn a_label_beyond_the_output_layer_is_named() {
    let s = Sandbox::new("label-range");
    let rows: String = (0..40).map(|i| format!("{},{},{}\n", i, i * 2, i % 5)).collect();
    s.write("train.csv", format!("a,b,label\n{rows}"));
    let spec = s.write(
        "spec.toml",
        csv_spec(
            "train.csv",
            r#"{ type = "dense", units = 3, activation = "softmax" }"#,
        ),
    );
    let out = s.kiln(&["train", &spec]);
    assert_one_line_error(&out, &["labels up to 4", "3 units"]);
}

#[test]
fn layer_shapes_that_do_not_chain_are_errors() {
    let s = Sandbox::new("shapes");
    let base = |model: &str| {
        format!(
            "[data]\nsource = \"digits\"\n\n[model]\n{model}\n\n[training]\n\
             loss = \"sparse_categorical_crossentropy\"\nepochs = 1\n"
        )
    };
    // Digits samples are [8, 8]: a dense layer without flatten outputs [8, 10].
    let path = s.write(
        "no-flatten.toml",
        base(r#"layers = [{ type = "dense", units = 10, activation = "softmax" }]"#),
    );
    let out = s.kiln(&["train", &path]);
    assert_one_line_error(&out, &["flatten", "[8, 10]"]);
    // An input shape that is not the data's.
    let path = s.write(
        "input-shape.toml",
        base(
            "input_shape = [10]\nlayers = [{ type = \"flatten\" }, \
             { type = \"dense\", units = 10, activation = \"softmax\" }]",
        ),
    );
    let out = s.kiln(&["train", &path]);
    assert_one_line_error(&out, &["[8, 8]", "[10]"]);
    // Zero units.
    let path = s.write(
        "zero-units.toml",
        base(r#"layers = [{ type = "flatten" }, { type = "dense", units = 0 }]"#),
    );
    let out = s.kiln(&["train", &path]);
    assert_one_line_error(&out, &["layer 1 (dense)", "units must be at least 1"]);
}

/// Layers and inputs larger than the machine: one-line errors naming the parameter or the
/// setting and the sizes, never an allocation failure that aborts the process.
#[test]
fn layers_too_large_for_the_machine_are_errors_not_aborts() {
    let s = Sandbox::new("huge");
    let spec = |model: &str| {
        format!(
            "[data]\nsource = \"digits\"\n\n[model]\n{model}\n\n[training]\n\
             loss = \"sparse_categorical_crossentropy\"\nepochs = 1\n"
        )
    };
    let dense = s.write(
        "dense.toml",
        spec(r#"layers = [{ type = "flatten" }, { type = "dense", units = 1000000000 }]"#),
    );
    let out = s.kiln(&["train", &dense, "--run-dir", &s.arg("dense-run")]);
    assert_one_line_error(&out, &["layers.1.kernel [64, 1000000000]", "needs", "available"]);
    let conv = s.write(
        "conv.toml",
        spec(
            r#"layers = [{ type = "reshape", target_shape = [8, 8, 1] }, { type = "conv2d", filters = 1000000000, kernel_size = 3 }]"#,
        ),
    );
    let out = s.kiln(&["train", &conv, "--run-dir", &s.arg("conv-run")]);
    assert_one_line_error(&out, &["layers.1.kernel [3, 3, 1, 1000000000]", "needs"]);
    let input = s.write(
        "input.toml",
        spec(
            r#"input_shape = [100000, 100000]
layers = [{ type = "flatten" }, { type = "dense", units = 10 }]"#,
        ),
    );
    let out = s.kiln(&["train", &input, "--run-dir", &s.arg("input-run")]);
    assert_one_line_error(&out, &["input_shape = [100000, 100000]", "values per sample"]);
}

/// A test fraction that leaves no test samples is refused before training, not reported
/// as a test accuracy of 0.
#[test]
fn an_empty_test_split_is_an_error() {
    let s = Sandbox::new("empty-test");
    let spec = s.write(
        "tiny-test.toml",
        "[data]\nsource = \"digits\"\ntest_fraction = 0.0001\n\n[model]\n\
         layers = [{ type = \"flatten\" }, { type = \"dense\", units = 10, activation = \"softmax\" }]\n\n\
         [training]\nloss = \"sparse_categorical_crossentropy\"\nepochs = 1\n",
    );
    let out = s.kiln(&["train", &spec, "--run-dir", &s.arg("run")]);
    assert_one_line_error(&out, &["test samples", "0 is fewer than the 1 needed"]);
}

/// A valid safetensors file with one tensor and no metadata.
fn plain_safetensors() -> Vec<u8> {
    let mut header = br#"{"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#.to_vec();
    while !header.len().is_multiple_of(8) {
        header.push(b' ');
    }
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(&header);
    bytes.extend_from_slice(&1.5f32.to_le_bytes());
    bytes
}

#[test]
fn a_model_file_that_is_not_a_kiln_safetensors_file_is_named() {
    let s = Sandbox::new("not-safetensors");
    let text = s.write("model.txt", "this is not a model, just some text\n");
    let empty = s.write("empty.safetensors", "");
    let plain = s.write("plain.safetensors", plain_safetensors());
    let input = s.write("x.csv", digits_csv(1));
    for model in [&text, &empty] {
        for args in [
            vec!["eval", model],
            vec!["predict", model, "--input", &input],
            vec!["inspect", model],
        ] {
            let out = s.kiln(&args);
            assert_one_line_error(&out, &[&format!("model {model}: "), "not a safetensors file"]);
        }
    }
    for args in [
        vec!["eval", &plain],
        vec!["predict", &plain, "--input", &input],
        vec!["inspect", &plain],
    ] {
        let out = s.kiln(&args);
        assert_one_line_error(&out, &[&format!("model {plain}: "), "not a kiln model"]);
    }
    // A model that does not exist.
    let missing = s.arg("missing.safetensors");
    assert_one_line_error(&s.kiln(&["inspect", &missing]), &[&missing]);
}

#[test]
fn a_failed_train_leaves_the_saved_model_untouched() {
    let s = Sandbox::new("nothing-lost");
    let model = s.digits_model("model.safetensors");
    let original = std::fs::read(&model).unwrap();
    // A spec that does not parse.
    let bad = s.write(
        "bad-spec.toml",
        "[data]\nsource = \"digits\"\n[model]\nlayers = []\n",
    );
    assert_one_line_error(&s.kiln(&["train", &bad, "--out", &model]), &[&bad]);
    // A spec that parses but fails once training starts (after --out was checked).
    let late = s.write(
        "late-failure.toml",
        "[data]\nsource = \"digits\"\n[model]\nlayers = [{ type = \"dense\", units = 10 }]\n\
         [training]\nloss = \"sparse_categorical_crossentropy\"\nepochs = 1\n",
    );
    assert_one_line_error(&s.kiln(&["train", &late, "--out", &model]), &["flatten"]);
    // An output folder that does not exist, and an output that is a folder.
    let nowhere = s.arg("no-such-dir/m.safetensors");
    assert_one_line_error(
        &s.kiln(&["train", "--out", &nowhere]),
        &[&nowhere, "does not exist"],
    );
    let home = s.home();
    assert_one_line_error(&s.kiln(&["train", "--out", &home]), &[&home, "is a folder"]);
    assert_eq!(std::fs::read(&model).unwrap(), original, "the model file changed");
    assert_eq!(
        s.entries(),
        ["bad-spec.toml", "late-failure.toml", "model.safetensors"],
        "no temporary files are left behind"
    );
}

#[test]
fn zero_epochs_is_an_error() {
    let s = Sandbox::new("epochs-zero");
    let out = s.kiln(&["train", "--epochs", "0"]);
    assert_one_line_error(&out, &["--epochs", "at least 1"]);
    let spec = s.write(
        "spec.toml",
        "[data]\nsource = \"digits\"\n[model]\nlayers = [{ type = \"flatten\" }, \
         { type = \"dense\", units = 10 }]\n[training]\nloss = \"sparse_categorical_crossentropy\"\n\
         epochs = 0\n",
    );
    assert_one_line_error(
        &s.kiln(&["train", &spec]),
        &[&spec, "training.epochs must be at least 1"],
    );
}

#[cfg(not(feature = "distributed"))]
#[test]
fn distributed_in_a_build_without_mpi_says_how_to_get_it() {
    let s = Sandbox::new("no-mpi");
    let out = s.kiln(&["train", "--distributed"]);
    assert_one_line_error(&out, &["--distributed", "--features distributed", "Open MPI"]);
    assert!(!s.dir.join("runs").exists(), "nothing was created");
}

#[test]
fn compress_refuses_what_it_cannot_do_in_one_line() {
    let s = Sandbox::new("compress-errors");
    let model = s.digits_model("m.safetensors");
    let before = std::fs::read(&model).unwrap();
    assert_one_line_error(
        &s.kiln(&["compress", &model, "--out", &model]),
        &[&model, "is the model being compressed"],
    );
    let q = s.arg("q.safetensors");
    for (flag, value, expected) in [
        ("--percentile", "30", "(50, 100]"),
        ("--calibration-samples", "0", "at least 1"),
    ] {
        assert_one_line_error(
            &s.kiln(&["compress", &model, "--out", &q, "--quantize", "int8", flag, value]),
            &[flag, expected],
        );
    }
    for (args, expected) in [
        (&[][..], &["nothing to do", "--prune", "--quantize"][..]),
        (&["--prune", "1.5"][..], &["--prune 1.5", "between 0 and 1"][..]),
        (&["--structured"][..], &["--structured", "add --prune"][..]),
    ] {
        let mut all = vec!["compress", &model, "--out", &q];
        all.extend_from_slice(args);
        assert_one_line_error(&s.kiln(&all), expected);
    }
    let missing = s.arg("missing.safetensors");
    assert_one_line_error(
        &s.kiln(&[
            "compress",
            &missing,
            "--out",
            &s.arg("q.safetensors"),
            "--quantize",
            "int8",
        ]),
        &[&missing],
    );
    assert_eq!(std::fs::read(&model).unwrap(), before, "the model is untouched");
    assert!(!s.path("q.safetensors").exists(), "nothing was written");
    let compressed = s.arg("c.safetensors");
    assert_success(&s.kiln(&["compress", &model, "--out", &compressed, "--quantize", "int8"]));
    assert_one_line_error(
        &s.kiln(&[
            "compress",
            &compressed,
            "--out",
            &s.arg("cc.safetensors"),
            "--quantize",
            "int8",
        ]),
        &[&compressed, "already compressed"],
    );
}

// ---------------------------------------------------------------------------------------
// Happy paths

#[test]
fn compress_makes_an_int8_model_that_eval_predict_and_inspect_accept() {
    let s = Sandbox::new("compress");
    let model = s.digits_model("m.safetensors");
    let small = s.arg("m8.safetensors");
    let out = s.kiln(&["compress", &model, "--out", &small, "--quantize", "int8"]);
    assert_success(&out);
    for part in [
        "| file bytes |",
        "| gzipped bytes |",
        "| nonzero parameters |",
        "| test accuracy |",
        "| batch-1 latency p50 |",
        "| batch-1024 throughput |",
        "calibrated on 500 training samples (min_max)",
    ] {
        assert!(out.1.contains(part), "{part:?} not in:\n{}", out.1);
    }
    let (float_bytes, int8_bytes) = (
        std::fs::metadata(&model).unwrap().len(),
        std::fs::metadata(&small).unwrap().len(),
    );
    assert!(int8_bytes * 3 < float_bytes, "{int8_bytes} vs {float_bytes}");
    let inspect = s.kiln(&["inspect", &small]);
    assert_success(&inspect);
    assert!(
        inspect.1.contains("layers.1.kernel      [64, 128] i8"),
        "{}",
        inspect.1
    );
    assert!(
        inspect.1.contains("compression: int8 weights and activations"),
        "{}",
        inspect.1
    );
    let eval = s.kiln(&["eval", &small]);
    assert_success(&eval);
    let float_eval = s.kiln(&["eval", &model]);
    let accuracy = |text: &str| -> f32 { metric(text, "test_loss: ", "test_accuracy: ").parse().unwrap() };
    assert!(
        (accuracy(&eval.1) - accuracy(&float_eval.1)).abs() < 0.0085,
        "{} vs {}",
        eval.1,
        float_eval.1
    );
    let input = s.write("digits.csv", digits_csv(3));
    let predict = s.kiln(&["predict", &small, "--input", &input]);
    assert_success(&predict);
    assert_eq!(predict.1.lines().count(), 4, "a header and 3 rows: {}", predict.1);
    let dynamic = s.kiln(&[
        "compress",
        &model,
        "--out",
        &s.arg("d8.safetensors"),
        "--quantize",
        "dynamic",
    ]);
    assert_success(&dynamic);
    assert!(
        dynamic.1.contains("activations quantized per sample"),
        "{}",
        dynamic.1
    );

    // Pruning: weights (stored sparsely) or whole units, each fine-tuned.
    let sparse = s.arg("sparse.safetensors");
    let out = s.kiln(&[
        "compress",
        &model,
        "--out",
        &sparse,
        "--prune",
        "0.8",
        "--finetune-epochs",
        "2",
    ]);
    assert_success(&out);
    assert!(
        out.1.contains("80% sparsity") && out.1.contains("fine-tuned 2 epochs"),
        "{}",
        out.1
    );
    // 9,472 kernel weights: 37.9 kB dense; 20% of them (7.6 kB) and a 1.2 kB bitmap
    // sparse. (The metadata, the same in both, is a large part of so small a file.)
    let sparse_bytes = std::fs::metadata(&sparse).unwrap().len();
    assert!(
        sparse_bytes + 28_000 < float_bytes,
        "{sparse_bytes} vs {float_bytes}"
    );
    let narrow = s.arg("narrow.safetensors");
    let out = s.kiln(&[
        "compress",
        &model,
        "--out",
        &narrow,
        "--prune",
        "0.5",
        "--structured",
        "--finetune-epochs",
        "1",
    ]);
    assert_success(&out);
    assert!(out.1.contains("layer 1 keeps 64 of 128 units"), "{}", out.1);
    let inspect = s.kiln(&["inspect", &narrow]);
    assert!(
        inspect.1.contains("units=64") && inspect.1.contains("structured pruning"),
        "{}",
        inspect.1
    );
    for m in [&sparse, &narrow] {
        let eval = s.kiln(&["eval", m]);
        assert_success(&eval);
        assert!(
            (accuracy(&eval.1) - accuracy(&float_eval.1)).abs() < 0.03,
            "{}",
            eval.1
        );
    }
}

#[test]
fn the_offline_default_trains_inspects_evaluates_and_predicts() {
    let s = Sandbox::new("offline-default");
    let model = s.arg("m.safetensors");
    let train = s.kiln(&["train", "--out", &model]);
    assert_success(&train);
    let train_stdout = &train.1;
    assert!(train_stdout.contains("Epoch 30/30"), "{train_stdout}");
    let accuracy = metric(train_stdout, "test_loss: ", "test_accuracy: ");
    let value: f64 = accuracy.parse().unwrap();
    assert!(value >= 0.95, "test accuracy {value} < 0.95:\n{train_stdout}");
    assert!(train_stdout.contains(&format!("saved {model}")), "{train_stdout}");
    assert_eq!(
        s.entries(),
        ["m.safetensors"],
        "no temporary files are left behind"
    );

    // inspect: layers, parameter count (64*128 + 128 + 128*10 + 10) and tensors.
    let inspect = s.kiln(&["inspect", &model]);
    assert_success(&inspect);
    let text = &inspect.1;
    for part in [
        "model: digits-mlp",
        "input shape: [8, 8]",
        "flatten",
        "dropout",
        "units=128 activation=Relu",
        "units=10 activation=Softmax",
        "parameters: 9610\n",
    ] {
        assert!(text.contains(part), "{part:?} not in:\n{text}");
    }
    let tensors: Vec<String> = text
        .lines()
        .skip_while(|l| *l != "tensors:")
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect();
    assert_eq!(
        tensors,
        [
            "layers.1.kernel [64, 128] f32",
            "layers.1.bias [128] f32",
            "layers.3.kernel [128, 10] f32",
            "layers.3.bias [10] f32",
        ],
        "{text}"
    );

    // eval reproduces the accuracy train printed.
    let eval = s.kiln(&["eval", &model]);
    assert_success(&eval);
    assert_eq!(metric(&eval.1, "test_loss: ", "test_accuracy: "), accuracy);
    assert_eq!(
        metric(&eval.1, "test_loss: ", "test_loss: "),
        metric(train_stdout, "test_loss: ", "test_loss: ")
    );
    assert_eq!(metric(&eval.1, "test_loss: ", "samples: "), "359");

    // predict, CSV.
    let input = s.write("digits.csv", digits_csv(5));
    let predict = s.kiln(&["predict", &model, "--input", &input]);
    assert_success(&predict);
    let lines: Vec<&str> = predict.1.lines().collect();
    let header: Vec<String> = (0..10).map(|c| format!("p_{c}")).collect();
    assert_eq!(lines[0], format!("row,class,{}", header.join(",")));
    assert_eq!(lines.len(), 6, "{}", predict.1);
    for (i, line) in lines[1..].iter().enumerate() {
        let cells: Vec<&str> = line.split(',').collect();
        assert_eq!(cells.len(), 12, "{line}");
        assert_eq!(cells[0], i.to_string());
        let p: Vec<f64> = cells[2..].iter().map(|c| c.parse().unwrap()).collect();
        assert!(p.iter().all(|&v| (0.0..=1.0).contains(&v)), "{line}");
        assert!((p.iter().sum::<f64>() - 1.0).abs() < 1e-4, "{line}");
        let best = (0..10).max_by(|&a, &b| p[a].total_cmp(&p[b])).unwrap();
        assert!(p[best] >= p[cells[1].parse::<usize>().unwrap()], "{line}");
    }
    assert_eq!(s.kiln(&["predict", &model, "--input", &input]).1, predict.1);

    // predict, JSON.
    let json = s.kiln(&["predict", &model, "--input", &input, "--format", "json"]);
    assert_success(&json);
    let rows: serde_json::Value = serde_json::from_str(&json.1).expect("valid JSON");
    let rows = rows.as_array().expect("an array");
    assert_eq!(rows.len(), 5);
    for (i, row) in rows.iter().enumerate() {
        assert_eq!(row["row"], i);
        let p: Vec<f64> = row["probabilities"]
            .as_array()
            .expect("probabilities")
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect();
        assert_eq!(p.len(), 10);
        assert!((p.iter().sum::<f64>() - 1.0).abs() < 1e-4, "{row}");
        // Same class as the CSV output.
        let csv_class = lines[i + 1].split(',').nth(1).unwrap();
        assert_eq!(row["class"], csv_class, "{row}");
    }
    assert_eq!(
        s.kiln(&["predict", &model, "--input", &input, "--format", "json"])
            .1,
        json.1
    );
}

#[test]
fn predicts_on_an_idx_images_file() {
    let s = Sandbox::new("predict-idx");
    let model = s.digits_model("m.safetensors");
    let pixels = pixel_values(3 * 64, 5);
    let input = s.write("images.idx", idx(0x08, &[3, 8, 8], &pixels));
    let out = s.kiln(&["predict", &model, "--input", &input]);
    assert_success(&out);
    let lines: Vec<&str> = out.1.lines().collect();
    assert_eq!(lines.len(), 4, "{}", out.1);
    assert!(lines[0].starts_with("row,class,p_0,"));
    // The same samples as CSV rows give the same predictions.
    let csv: String = pixels
        .chunks(64)
        .map(|r| r.iter().map(|v| v.to_string()).collect::<Vec<_>>().join(",") + "\n")
        .collect();
    let csv_input = s.write("images.csv", csv);
    let from_csv = s.kiln(&["predict", &model, "--input", &csv_input]);
    assert_success(&from_csv);
    assert_eq!(from_csv.1, out.1);
}

#[test]
#[ignore = "needs MNIST in $KILN_DATA (../shared/data); .ci/run runs it"]
fn mnist_from_kiln_data_trains_and_evaluates() {
    let data = kiln_data();
    let s = Sandbox::new("mnist-kiln-data");
    let spec = s.write("mnist.toml", MNIST_SPEC);
    let model = s.arg("mnist.safetensors");
    let home = s.home();
    let env = [
        ("KILN_OFFLINE", Some("1")),
        ("HOME", Some(home.as_str())),
        ("KILN_DATA", Some(data.as_str())),
        ("KILN_MNIST_MIRROR", None),
    ];
    let train = run_in(&s.dir, &["train", &spec, "--quiet", "--out", &model], &env);
    assert_success(&train);
    let accuracy = metric(&train.1, "test_loss: ", "test_accuracy: ");
    assert!(accuracy.parse::<f64>().unwrap() > 0.88, "{}", train.1);
    let eval = run(&["eval", &model], &env);
    assert_success(&eval);
    assert_eq!(metric(&eval.1, "test_loss: ", "test_accuracy: "), accuracy);
    assert_eq!(metric(&eval.1, "test_loss: ", "samples: "), "10000");
    // The same through --data-dir, without $KILN_DATA.
    let mnist_dir = path_str(&Path::new(&data).join("mnist"));
    let out = s.kiln(&["eval", &model, "--data-dir", &mnist_dir]);
    assert_success(&out);
    assert_eq!(metric(&out.1, "test_loss: ", "test_accuracy: "), accuracy);
    // Without either, eval of an MNIST model offline is the usual one-line error.
    assert_one_line_error(&s.kiln(&["eval", &model]), &["MNIST is not available"]);
    // A copy of MNIST with one file cut short is named.
    std::fs::create_dir(s.path("copy")).unwrap();
    for name in MNIST_FILES {
        let gz = format!("{name}.gz");
        std::fs::copy(Path::new(&mnist_dir).join(&gz), s.path("copy").join(&gz)).unwrap();
    }
    let labels = s.path("copy/t10k-labels-idx1-ubyte.gz");
    let bytes = std::fs::read(&labels).unwrap();
    std::fs::write(&labels, &bytes[..bytes.len() / 2]).unwrap();
    let copy = s.arg("copy");
    let out = s.kiln(&["eval", &model, "--data-dir", &copy]);
    assert_one_line_error(&out, &[&path_str(&labels)]);
}

#[test]
#[ignore = "needs $KILN_PYTHON with safetensors and numpy; .ci/run runs it"]
fn python_safetensors_reads_a_kiln_model() {
    let python =
        std::env::var("KILN_PYTHON").expect("set KILN_PYTHON to a Python with safetensors and numpy");
    let s = Sandbox::new("python");
    let model = s.digits_model("m.safetensors");
    let script = s.write(
        "check.py",
        r#"
import json, sys
import safetensors
from safetensors.numpy import load_file
path = sys.argv[1]
t = load_file(path)
print(sorted((k, list(v.shape), str(v.dtype)) for k, v in t.items()))
with safetensors.safe_open(path, "np") as f:
    meta = f.metadata()
assert meta["format"] == "kiln", meta
arch = json.loads(meta["kiln.architecture"])
assert [l["type"] for l in arch["layers"]] == ["flatten", "dense", "dropout", "dense"], arch
assert arch["input_shape"] == [8, 8], arch
print("metadata ok")
"#,
    );
    let out = Command::new(&python)
        .arg(&script)
        .arg(&model)
        .output()
        .expect("$KILN_PYTHON runs");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "python failed:\n{stdout}\n{stderr}");
    let mut lines = stdout.lines();
    assert_eq!(
        lines.next(),
        Some(
            "[('layers.1.bias', [128], 'float32'), ('layers.1.kernel', [64, 128], 'float32'), \
             ('layers.3.bias', [10], 'float32'), ('layers.3.kernel', [128, 10], 'float32')]"
        ),
        "{stdout}"
    );
    assert_eq!(lines.next(), Some("metadata ok"), "{stdout}");
}

#[test]
fn a_closed_output_pipe_ends_kiln_quietly_not_with_a_panic() {
    use std::io::Read;
    use std::process::Stdio;
    let s = Sandbox::new("closed_pipe");
    // `kiln train | head -c 16`: the reader leaves after the first line; training then
    // prints 30 epoch lines into a pipe nobody reads.
    let mut child = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(["train"])
        .env("KILN_OFFLINE", "1")
        .env("HOME", s.home())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = [0u8; 16];
    child.stdout.take().unwrap().read_exact(&mut first).unwrap();
    let status = child.wait().unwrap();
    let mut stderr = String::new();
    child.stderr.take().unwrap().read_to_string(&mut stderr).unwrap();
    assert!(!stderr.contains("panicked"), "{stderr}");
    // Ended by SIGPIPE, as a Unix tool is: unsuccessful, and silent.
    assert!(!status.success(), "{status:?}");
    assert_eq!(stderr, "");
}

// ---------------------------------------------------------------------------------------
// Run folders, checkpoints, resume, divergence

/// The f32 tensors of a model file, by name, as raw bits.
fn weight_bits(path: &str) -> Vec<(String, Vec<u32>)> {
    let a = kiln::artifact::load(Path::new(path)).unwrap();
    a.model
        .float()
        .params
        .iter()
        .map(|p| {
            (
                p.name.clone(),
                p.value.data().iter().map(|v| v.to_bits()).collect(),
            )
        })
        .collect()
}

#[test]
fn a_run_folder_resumes_bit_identically_with_or_without_the_spec() {
    let s = Sandbox::new("resume");
    let (straight, split) = (s.arg("straight"), s.arg("split"));
    assert_success(&s.kiln(&["train", "--quiet", "--epochs", "4", "--run-dir", &straight]));
    let first = s.kiln(&["train", "--epochs", "2", "--run-dir", &split]);
    assert_success(&first);
    assert!(first.1.contains("Epoch 2/2"), "{}", first.1);
    for name in [
        "checkpoint.safetensors",
        "history.json",
        "history.csv",
        "model.safetensors",
    ] {
        assert!(
            s.path("split").join(name).is_file(),
            "{name} missing from the run folder"
        );
    }
    // No SPEC: the checkpoint's own spec is used; --epochs asks for more.
    let resumed = s.kiln(&["train", "--epochs", "4", "--resume", &split]);
    assert_success(&resumed);
    assert!(resumed.1.contains("resuming after epoch 2"), "{}", resumed.1);
    assert!(
        resumed.1.contains("Epoch 3/4") && !resumed.1.contains("Epoch 2/4"),
        "{}",
        resumed.1
    );
    assert_eq!(
        weight_bits(&format!("{straight}/model.safetensors")),
        weight_bits(&format!("{split}/model.safetensors"))
    );
    // Nothing more to do is said plainly; a fresh run refuses a folder with a checkpoint.
    assert_one_line_error(
        &s.kiln(&["train", "--resume", &split]),
        &["checkpoint.safetensors", "already holds 4 trained epochs"],
    );
    assert_one_line_error(
        &s.kiln(&["train", "--run-dir", &split]),
        &[&split, "already holds an earlier run's results"],
    );
    let before = std::fs::read(format!("{split}/model.safetensors")).unwrap();
    assert_one_line_error(
        &s.kiln(&["train", "--run-dir", &straight, "--no-checkpoint"]),
        &[&straight, "already holds an earlier run's results"],
    );
    assert_eq!(
        std::fs::read(format!("{split}/model.safetensors")).unwrap(),
        before
    );
    let empty = s.arg("empty");
    std::fs::create_dir(&empty).unwrap();
    assert_one_line_error(
        &s.kiln(&["train", "--resume", &empty]),
        &[&empty, "no checkpoint.safetensors"],
    );
    // Default run folders never overwrite each other.
    assert_success(&s.kiln(&["train", "--quiet", "--epochs", "1"]));
    assert_success(&s.kiln(&["train", "--quiet", "--epochs", "1"]));
    assert!(s.path("runs/digits-mlp/model.safetensors").is_file());
    assert!(s.path("runs/digits-mlp-2/model.safetensors").is_file());
}

#[test]
fn a_checkpoint_write_killed_midway_leaves_the_previous_checkpoint_intact() {
    let s = Sandbox::new("killed-write");
    let run_dir = s.path("run");
    let mut child = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args([
            "train",
            "--quiet",
            "--epochs",
            "30",
            "--run-dir",
            &path_str(&run_dir),
        ])
        .current_dir(&s.dir)
        .env("KILN_OFFLINE", "1")
        .env("HOME", s.home())
        .env("KILN_FAULT_PAUSE_MID_WRITE_MS", "700")
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let checkpoint = run_dir.join("checkpoint.safetensors");
    let half_written = || {
        std::fs::read_dir(&run_dir).ok().and_then(|entries| {
            entries.flatten().find(|e| {
                e.file_name()
                    .to_string_lossy()
                    .starts_with("checkpoint.safetensors.tmp-")
            })
        })
    };
    // Wait for the second checkpoint's write to be half done, then kill the writer.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let before = loop {
        if checkpoint.exists() && half_written().is_some() {
            break std::fs::read(&checkpoint).unwrap();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no second checkpoint write seen"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    };
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(half_written().is_some(), "the half-written file is there");
    assert_eq!(
        std::fs::read(&checkpoint).unwrap(),
        before,
        "the previous checkpoint changed"
    );
    let saved = kiln::train::Checkpoint::load(&checkpoint).unwrap();
    assert_eq!(saved.progress.epochs_done, 1);
    // The run resumes from it, and the leftover is cleared away.
    let resumed = s.kiln(&[
        "train",
        "--quiet",
        "--epochs",
        "2",
        "--resume",
        &path_str(&run_dir),
    ]);
    assert_success(&resumed);
    assert!(resumed.1.contains("resuming after epoch 1"), "{}", resumed.1);
    assert!(half_written().is_none());
}

#[test]
fn a_diverging_run_stops_naming_epoch_and_step() {
    let s = Sandbox::new("diverge");
    let spec = s.write(
        "hot.toml",
        "[data]\nsource = \"digits\"\n[model]\nlayers = [{ type = \"flatten\" }, \
         { type = \"dense\", units = 32, activation = \"relu\" }, { type = \"dense\", units = 10 }]\n\
         [training]\noptimizer = { type = \"sgd\", learning_rate = 1e30 }\n\
         loss = \"sparse_categorical_crossentropy\"\nfrom_logits = true\nepochs = 3\n",
    );
    let out = s.kiln(&["train", &spec, "--quiet", "--run-dir", &s.arg("run")]);
    assert_one_line_error(
        &out,
        &[
            "training diverged",
            "at epoch 1, step",
            "no checkpoint was written",
        ],
    );
}

/// Trains the default spec 4 epochs with a TensorBoard callback and two ModelCheckpoints;
/// returns the log and checkpoint folders (the run folder is `run`).
fn train_with_tensorboard_and_checkpoints(s: &Sandbox) -> (String, String) {
    let logs = s.arg("logs");
    let ckpts = s.arg("ckpts");
    let base = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../kiln/src/spec/default_spec.toml"
    ))
    .unwrap();
    let spec = s.write(
        "spec.toml",
        base.replace("epochs = 30", "epochs = 4").replace(
            "[training]\n",
            &format!(
                "[training]\ncallbacks = [\n  {{ type = \"tensorboard\", log_dir = {logs:?} }},\n  \
                 {{ type = \"model_checkpoint\", filepath = \"{ckpts}/ckpt-{{epoch:02}}-{{val_loss:.3}}.safetensors\" }},\n  \
                 {{ type = \"model_checkpoint\", filepath = \"{ckpts}/best.safetensors\", save_best_only = true }},\n]\n"
            ),
        ),
    );
    let out = s.kiln(&["train", &spec, "--run-dir", &s.arg("run")]);
    assert_success(&out);
    (logs, ckpts)
}

#[test]
fn a_spec_with_tensorboard_and_model_checkpoint_writes_both() {
    let s = Sandbox::new("tb-ckpt");
    let (_, ckpts) = train_with_tensorboard_and_checkpoints(&s);
    let mut saved: Vec<String> = std::fs::read_dir(&ckpts)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    saved.sort();
    assert_eq!(saved.len(), 5, "one per epoch and best: {saved:?}");
    assert!(
        saved[0] == "best.safetensors" && saved[1].starts_with("ckpt-01-"),
        "{saved:?}"
    );
    let template = regex_like_ckpt_name(&saved[1]);
    assert!(template, "ckpt-EPOCH-VAL_LOSS with 3 decimals: {saved:?}");
    // Each checkpoint is a whole model that evaluates.
    let first = format!("{ckpts}/{}", saved[1]);
    assert_success(&s.kiln(&["eval", &first]));
    let history: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(s.path("run/history.json")).unwrap()).unwrap();
    let val_losses: Vec<f64> = history["epochs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["val_loss"].as_f64().unwrap())
        .collect();
    let best = val_losses.iter().cloned().fold(f64::INFINITY, f64::min);
    let best_epoch = val_losses.iter().position(|&v| v == best).unwrap() + 1;
    let inspect = s.kiln(&["inspect", &format!("{ckpts}/best.safetensors")]);
    assert!(
        inspect.1.contains(&format!("\"epochs_trained\": {best_epoch}")),
        "best.safetensors is epoch {best_epoch}'s:\n{}",
        inspect.1
    );
}

/// TensorBoard's own reader finds every epoch's scalars.
#[test]
#[ignore = "needs $KILN_PYTHON with tensorboard; .ci/run runs it"]
fn tensorboard_reads_every_epochs_scalars() {
    let python = std::env::var("KILN_PYTHON").expect("set KILN_PYTHON to a Python with tensorboard");
    let s = Sandbox::new("tb-read");
    let (logs, _) = train_with_tensorboard_and_checkpoints(&s);
    let history: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(s.path("run/history.json")).unwrap()).unwrap();
    let val_losses: Vec<f64> = history["epochs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["val_loss"].as_f64().unwrap())
        .collect();
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../kiln/tests/fixtures/read_tensorboard.py"
    );
    let read = Command::new(python).args([script, &logs]).output().unwrap();
    assert!(read.status.success(), "{}", String::from_utf8_lossy(&read.stderr));
    let runs: serde_json::Value = serde_json::from_slice(&read.stdout).unwrap();
    for (run, tag) in [
        ("train", "epoch_loss"),
        ("train", "epoch_accuracy"),
        ("train", "epoch_learning_rate"),
        ("validation", "epoch_loss"),
        ("validation", "epoch_accuracy"),
    ] {
        let points = runs[run][tag]
            .as_array()
            .unwrap_or_else(|| panic!("{run}/{tag} missing: {runs}"));
        let steps: Vec<i64> = points.iter().map(|p| p[0].as_i64().unwrap()).collect();
        assert_eq!(steps, [0, 1, 2, 3], "{run}/{tag}");
    }
    let first_val = runs["validation"]["epoch_loss"][0][1].as_f64().unwrap();
    assert!(
        (first_val - val_losses[0]).abs() < 1e-6,
        "{first_val} vs {}",
        val_losses[0]
    );
}

#[test]
fn eval_reports_per_class_metrics_and_plot_draws_the_run() {
    let s = Sandbox::new("eval-report");
    let run_dir = s.arg("run");
    assert_success(&s.kiln(&["train", "--quiet", "--epochs", "5", "--run-dir", &run_dir]));
    let model = format!("{run_dir}/model.safetensors");
    let plain = s.kiln(&["eval", &model]);
    assert_success(&plain);
    let accuracy: f64 = metric(&plain.1, "test_loss: ", "test_accuracy: ")
        .parse()
        .unwrap();

    let json = s.kiln(&["eval", &model, "--json"]);
    assert_success(&json);
    let doc: serde_json::Value = serde_json::from_str(&json.1).unwrap();
    let matrix: Vec<Vec<u64>> = serde_json::from_value(doc["confusion_matrix"].clone()).unwrap();
    assert_eq!(matrix.len(), 10);
    let total: u64 = matrix.iter().flatten().sum();
    let diagonal: u64 = (0..10).map(|i| matrix[i][i]).sum();
    assert_eq!(total, doc["samples"].as_u64().unwrap());
    assert!((diagonal as f64 / total as f64 - accuracy).abs() < 1e-4);
    assert!((doc["report"]["accuracy"].as_f64().unwrap() - accuracy).abs() < 1e-4);
    for (class, row) in matrix.iter().enumerate() {
        let support = doc["report"]["classes"][class]["support"].as_u64().unwrap();
        assert_eq!(support, row.iter().sum::<u64>(), "support of class {class}");
    }
    assert!(doc["top_k_accuracy"]["5"].as_f64().unwrap() >= accuracy);

    let heatmap = s.arg("cm");
    let report = s.kiln(&["eval", &model, "--report", "--heatmap", &heatmap]);
    assert_success(&report);
    for part in [
        "precision    recall  f1-score   support",
        "macro avg",
        "weighted avg",
        "confusion matrix",
    ] {
        assert!(report.1.contains(part), "{part:?} not in:\n{}", report.1);
    }
    for ext in ["png", "svg"] {
        assert!(s.path(&format!("cm.{ext}")).is_file());
    }
    assert_one_line_error(&s.kiln(&["eval", &model, "--threshold", "2"]), &["--threshold 2"]);
    assert_one_line_error(
        &s.kiln(&["eval", &model, "--threshold", "0.3"]),
        &["--threshold applies to one-unit (binary) models", "10 outputs"],
    );
    // --heatmap with an image extension writes that file, not FILE.png.png.
    assert_success(&s.kiln(&["eval", &model, "--heatmap", &s.arg("named.png")]));
    assert!(s.path("named.png").is_file() && s.path("named.svg").is_file());

    let plot = s.kiln(&["plot", &run_dir]);
    assert_success(&plot);
    let png = std::fs::read(format!("{run_dir}/curves.png")).unwrap();
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    let svg = std::fs::read_to_string(format!("{run_dir}/curves.svg")).unwrap();
    assert!(svg.contains("<svg") && svg.contains("validation"));
    let home = s.home();
    assert_one_line_error(&s.kiln(&["plot", &home]), &["history.json"]);
    let missing = s.arg("no-such-run");
    assert_one_line_error(&s.kiln(&["plot", &missing]), &[&missing, "is not a folder"]);
}

/// `ckpt-NN-D.DDD.safetensors`: the template's two-digit epoch and 3-decimal val_loss.
fn regex_like_ckpt_name(name: &str) -> bool {
    let Some(rest) = name
        .strip_prefix("ckpt-")
        .and_then(|r| r.strip_suffix(".safetensors"))
    else {
        return false;
    };
    let Some((epoch, loss)) = rest.split_once('-') else {
        return false;
    };
    let decimals = loss.split_once('.').map(|(_, d)| d.len());
    epoch.len() == 2 && epoch.parse::<u32>().is_ok() && loss.parse::<f64>().is_ok() && decimals == Some(3)
}

/// Each command's help line is its own (generate once showed eval's, and eval none).
#[test]
fn help_describes_each_command_once() {
    let (status, stdout, _) = run(&["--help"], &[]);
    assert!(status.success());
    let line = |command: &str| {
        stdout
            .lines()
            .find(|l| l.trim_start().starts_with(&format!("{command} ")))
            .unwrap_or_else(|| panic!("no line for {command}: {stdout}"))
            .to_string()
    };
    assert!(line("generate").contains("Generate text"), "{stdout}");
    assert!(line("eval").contains("loss and accuracy"), "{stdout}");
    assert!(!line("generate").contains("test split"), "{stdout}");
}

/// The same spec, seed and data give byte-identical model files when SOURCE_DATE_EPOCH
/// fixes the recorded creation time.
#[test]
fn two_runs_of_one_spec_give_byte_identical_model_files() {
    let s = Sandbox::new("reproducible");
    let home = s.home();
    let train = |name: &str| {
        let out = s.arg(&format!("{name}.safetensors"));
        let run_dir = s.arg(&format!("{name}-run"));
        let envs = [
            ("KILN_OFFLINE", Some("1")),
            ("HOME", Some(home.as_str())),
            ("KILN_DATA", None),
            ("SOURCE_DATE_EPOCH", Some("1700000000")),
        ];
        let outcome = run(&["train", "--quiet", "--out", &out, "--run-dir", &run_dir], &envs);
        assert_success(&outcome);
        std::fs::read(&out).unwrap()
    };
    let (first, second) = (train("a"), train("b"));
    assert!(first == second, "two runs gave different model files");
    let text = String::from_utf8_lossy(&first);
    // The lineage is JSON inside the header's JSON: its quotes are escaped.
    assert!(
        text.contains(r#"created_unix_seconds\":1700000000"#),
        "the epoch is recorded"
    );
}

/// A run killed before its first checkpoint leaves files but no checkpoint: a fresh run
/// reuses the folder (saying so); a killed write's `NAME.tmp-PID` of a dead process goes.
#[test]
fn a_run_folder_without_a_checkpoint_is_reused_and_stale_temporaries_are_cleaned() {
    let s = Sandbox::new("crashed-run");
    let run_dir = s.path("run");
    std::fs::create_dir_all(&run_dir).unwrap();
    std::fs::write(run_dir.join("history.csv"), "epoch,loss\n").unwrap();
    let out = s.arg("m.safetensors");
    // A pid far above any Linux pid_max: no such process.
    let stale = s.write("m.safetensors.tmp-999999999", "half a model");
    let outcome = s.kiln(&[
        "train",
        "--quiet",
        "--run-dir",
        &path_str(&run_dir),
        "--out",
        &out,
    ]);
    assert_success(&outcome);
    assert!(
        outcome.2.contains("holds files but no checkpoint or model"),
        "{}",
        outcome.2
    );
    assert!(run_dir.join("model.safetensors").exists());
    if cfg!(target_os = "linux") {
        assert!(
            !Path::new(&stale).exists(),
            "the dead process's temporary file was removed"
        );
    }
}

/// Metadata that loads but would give garbage: an int8 input scale of 0, three class
/// names for ten outputs. Each is refused when the model loads, naming the file and field.
#[test]
fn tampered_scales_and_class_names_are_refused_at_load() {
    let s = Sandbox::new("tampered-load");
    let model = s.digits_model("m.safetensors");
    let small = s.arg("m8.safetensors");
    assert_success(&s.kiln(&["compress", &model, "--out", &small, "--quantize", "int8"]));
    let input = s.write("digits.csv", digits_csv(2));
    assert_success(&s.kiln(&["predict", &small, "--input", &input]));
    tamper_metadata(&small, "kiln.compression", |c| {
        c["inputs"][0][1]["scale"] = serde_json::json!(0.0);
    });
    let outcome = s.kiln(&["predict", &small, "--input", &input]);
    assert_one_line_error(
        &outcome,
        &["m8.safetensors", "layer 1", "scale", "is 0", "positive"],
    );

    tamper_metadata(&model, "kiln.classes", |classes| {
        *classes = serde_json::json!(["a", "b", "c"]);
    });
    for command in ["predict", "eval"] {
        let mut args = vec![command, model.as_str()];
        if command == "predict" {
            args.extend(["--input", input.as_str()]);
        }
        let outcome = s.kiln(&args);
        assert_one_line_error(
            &outcome,
            &["m.safetensors", "kiln.classes", "names 3 classes", "10 outputs"],
        );
    }
}

/// Model files carry file names and SHA-256 sums of their data, never the folder it was
/// in: a CSV model and a language model trained from a data folder hold no trace of its
/// path; the CSV model is evaluated again from the folder holding the files, or from
/// anywhere with --data-dir, and elsewhere the error says to pass --data-dir.
#[test]
fn model_files_hold_no_data_folder_path() {
    let s = Sandbox::new("private-paths");
    let data = s.path("private-data-folder");
    std::fs::create_dir_all(&data).unwrap();
    let mut csv = String::from("a,b,label\n");
    for i in 0..60 {
        csv.push_str(&format!("{},{},{}\n", i % 7, (i * 3) % 11, i % 2));
    }
    std::fs::write(data.join("table.csv"), csv).unwrap();
    std::fs::write(
        data.join("corpus.txt"),
        "to be or not to be, that is the question. ".repeat(40),
    )
    .unwrap();
    let csv_spec = s.write(
        "private-data-folder/table.toml",
        "[data]\nsource = \"csv\"\ntrain = \"table.csv\"\n[model]\nlayers = [{ type = \"dense\", units = 2, activation = \"softmax\" }]\n\
         [training]\noptimizer = { type = \"adam\", learning_rate = 0.01 }\nloss = \"sparse_categorical_crossentropy\"\nepochs = 2\n",
    );
    let lm_spec = s.write(
        "private-data-folder/lm.toml",
        "[data]\nsource = \"text\"\npath = \"corpus.txt\"\n[model]\ntype = \"gpt\"\nlayers = 1\nheads = 1\nwidth = 8\ncontext = 8\n\
         [training]\nsteps = 2\nbatch_size = 2\neval_interval = 2\neval_batches = 1\n",
    );
    let folder = path_str(&data);
    for (spec, out) in [(&csv_spec, "table.safetensors"), (&lm_spec, "lm.safetensors")] {
        let out = s.arg(out);
        assert_success(&s.kiln(&["train", spec, "--quiet", "--no-checkpoint", "--out", &out]));
        let bytes = std::fs::read(&out).unwrap();
        let text = String::from_utf8_lossy(&bytes);
        assert!(!text.contains(&folder), "{out} holds the data folder {folder}");
        assert!(
            !text.contains("private-data-folder"),
            "{out} names the data folder"
        );
    }
    let model = s.arg("table.safetensors");
    let from_data = run_in(&data, &["eval", &model], &[("KILN_OFFLINE", Some("1"))]);
    assert_success(&from_data);
    assert_success(&s.kiln(&["eval", &model, "--data-dir", &folder]));
    let elsewhere = s.kiln(&["eval", &model]);
    assert_one_line_error(&elsewhere, &["table.csv", "--data-dir"]);
}
