//! The conventions of a command-line tool: an exit status per class of failure (and JSON
//! errors for JSON commands), shell completions, a manual page, and `--offline` standing
//! in for `$KILN_OFFLINE`.

mod common;

use std::process::{Command, Stdio};

use common::*;

/// A spec on MNIST, which these tests' sandboxes do not hold.
const MNIST_SPEC: &str = r#"[data]
source = "mnist"
[model]
layers = [{ type = "flatten" }, { type = "dense", units = 10, activation = "softmax" }]
[training]
optimizer = { type = "adam", learning_rate = 0.01 }
loss = "sparse_categorical_crossentropy"
epochs = 1
"#;

/// A failed run's exit status, and its one `error:` line mentioning `mentions`.
fn assert_fails_with(outcome: &Outcome, code: i32, mentions: &str) {
    let (status, _, stderr) = outcome;
    assert_eq!(status.code(), Some(code), "stderr: {stderr}");
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
    assert!(stderr.starts_with("error: "), "{stderr}");
    assert!(stderr.contains(mentions), "{mentions:?} not in {stderr}");
}

#[test]
fn success_is_0() {
    let s = Sandbox::new("exit-0");
    let model = s.digits_model("m.safetensors");
    let (status, stdout, _) = s.kiln(&["inspect", &model]);
    assert_eq!(status.code(), Some(0));
    assert!(stdout.contains("dense"), "{stdout}");
}

#[test]
fn usage_errors_are_2() {
    let s = Sandbox::new("exit-2");
    assert_fails_with(&s.kiln(&["train", "--epoch", "3"]), 2, "--epoch");
    // A flag clap parses but kiln refuses is a usage error too.
    assert_fails_with(&s.kiln(&["train", "--epochs", "0"]), 2, "--epochs");
    assert_fails_with(&s.kiln(&["cv", "--folds", "1"]), 2, "--folds");
}

/// A file name that is not UTF-8 reaches the command (and its error), not a panic.
#[test]
fn arguments_that_are_not_utf8_are_no_panic() {
    use std::os::unix::ffi::OsStrExt;
    let s = Sandbox::new("non-utf8");
    let model = s.digits_model("m.safetensors");
    let name = std::ffi::OsStr::from_bytes(b"rows\xff.csv");
    let out = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .arg("predict")
        .arg(&model)
        .arg("--input")
        .arg(s.dir.join(name))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(66), "{stderr}");
    assert!(
        stderr.starts_with("error: ") && !stderr.contains("panicked"),
        "{stderr}"
    );
}

#[test]
fn bad_data_is_65() {
    let s = Sandbox::new("exit-65");
    let spec = s.write("s.toml", "[model]\nlayers = [{ type = \"dense\", units = 0 }]\n");
    assert_fails_with(&s.kiln(&["train", &spec]), 65, "s.toml");
    let not_a_model = s.write("m.safetensors", "not a model");
    assert_fails_with(&s.kiln(&["inspect", &not_a_model]), 65, "m.safetensors");
}

#[test]
fn missing_input_is_66() {
    let s = Sandbox::new("exit-66");
    assert_fails_with(
        &s.kiln(&["inspect", &s.arg("none.safetensors")]),
        66,
        "none.safetensors",
    );
    // A data set that is neither on disk nor downloadable (offline).
    let spec = s.write("mnist.toml", MNIST_SPEC);
    assert_fails_with(&s.kiln(&["train", &spec]), 66, "MNIST");
}

