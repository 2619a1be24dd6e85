//! A corpus of bad inputs through the `kiln` binary: damaged and tampered model files, bad
//! data files, bad specs and bad command lines, generated here from one trained model and a
//! handful of templates. Every case must fail the way a user can act on: the exit code of
//! its class (65 bad data unless the case says otherwise: 2 usage, 66 missing input, 73
//! cannot create output, 74 I/O), no panic or abort, one line on stderr starting with
//! `error: ` that names the file, field or value at fault, no prefix said twice, and every
//! file that existed before the run byte-identical after it.

mod common;

use std::path::{Path, PathBuf};

use common::*;
use serde_json::{json, Value};

/// One bad input: the command line and what its one-line error must mention.
struct Case {
    what: String,
    args: Vec<String>,
    expect: Vec<String>,
    exit_code: i32,
}

impl Case {
    fn new(what: impl Into<String>, args: &[&str], expect: &[&str]) -> Case {
        Case {
            what: what.into(),
            args: args.iter().map(|a| a.to_string()).collect(),
            expect: expect.iter().map(|e| e.to_string()).collect(),
            exit_code: 65,
        }
    }

    fn usage(mut self) -> Case {
        self.exit_code = 2;
        self
    }

    fn missing(mut self) -> Case {
        self.exit_code = 66;
        self
    }

    fn cannot_create(mut self) -> Case {
        self.exit_code = 73;
        self
    }

    fn io(mut self) -> Case {
        self.exit_code = 74;
        self
    }
}

/// Runs every case, snapshotting `guarded` files around each; returns the failures.
fn run_cases(s: &Sandbox, cases: &[Case], guarded: &[PathBuf]) -> Vec<String> {
    let mut failures = Vec::new();
    for case in cases {
        let before: Vec<Option<Vec<u8>>> = guarded.iter().map(|p| std::fs::read(p).ok()).collect();
        let args: Vec<&str> = case.args.iter().map(String::as_str).collect();
        let (status, _, stderr) = s.kiln(&args);
        let message = stderr.trim_end();
        let mut wrong = Vec::new();
        if status.code() != Some(case.exit_code) {
            wrong.push(format!("exit {status}, expected {}", case.exit_code));
        }
        if !message.starts_with("error: ") || message.lines().count() != 1 {
            wrong.push("not one line starting with `error: `".into());
        }
        if stderr.contains("panicked") || stderr.contains("RUST_BACKTRACE") {
            wrong.push("a panic".into());
        }
        if let Some(missing) = case.expect.iter().find(|e| !message.contains(e.as_str())) {
            wrong.push(format!("does not mention {missing:?}"));
        }
        if let Some(repeated) = repeated_part(message) {
            wrong.push(format!("says {repeated:?} twice"));
        }
        for (path, old) in guarded.iter().zip(&before) {
            if std::fs::read(path).ok() != *old {
                wrong.push(format!("changed {}", path.display()));
            }
        }
        if !wrong.is_empty() {
            failures.push(format!(
                "{}: {}\n    {args:?}\n    {message}",
                case.what,
                wrong.join(", ")
            ));
        }
    }
    failures
}

/// A `: `-separated part of a message (10 characters or more) that appears twice, as in
/// `model m: model m: …` or `No such file (os error 2): No such file (os error 2)`.
fn repeated_part(message: &str) -> Option<String> {
    let parts: Vec<&str> = message.split(": ").map(str::trim).collect();
    parts
        .iter()
        .enumerate()
        .find(|(i, p)| p.len() >= 10 && parts[i + 1..].contains(p))
        .map(|(_, p)| p.to_string())
}

