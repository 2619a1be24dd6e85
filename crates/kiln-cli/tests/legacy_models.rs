//! Model files written by kiln before the one-model redesign (made by
//! `tests/fixtures/legacy/make.sh` with the release of commit 5bee7d8) still load, and
//! `predict`, `eval` and `generate` print exactly what that release printed.

mod common;

use std::path::PathBuf;

use common::{assert_success, run_in};

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/legacy")
}

fn expected(name: &str) -> String {
    std::fs::read_to_string(fixtures().join("expected").join(name)).expect("fixture present")
}

/// Runs kiln in the fixture folder (the files are named relatively there, as when made).
fn kiln(args: &[&str]) -> String {
    let outcome = run_in(&fixtures(), args, &[]);
    assert_success(&outcome);
    outcome.1
}

#[test]
fn layer_stack_models_predict_and_evaluate_as_before() {
    for model in ["mlp", "cnn", "int8", "pruned", "ensemble"] {
        let file = format!("{model}.safetensors");
        let predicted = kiln(&["predict", &file, "--input", "digits-rows.csv", "--format", "json"]);
        assert_eq!(
            predicted,
            expected(&format!("{model}.predict.json")),
            "{model}: predict"
        );
        let evaluated = kiln(&["eval", &file, "--json"]);
        assert_eq!(
            evaluated,
            expected(&format!("{model}.eval.json")),
            "{model}: eval"
        );
    }
}

#[test]
fn language_model_evaluates_and_generates_as_before() {
    let evaluated = kiln(&[
        "eval",
        "gpt.safetensors",
        "--text",
        "corpus.txt",
        "--batches",
        "4",
        "--json",
    ]);
    assert_eq!(evaluated, expected("gpt.eval.json"));
    let sampled = kiln(&[
        "generate",
        "gpt.safetensors",
        "--prompt",
        "First",
        "--tokens",
        "60",
        "--seed",
        "3",
        "--top-k",
        "5",
    ]);
    assert_eq!(sampled, expected("gpt.generate.txt"));
    let greedy = kiln(&[
        "generate",
        "gpt.safetensors",
        "--prompt",
        "All:",
        "--tokens",
        "40",
        "--temperature",
        "0",
    ]);
    assert_eq!(greedy, expected("gpt.greedy.txt"));
}