#[test]
fn a_bug_is_70_with_one_line_saying_so() {
    let s = Sandbox::new("exit-70");
    let (status, stdout, stderr) = run_in(&s.dir, &["train"], &[("KILN_FAULT_PANIC", Some("1"))]);
    assert_eq!(status.code(), Some(70), "{stderr}");
    assert!(stdout.is_empty(), "{stdout}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.starts_with("error: kiln panicked at "), "{stderr}");
    assert!(
        stderr.contains("KILN_FAULT_PANIC") && stderr.contains("bug in kiln"),
        "{stderr}"
    );
}

#[test]
fn an_output_that_cannot_be_created_is_73() {
    let s = Sandbox::new("exit-73");
    let out = s.arg("no/such/folder/m.safetensors");
    assert_fails_with(&s.kiln(&["train", "--out", &out]), 73, "no/such/folder");
    // A run folder that already holds a run's results is not overwritten.
    let run = s.arg("run");
    assert_success(&s.kiln(&["train", "--quiet", "--run-dir", &run]));
    assert_fails_with(&s.kiln(&["train", "--run-dir", &run]), 73, "--run-dir");
}

#[test]
fn an_io_error_part_way_is_74() {
    let s = Sandbox::new("exit-74");
    let model = s.digits_model("m.safetensors");
    let rows = s.write("rows.csv", "0,".repeat(63) + "0\n");
    for format in ["csv", "json"] {
        let full = std::fs::File::options().write(true).open("/dev/full").unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_kiln"))
            .args(["predict", &model, "--input", &rows, "--format", format])
            .stdout(full)
            .stderr(Stdio::piped())
            .output()
            .unwrap();
        let stderr = String::from_utf8(out.stderr).unwrap();
        assert_eq!(out.status.code(), Some(74), "--format {format}: {stderr}");
        assert!(stderr.contains("No space left"), "{stderr}");
    }
}

#[test]
fn json_commands_print_errors_as_json() {
    let s = Sandbox::new("json-errors");
    let missing = s.arg("none.safetensors");
    let cases: [(&[&str], i32, &str); 3] = [
        (&["eval", &missing, "--json"], 66, "missing_input"),
        (
            &["predict", &missing, "--input", "x.csv", "--format", "json"],
            66,
            "missing_input",
        ),
        (&["eval", "--json", "--bogus"], 2, "usage"),
    ];
    for (args, code, kind) in cases {
        let (status, _, stderr) = s.kiln(args);
        assert_eq!(status.code(), Some(code), "{args:?}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        let error: serde_json::Value = serde_json::from_str(&stderr).expect("stderr is JSON");
        assert_eq!(error["error"]["code"], code, "{error}");
        assert_eq!(error["error"]["kind"], kind, "{error}");
        assert!(!error["error"]["message"].as_str().unwrap().is_empty(), "{error}");
    }
}

#[test]
fn help_documents_the_exit_statuses_and_environment() {
    let (status, stdout, _) = run(&["--help"], &[]);
    assert!(status.success());
    for text in [
        "Exit status:",
        "65",
        "66",
        "70",
        "73",
        "74",
        "KILN_DATA",
        "KILN_OFFLINE",
    ] {
        assert!(stdout.contains(text), "{text:?} not in --help:\n{stdout}");
    }
    let (_, train_help, _) = run(&["train", "--help"], &[]);
    assert!(train_help.contains("[env: KILN_OFFLINE="), "{train_help}");
}

#[test]
fn the_offline_flag_and_variable_are_one_setting() {
    let s = Sandbox::new("offline");
    let spec = s.write("mnist.toml", MNIST_SPEC);
    let home = s.home();
    for (args, offline) in [
        (vec!["train", &spec, "--offline"], None),
        (vec!["--offline", "train", &spec], Some("0")),
        (vec!["train", &spec], Some("yes")),
    ] {
        let env = [
            ("HOME", Some(home.as_str())),
            ("KILN_DATA", None),
            ("KILN_OFFLINE", offline),
        ];
        let (status, _, stderr) = run_in(&s.dir, &args, &env);
        assert_eq!(status.code(), Some(66), "{args:?} {offline:?}: {stderr}");
        assert!(
            stderr.contains("downloading is disabled"),
            "{args:?} {offline:?}: {stderr}"
        );
    }
}

#[test]
fn completion_scripts_are_generated_for_every_shell() {
    for shell in ["bash", "zsh", "fish", "powershell", "elvish"] {
        let (status, script, stderr) = run(&["completions", shell], &[]);
        assert!(status.success(), "{shell}: {stderr}");
        // fish writes `-l data-dir`, the others `--data-dir`.
        for word in ["train", "predict", "data-dir", "offline"] {
            assert!(script.contains(word), "{shell}: {word} not completed");
        }
    }
    let (_, bash, _) = run(&["completions", "bash"], &[]);
    let s = Sandbox::new("completions");
    let file = s.write("kiln.bash", &bash);
    let check = Command::new("bash")
        .args(["-n", &file])
        .output()
        .expect("bash runs");
    assert!(
        check.status.success(),
        "bash -n: {}",
        String::from_utf8_lossy(&check.stderr)
    );
    assert_fails_with(&s.kiln(&["completions", "tcsh"]), 2, "tcsh");
}

#[test]
fn the_manual_page_renders() {
    let (status, page, _) = run(&["man"], &[]);
    assert!(status.success());
    assert!(page.contains(".TH kiln 1"), "{}", &page[..page.len().min(400)]);
    assert!(page.contains("Exit status:"), "the page has no exit statuses");
    let s = Sandbox::new("man");
    let file = s.write("kiln.1", &page);
    // groff (or man, which calls it) where installed; the roff source was checked above.
    if let Ok(out) = Command::new("groff").args(["-man", "-Tutf8", &file]).output() {
        assert!(
            out.status.success(),
            "groff: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("kiln") && text.contains("train"), "{text}");
        assert!(
            !String::from_utf8_lossy(&out.stderr).contains("warning"),
            "groff warns"
        );
    }
    let dir = s.arg("pages");
    assert_success(&s.kiln(&["man", "--out-dir", &dir]));
    for page in ["kiln.1", "kiln-train.1", "kiln-serve.1", "kiln-completions.1"] {
        assert!(s.path("pages").join(page).is_file(), "{page} not written");
    }
}