fn report(name: &str, total: usize, failures: Vec<String>) {
    assert!(
        failures.is_empty(),
        "{} of {total} {name} cases failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
    eprintln!("{total} {name} cases, all clear errors");
}

/// A change to one metadata entry's JSON.
type Edit = Box<dyn Fn(&mut Value)>;

/// Ways to damage a model file: (name, bytes of the damaged file, what the error names).
fn damaged_models(good: &[u8]) -> Vec<(String, Vec<u8>, Vec<&'static str>)> {
    let (header, data) = split_model(good);
    let header_len = u64::from_le_bytes(good[..8].try_into().unwrap()) as usize;
    let mut out: Vec<(String, Vec<u8>, Vec<&'static str>)> = vec![
        ("empty".into(), vec![], vec![]),
        ("seven bytes".into(), good[..7].to_vec(), vec![]),
        (
            "header length u64::MAX".into(),
            [&u64::MAX.to_le_bytes()[..], &good[8..]].concat(),
            vec![],
        ),
        (
            "header length past the end".into(),
            [&((good.len() as u64) * 2).to_le_bytes()[..], &good[8..]].concat(),
            vec![],
        ),
        (
            "header not JSON".into(),
            [&good[..8], &vec![b'#'; header_len][..], &data].concat(),
            vec![],
        ),
        (
            "header a JSON list".into(),
            join_model(&json!([1, 2]), &data),
            vec![],
        ),
        ("a CSV file".into(), b"1,2,3\n4,5,6\n".to_vec(), vec![]),
    ];
    for cut in [
        8 + header_len / 2,
        8 + header_len,
        8 + header_len + 100,
        good.len() - 1,
    ] {
        out.push((format!("cut at byte {cut}"), good[..cut].to_vec(), vec![]));
    }
    let with_meta = |change: &dyn Fn(&mut serde_json::Map<String, Value>)| {
        let mut h = header.clone();
        change(h["__metadata__"].as_object_mut().unwrap());
        join_model(&h, &data)
    };
    out.push((
        "no format key".into(),
        with_meta(&|m| drop(m.remove("format"))),
        vec!["format"],
    ));
    out.push((
        "format_version 99".into(),
        with_meta(&|m| drop(m.insert("format_version".into(), json!("99")))),
        vec!["99"],
    ));
    for key in [
        "kiln.architecture",
        "kiln.preprocessing",
        "kiln.classes",
        "kiln.name",
    ] {
        out.push((
            format!("no {key}"),
            with_meta(&|m| drop(m.remove(key))),
            vec![key],
        ));
    }
    for key in [
        "kiln.architecture",
        "kiln.preprocessing",
        "kiln.classes",
        "kiln.training",
        "kiln.data",
        "kiln.lineage",
        "kiln.table",
        "kiln.compression",
    ] {
        out.push((
            format!("{key} not JSON"),
            with_meta(&|m| drop(m.insert(key.into(), json!("{not json")))),
            vec![key],
        ));
        out.push((
            format!("{key} a number"),
            with_meta(&|m| drop(m.insert(key.into(), json!("5")))),
            vec![key],
        ));
    }
    let with_json = |key: &'static str, change: &dyn Fn(&mut Value)| {
        with_meta(&|m| {
            let mut value: Value = serde_json::from_str(m[key].as_str().unwrap()).unwrap();
            change(&mut value);
            m.insert(key.into(), json!(value.to_string()));
        })
    };
    let architecture: Vec<(&str, Edit, Vec<&'static str>)> = vec![
        (
            "input_shape []",
            Box::new(|a| a["input_shape"] = json!([])),
            vec!["input_shape"],
        ),
        (
            "input_shape [0]",
            Box::new(|a| a["input_shape"] = json!([0])),
            vec!["input_shape"],
        ),
        (
            "input_shape [-1]",
            Box::new(|a| a["input_shape"] = json!([-1])),
            vec!["kiln.architecture"],
        ),
        (
            "input_shape text",
            Box::new(|a| a["input_shape"] = json!("8x8")),
            vec!["kiln.architecture"],
        ),
        (
            "no input_shape",
            Box::new(|a| drop(a.as_object_mut().unwrap().remove("input_shape"))),
            vec!["input_shape"],
        ),
        (
            "input_shape 10^10",
            Box::new(|a| a["input_shape"] = json!([100000, 100000])),
            vec!["values per sample"],
        ),
        (
            "units 0",
            Box::new(|a| a["layers"][1]["units"] = json!(0)),
            vec!["units"],
        ),
        (
            "units -1",
            Box::new(|a| a["layers"][1]["units"] = json!(-1)),
            vec!["kiln.architecture"],
        ),
        (
            "units 10^12",
            Box::new(|a| a["layers"][1]["units"] = json!(1_000_000_000_000u64)),
            vec!["layers.1.kernel"],
        ),
        (
            "layer type bogus",
            Box::new(|a| a["layers"][1]["type"] = json!("bogus")),
            vec!["bogus"],
        ),
        (
            "activation bogus",
            Box::new(|a| a["layers"][1]["activation"] = json!("bogus")),
            vec!["bogus"],
        ),
        (
            "dropout rate 2",
            Box::new(|a| a["layers"][2]["rate"] = json!(2.0)),
            vec!["rate"],
        ),
        ("no layers", Box::new(|a| a["layers"] = json!([])), vec![]),
        (
            "an extra layer",
            Box::new(|a| {
                a["layers"]
                    .as_array_mut()
                    .unwrap()
                    .push(json!({"type": "dense", "units": 3}))
            }),
            vec!["layers.4"],
        ),
    ];
    for (what, change, expect) in architecture {
        out.push((
            format!("architecture: {what}"),
            with_json("kiln.architecture", &*change),
            expect,
        ));
    }
    out.push((
        "preprocessing kind bogus".into(),
        with_json("kiln.preprocessing", &|p| p["kind"] = json!("bogus")),
        vec!["kiln.preprocessing"],
    ));
    out.push((
        "preprocessing max 0".into(),
        with_json("kiln.preprocessing", &|p| p["max"] = json!(0.0)),
        vec!["max"],
    ));
    out.push((
        "three class names".into(),
        with_json("kiln.classes", &|c| *c = json!(["a", "b", "c"])),
        vec!["kiln.classes"],
    ));
    out.push((
        "an ensemble of 3 without members".into(),
        with_json("kiln.lineage", &|l| l["ensemble"] = json!({ "members": 3, "sampling": "bootstrap", "combine": "average", "member_test_accuracy": [0.9, 0.9, 0.9], "member_test_loss": [0.1, 0.1, 0.1] })),
        vec!["members.1"],
    ));
    let with_tensor = |change: &dyn Fn(&mut Value)| {
        let mut h = header.clone();
        change(&mut h["layers.1.kernel"]);
        join_model(&h, &data)
    };
    out.push((
        "kernel dtype F16".into(),
        with_tensor(&|t| t["dtype"] = json!("F16")),
        vec!["layers.1.kernel"],
    ));
    out.push((
        "kernel dtype I64".into(),
        with_tensor(&|t| t["dtype"] = json!("I64")),
        vec!["layers.1.kernel"],
    ));
    out.push((
        "kernel shape [64, 127]".into(),
        with_tensor(&|t| t["shape"] = json!([64, 127])),
        vec!["layers.1.kernel"],
    ));
    out.push((
        "kernel offsets past the data".into(),
        with_tensor(&|t| t["data_offsets"] = json!([0, 1 << 30])),
        vec![],
    ));
    let mut renamed = header.clone();
    let kernel = renamed
        .as_object_mut()
        .unwrap()
        .remove("layers.3.kernel")
        .unwrap();
    renamed["layers.3.kernle"] = kernel;
    out.push((
        "a kernel renamed".into(),
        join_model(&renamed, &data),
        vec!["layers.3.kernel"],
    ));
    for (what, value) in [("NaN", f32::NAN), ("infinity", f32::INFINITY)] {
        let mut poisoned = data.clone();
        poisoned[40..44].copy_from_slice(&value.to_le_bytes());
        out.push((
            format!("a {what} weight"),
            join_model(&header, &poisoned),
            vec!["layers.1.kernel"],
        ));
    }
    out
}

#[test]
fn damaged_and_tampered_model_files_are_clear_errors() {
    let s = Sandbox::new("bad-models");
    let model = s.digits_model("good.safetensors");
    let good = std::fs::read(&model).unwrap();
    let input = s.write("rows.csv", "0,".repeat(63) + "0\n");
    let sentinel = s.write("existing-out.safetensors", b"an earlier model the user keeps");
    let mut cases = vec![
        Case::new(
            "a model that does not exist",
            &["predict", &s.arg("none.safetensors"), "--input", &input],
            &["none.safetensors"],
        )
        .missing(),
        Case::new("a folder as a model", &["inspect", &s.arg("home")], &["home"]).missing(),
    ];
    for (i, (what, bytes, expect)) in damaged_models(&good).into_iter().enumerate() {
        let name = format!("damaged-{i}.safetensors");
        let path = s.write(&name, bytes);
        let mut expect = expect;
        expect.push(&name);
        let expect = |extra: &[&'static str]| -> Vec<&str> {
            let mut e: Vec<&str> = expect.iter().map(|e| &**e).collect();
            e.extend_from_slice(extra);
            e
        };
        cases.push(Case::new(
            format!("predict, {what}"),
            &["predict", &path, "--input", &input],
            &expect(&[]),
        ));
        cases.push(Case::new(
            format!("inspect, {what}"),
            &["inspect", &path],
            &expect(&[]),
        ));
        cases.push(Case::new(format!("eval, {what}"), &["eval", &path], &expect(&[])));
        cases.push(Case::new(
            format!("compress, {what}"),
            &["compress", &path, "--out", &sentinel, "--quantize", "int8"],
            &expect(&[]),
        ));
    }
    let guarded = vec![
        PathBuf::from(&model),
        PathBuf::from(&sentinel),
        PathBuf::from(&input),
    ];
    report("model-file", cases.len(), run_cases(&s, &cases, &guarded));
}

/// Bad prediction inputs for a working model: (file name, content, what the error names).
fn bad_prediction_inputs() -> Vec<(&'static str, Vec<u8>, Vec<&'static str>)> {
    let row = "1,".repeat(63) + "1";
    let idx = |magic: [u8; 4], dims: &[u32], data: usize| {
        let mut b = magic.to_vec();
        for d in dims {
            b.extend_from_slice(&d.to_be_bytes());
        }
        b.extend(std::iter::repeat_n(3u8, data));
        b
    };
    vec![
        ("empty.csv", vec![], vec![]),
        ("newline.csv", b"\n".to_vec(), vec![]),
        ("narrow.csv", b"1,2,3\n".to_vec(), vec!["3 columns", "64"]),
        ("wide.csv", format!("{row},1\n").into_bytes(), vec!["65 columns"]),
        (
            "text.csv",
            format!("{row}\n{},x\n", "1,".repeat(62) + "1").into_bytes(),
            vec!["\"x\""],
        ),
        (
            "nan.csv",
            format!("{},nan\n", "1,".repeat(62) + "1").into_bytes(),
            vec!["nan"],
        ),
        (
            "inf.csv",
            format!("{},inf\n", "1,".repeat(62) + "1").into_bytes(),
            vec!["inf"],
        ),
        (
            "huge-float.csv",
            format!("{},1e39\n", "1,".repeat(62) + "1").into_bytes(),
            vec!["1e39"],
        ),
        ("ragged.csv", format!("{row}\n1,2\n").into_bytes(), vec!["line 2"]),
        (
            "empty-cell.csv",
            format!("{},\n", "1,".repeat(62) + "1").into_bytes(),
            vec!["empty"],
        ),
        (
            "ten-megabyte-cell.csv",
            format!(
                "{row}\n{row}\n{}\n{},{}\n",
                row.replace('1', "0"),
                "y".repeat(10 << 20),
                "1,".repeat(62) + "1"
            )
            .into_bytes(),
            vec!["(10485760 bytes)"],
        ),
        (
            "binary.csv",
            (0..300u32).map(|i| (i * 131 % 256) as u8 | 0x80).collect(),
            vec!["binary"],
        ),
        ("nul.csv", b"1,2\x00,3\n".to_vec(), vec!["0x00"]),
        (
            "header-only.csv",
            (0..64)
                .map(|i| format!("c{i}"))
                .collect::<Vec<_>>()
                .join(",")
                .into_bytes(),
            vec![],
        ),
        (
            "corrupt.gz",
            [&[0x1f, 0x8b][..], &[7u8; 100][..]].concat(),
            vec![],
        ),
        ("type-09.idx", idx([0, 0, 9, 3], &[1, 8, 8], 64), vec!["0x09"]),
        (
            "magic-1234.idx",
            idx([0x12, 0x34, 8, 3], &[1, 8, 8], 64),
            vec!["not an IDX file"],
        ),
        (
            "short-idx3-ubyte",
            idx([0, 0, 8, 3], &[2, 8, 8], 100),
            vec!["truncated"],
        ),
        ("long-idx3-ubyte", idx([0, 0, 8, 3], &[1, 8, 8], 65), vec![]),
        (
            "wrong-dims.idx",
            idx([0, 0, 8, 3], &[1, 28, 28], 784),
            vec!["784"],
        ),
        (
            "zero-samples.idx",
            idx([0, 0, 8, 3], &[0, 8, 8], 0),
            vec!["no samples"],
        ),
        (
            "nine-dims.idx",
            idx([0, 0, 8, 9], &[1; 9], 1),
            vec!["9 dimensions"],
        ),
        (
            "huge-dims.idx",
            idx([0, 0, 8, 3], &[u32::MAX, u32::MAX, u32::MAX], 10),
            vec![],
        ),
    ]
}

#[test]
fn bad_data_files_are_clear_errors() {
    let s = Sandbox::new("bad-data");
    let model = s.digits_model("m.safetensors");
    let mut cases = vec![
        Case::new(
            "a missing input",
            &["predict", &model, "--input", &s.arg("none.csv")],
            &["none.csv"],
        )
        .missing(),
        Case::new(
            "a folder as input",
            &["predict", &model, "--input", &s.arg("home")],
            &["home"],
        )
        .missing(),
    ];
    for (name, content, expect) in bad_prediction_inputs() {
        let path = s.write(name, content);
        let mut expect = expect;
        expect.push(name);
        cases.push(Case::new(
            format!("predict {name}"),
            &["predict", &model, "--input", &path],
            &expect,
        ));
    }
    // The same files as a CSV data source for training, with a guarded --out.
    let out = s.write("kept.safetensors", b"the user's earlier model");
    for (name, expect) in [
        ("narrow.csv", vec![]),
        ("text.csv", vec![]),
        ("nan.csv", vec![]),
        ("ragged.csv", vec!["line 2"]),
        ("ten-megabyte-cell.csv", vec!["(10485760 bytes)"]),
        ("binary.csv", vec!["binary"]),
        ("empty.csv", vec![]),
        ("none.csv", vec![]),
    ] {
        let spec = s.write(
            &format!("{name}.toml"),
            format!(
                "[data]\nsource = \"csv\"\ntrain = \"{name}\"\n[model]\nlayers = [{{ type = \"dense\", units = 2, activation = \"softmax\" }}]\n[training]\noptimizer = {{ type = \"adam\", learning_rate = 0.01 }}\nloss = \"sparse_categorical_crossentropy\"\nepochs = 1\n"
            ),
        );
        let mut expect = expect;
        expect.push(name);
        let case = Case::new(
            format!("train on {name}"),
            &["train", &spec, "--quiet", "--no-checkpoint", "--out", &out],
            &expect,
        );
        cases.push(match name {
            "none.csv" => case.missing(),
            _ => case,
        });
    }
    let guarded = vec![PathBuf::from(&model), PathBuf::from(&out)];
    report("data-file", cases.len(), run_cases(&s, &cases, &guarded));
}

const GOOD_SPEC: &str = r#"name = "ok"
[data]
source = "digits"
[model]
layers = [
  { type = "flatten" },
  { type = "dense", units = 16, activation = "relu" },
  { type = "dropout", rate = 0.1 },
  { type = "dense", units = 10, activation = "softmax" },
]
[training]
optimizer = { type = "adam", learning_rate = 0.01 }
loss = "sparse_categorical_crossentropy"
epochs = 1
batch_size = 32
"#;

/// Spec edits: (what, the line to replace, its replacement, what the error names).
fn bad_specs() -> Vec<(&'static str, &'static str, &'static str, Vec<&'static str>)> {
    let units = r#"{ type = "dense", units = 16, activation = "relu" },"#;
    let dropout = r#"{ type = "dropout", rate = 0.1 },"#;
    let optimizer = r#"optimizer = { type = "adam", learning_rate = 0.01 }"#;
    vec![
        ("units 0", units, r#"{ type = "dense", units = 0, activation = "relu" },"#, vec!["units"]),
        ("units -3", units, r#"{ type = "dense", units = -3, activation = "relu" },"#, vec!["-3"]),
        ("units 1e9", units, r#"{ type = "dense", units = 1000000000, activation = "relu" },"#, vec!["layer"]),
        ("units text", units, r#"{ type = "dense", units = "many", activation = "relu" },"#, vec!["many"]),
        ("units 1.5", units, r#"{ type = "dense", units = 1.5, activation = "relu" },"#, vec!["1.5"]),
        ("no units", units, r#"{ type = "dense", activation = "relu" },"#, vec!["units"]),
        ("activation bogus", units, r#"{ type = "dense", units = 16, activation = "bogus" },"#, vec!["bogus"]),
        ("layer type bogus", units, r#"{ type = "bogus", units = 16 },"#, vec!["bogus"]),
        ("a misspelt field", units, r#"{ type = "dense", unit = 16, activation = "relu" },"#, vec!["unit"]),
        ("a layer name twice", units, r#"{ type = "dense", units = 16, name = "x" }, { type = "dense", units = 16, name = "x" },"#, vec!["\"x\""]),
        ("an empty layer name", units, r#"{ type = "dense", units = 16, name = "" },"#, vec!["name"]),
        ("trainable a string", units, r#"{ type = "dense", units = 16, trainable = "no" },"#, vec!["trainable"]),
        ("a layer not a table", units, r#"16,"#, vec!["table"]),
        ("dropout rate 1.5", dropout, r#"{ type = "dropout", rate = 1.5 },"#, vec!["1.5"]),
        ("dropout rate -0.1", dropout, r#"{ type = "dropout", rate = -0.1 },"#, vec!["-0.1"]),
        ("dropout rate nan", dropout, r#"{ type = "dropout", rate = nan },"#, vec!["rate", "nan"]),
        ("dropout rate inf", dropout, r#"{ type = "dropout", rate = inf },"#, vec!["rate"]),
        ("conv2d on a flat input", dropout, r#"{ type = "conv2d", filters = 4, kernel_size = 3 },"#, vec!["conv2d", "[16]"]),
        ("conv2d filters 1e9", r#"{ type = "flatten" },"#, r#"{ type = "reshape", target_shape = [8, 8, 1] }, { type = "conv2d", filters = 1000000000, kernel_size = 3 }, { type = "flatten" },"#, vec!["layer"]),
        ("kernel_size 0", r#"{ type = "flatten" },"#, r#"{ type = "reshape", target_shape = [8, 8, 1] }, { type = "conv2d", filters = 4, kernel_size = 0 }, { type = "flatten" },"#, vec!["kernel_size"]),
        ("kernel_size 9 on 8x8", r#"{ type = "flatten" },"#, r#"{ type = "reshape", target_shape = [8, 8, 1] }, { type = "conv2d", filters = 4, kernel_size = 9 }, { type = "flatten" },"#, vec!["9"]),
        ("reshape to the wrong size", r#"{ type = "flatten" },"#, r#"{ type = "reshape", target_shape = [7, 7] },"#, vec!["7"]),
        ("learning_rate -1", optimizer, r#"optimizer = { type = "adam", learning_rate = -1.0 }"#, vec!["learning_rate", "-1"]),
        ("learning_rate 0", optimizer, r#"optimizer = { type = "adam", learning_rate = 0.0 }"#, vec!["learning_rate"]),
        ("learning_rate nan", optimizer, r#"optimizer = { type = "adam", learning_rate = nan }"#, vec!["learning_rate"]),
        ("learning_rate inf", optimizer, r#"optimizer = { type = "adam", learning_rate = inf }"#, vec!["learning_rate"]),
        ("beta_1 1", optimizer, r#"optimizer = { type = "adam", learning_rate = 0.01, beta_1 = 1.0 }"#, vec!["beta_1"]),
        ("beta_2 -0.5", optimizer, r#"optimizer = { type = "adam", learning_rate = 0.01, beta_2 = -0.5 }"#, vec!["beta_2"]),
        ("epsilon 0", optimizer, r#"optimizer = { type = "adam", learning_rate = 0.01, epsilon = 0.0 }"#, vec!["epsilon"]),
        ("momentum 1.5", optimizer, r#"optimizer = { type = "sgd", learning_rate = 0.01, momentum = 1.5 }"#, vec!["momentum"]),
        ("rho 2", optimizer, r#"optimizer = { type = "rmsprop", learning_rate = 0.01, rho = 2.0 }"#, vec!["rho"]),
        ("weight_decay -1", optimizer, r#"optimizer = { type = "adamw", learning_rate = 0.01, weight_decay = -1.0 }"#, vec!["weight_decay"]),
        ("optimizer bogus", optimizer, r#"optimizer = { type = "bogus", learning_rate = 0.01 }"#, vec!["bogus"]),
        ("optimizer a string", optimizer, r#"optimizer = "adam""#, vec!["line 12", "\"adam\""]),
        ("loss bogus", r#"loss = "sparse_categorical_crossentropy""#, r#"loss = "bogus""#, vec!["bogus"]),
        ("epochs 0", "epochs = 1", "epochs = 0", vec!["epochs"]),
        ("epochs -1", "epochs = 1", "epochs = -1", vec!["-1"]),
        ("epochs 1.5", "epochs = 1", "epochs = 1.5", vec!["1.5"]),
        ("batch_size 0", "batch_size = 32", "batch_size = 0", vec!["batch_size"]),
        ("batch_size 10^12", "batch_size = 32", "batch_size = 1000000000000", vec!["batch_size"]),
        ("validation_split 1.5", "batch_size = 32", "batch_size = 32\nvalidation_split = 1.5", vec!["validation_split"]),
        ("validation_split -0.1", "batch_size = 32", "batch_size = 32\nvalidation_split = -0.1", vec!["validation_split"]),
        ("an unknown training key", "batch_size = 32", "batch_size = 32\nbatch_sise = 3", vec!["batch_sise"]),
        ("source bogus", r#"source = "digits""#, r#"source = "bogus""#, vec!["bogus"]),
        ("test_fraction 0", r#"source = "digits""#, "source = \"digits\"\ntest_fraction = 0.0", vec!["test_fraction"]),
        ("test_fraction 1", r#"source = "digits""#, "source = \"digits\"\ntest_fraction = 1.0", vec!["test_fraction"]),
        ("test split empty", r#"source = "digits""#, "source = \"digits\"\ntest_fraction = 0.0001", vec!["test"]),
        ("csv without train", r#"source = "digits""#, r#"source = "csv""#, vec!["train"]),
        ("mnist from a missing folder", r#"source = "digits""#, "source = \"mnist\"\ndata_dir = \"no-such-folder\"", vec!["no-such-folder"]),
        ("no [model]", "[model]", "[modle]", vec!["modle"]),
        ("no layers", "layers = [", "layerz = [", vec!["layerz"]),
        ("model type bogus", "[model]", "[model]\ntype = \"bogus\"", vec!["bogus"]),
        ("not TOML", "[training]", "[training", vec!["line"]),
        ("a duplicate key", "epochs = 1", "epochs = 1\nepochs = 2", vec!["epochs"]),
        ("name a number", r#"name = "ok""#, "name = 5", vec!["line 1", "`5`"]),
        ("normalization bogus", "[model]", "[preprocessing]\nnormalization = { kind = \"bogus\" }\n[model]", vec!["bogus"]),
        ("augmentation on flat data", "[model]", "[preprocessing.augmentation]\ntransforms = [{ type = \"random_flip\", mode = \"sideways\" }]\n[model]", vec!["sideways"]),
        ("a schedule with a negative step", "batch_size = 32", "batch_size = 32\nlr_schedule = { type = \"step_decay\", every = -2, factor = 0.5 }", vec!["lr_schedule"]),
        ("a Keras key in the wrong place", "batch_size = 32", "batch_size = 32\nearly_stopping = { patience = -1 }", vec!["early_stopping", "callbacks"]),
        ("gpt with no block_size", "[model]", "[model]\ntype = \"gpt\"", vec![]),
    ]
}

#[test]
fn bad_specs_are_clear_errors_and_keep_existing_output() {
    let s = Sandbox::new("bad-specs");
    let out = s.write("kept.safetensors", b"the user's earlier model");
    let report_file = s.write("kept-report.json", b"{\"earlier\": true}");
    let good = s.write("good.toml", GOOD_SPEC);
    let mut cases = vec![
        Case::new("a missing spec", &["train", &s.arg("none.toml")], &["none.toml"]).missing(),
        Case::new("a folder as spec", &["train", &s.arg("home")], &["home"]).missing(),
        Case::new(
            "an empty spec",
            &["train", &s.write("empty.toml", "")],
            &["empty.toml"],
        ),
        Case::new(
            "a binary spec",
            &["train", &s.write("binary.toml", [0xffu8, 0xfe, 0, 1])],
            &["binary.toml"],
        ),
        Case::new(
            "--out in a missing folder",
            &["train", &good, "--out", &s.arg("no/such/m.safetensors")],
            &["--out", "no/such"],
        )
        .cannot_create(),
        Case::new(
            "--report in a missing folder",
            &[
                "train",
                &good,
                "--out",
                &out,
                "--report",
                &s.arg("no/such/r.json"),
            ],
            &["--report", "no/such"],
        )
        .cannot_create(),
        Case::new(
            "--out a folder",
            &["train", &good, "--out", &s.arg("home")],
            &["--out", "folder"],
        )
        .cannot_create(),
        Case::new(
            "--epochs 0",
            &["train", &good, "--epochs", "0", "--out", &out],
            &["epochs"],
        )
        .usage(),
        Case::new(
            "--resume a folder without a checkpoint",
            &["train", &good, "--resume", &s.arg("home")],
            &["home"],
        )
        .missing(),
        Case::new(
            "--init a missing model",
            &[
                "train",
                &good,
                "--init",
                &s.arg("none.safetensors"),
                "--out",
                &out,
            ],
            &["none.safetensors"],
        )
        .missing(),
    ];
    for (i, (what, from, to, expect)) in bad_specs().into_iter().enumerate() {
        assert!(GOOD_SPEC.contains(from), "{what}: the template has no {from:?}");
        let name = format!("spec-{i}.toml");
        let path = s.write(&name, GOOD_SPEC.replacen(from, to, 1));
        let mut expect = expect;
        expect.push(&name);
        // A spec that points at data that is not there is a missing input, not a bad spec.
        let class = |case: Case| match what.contains("missing") {
            true => case.missing(),
            false => case,
        };
        cases.push(class(Case::new(
            format!("spec: {what}"),
            &[
                "train",
                &path,
                "--quiet",
                "--no-checkpoint",
                "--out",
                &out,
                "--report",
                &report_file,
            ],
            &expect,
        )));
        // Cross-validation folds the training split only; an empty test split is no error.
        if !matches!(what, "test split empty" | "test_fraction 0") {
            cases.push(class(Case::new(
                format!("cv, {what}"),
                &["cv", &path, "--folds", "2"],
                &expect,
            )));
        }
    }
    let guarded = vec![
        PathBuf::from(&out),
        PathBuf::from(&report_file),
        PathBuf::from(&good),
    ];
    let failures = run_cases(&s, &cases, &guarded);
    let models: Vec<PathBuf> = walk(&s.dir)
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "safetensors") && !guarded.contains(p))
        .collect();
    report("spec", cases.len(), failures);
    assert!(models.is_empty(), "failed runs left models: {models:?}");
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .flat_map(|e| match e.path().is_dir() {
                    true => walk(&e.path()),
                    false => vec![e.path()],
                })
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn bad_command_lines_are_clear_errors() {
    let s = Sandbox::new("bad-cli");
    let model = s.digits_model("m.safetensors");
    let input = s.write("rows.csv", "0,".repeat(63) + "0\n");
    let cases = vec![
        Case::new("an unknown command", &["trian"], &["trian"]).usage(),
        Case::new(
            "an unknown flag",
            &["train", "--epoch", "3"],
            &["--epoch", "kiln train --help"],
        )
        .usage(),
        Case::new("a flag without its value", &["train", "--epochs"], &["--epochs"]).usage(),
        Case::new("epochs not a number", &["train", "--epochs", "many"], &["many"]).usage(),
        Case::new("epochs negative", &["train", "--epochs", "-2"], &["-2"]).usage(),
        Case::new("predict without --input", &["predict", &model], &["--input"]).usage(),
        Case::new(
            "predict --format bogus",
            &["predict", &model, "--input", &input, "--format", "bogus"],
            &["bogus"],
        )
        .usage(),
        Case::new(
            "serve --port 70000",
            &["serve", &model, "--port", "70000"],
            &["70000"],
        )
        .usage(),
        Case::new(
            "serve --max-batch 0",
            &["serve", &model, "--max-batch", "0"],
            &["--max-batch"],
        )
        .usage(),
        Case::new(
            "serve --timeout-ms 0",
            &["serve", &model, "--timeout-ms", "0"],
            &["--timeout-ms"],
        )
        .usage(),
        Case::new(
            "serve --workers 0",
            &["serve", &model, "--workers", "0"],
            &["--workers"],
        )
        .usage(),
        Case::new(
            "serve --idle-timeout-ms 0",
            &["serve", &model, "--idle-timeout-ms", "0"],
            &["--idle-timeout-ms"],
        )
        .usage(),
        Case::new(
            "serve --max-connections 0",
            &["serve", &model, "--max-connections", "0"],
            &["--max-connections"],
        )
        .usage(),
        Case::new(
            "serve a bad name",
            &["serve", &format!("../x={model}")],
            &["../x"],
        )
        .usage(),
        Case::new(
            "serve on a busy port",
            &["serve", &model, "--host", "256.1.1.1"],
            &["256.1.1.1"],
        )
        .io(),
        Case::new("cv --folds 1", &["cv", "--folds", "1"], &["folds"]).usage(),
        Case::new(
            "compress without a method",
            &["compress", &model, "--out", &s.arg("c.safetensors")],
            &["--quantize"],
        )
        .usage(),
        Case::new(
            "compress onto itself",
            &["compress", &model, "--out", &model, "--quantize", "int8"],
            &["--out"],
        )
        .usage(),
        Case::new(
            "generate with a classifier",
            &["generate", &model, "--prompt", "hi"],
            &["m.safetensors"],
        ),
        Case::new("plot a missing run", &["plot", &s.arg("no-run")], &["no-run"]).missing(),
        Case::new(
            "tune with a missing space",
            &["tune", "--space", &s.arg("none.toml")],
            &["none.toml"],
        )
        .missing(),
        Case::new(
            "ensemble of 0",
            &["ensemble", "--members", "0", "--out", &s.arg("e.safetensors")],
            &["members"],
        )
        .usage(),
    ];
    let guarded = vec![PathBuf::from(&model), PathBuf::from(&input)];
    report("command-line", cases.len(), run_cases(&s, &cases, &guarded));
}

/// The model files behind the fuzzing findings (fuzz/FINDINGS.md): a reshape whose sizes
/// multiply past i64, a GPT whose MLP width overflows, a GPT whose metadata claims a model
/// far larger than its tensors, and a tokenizer whose merges double a token each time. Each
/// is refused at once, as one line, by every command that loads a model.
#[test]
fn the_fuzzing_findings_are_clear_errors() {
    let s = Sandbox::new("fuzz-findings");
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/regressions/model_load");
    let mut cases = Vec::new();
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    assert_eq!(files.len(), 4, "{files:?}");
    for file in &files {
        let name = file.file_name().unwrap().to_string_lossy().into_owned();
        let path = path_str(file);
        cases.push(Case::new(
            format!("inspect {name}"),
            &["inspect", &path],
            &[&name],
        ));
        cases.push(Case::new(format!("eval {name}"), &["eval", &path], &[&name]));
        cases.push(Case::new(
            format!("generate {name}"),
            &["generate", &path, "--prompt", "a", "--tokens", "2"],
            &[&name],
        ));
    }
    report("fuzz-finding", cases.len(), run_cases(&s, &cases, &files));
}
