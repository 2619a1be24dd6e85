//! End to end on the command line: a language model trained on a small text, generating
//! (cached and uncached alike), evaluated, and refusing bad input with one clear line.

mod common;

use common::{assert_one_line_error, assert_success, Sandbox};

/// A small play-like text: enough repetition for a tiny GPT to learn in seconds.
fn play() -> String {
    let lines = [
        "ROMEO:\nBut soft, what light through yonder window breaks?\n\n",
        "JULIET:\nO Romeo, Romeo, wherefore art thou Romeo?\n\n",
        "NURSE:\nAnon, anon! Come, let us away.\n\n",
    ];
    lines.iter().cycle().take(90).copied().collect()
}

const SPEC: &str = r#"
name = "tiny-play"
[data]
path = "play.txt"
tokenizer = "char"
[model]
type = "gpt"
layers = 2
heads = 2
width = 32
context = 32
[training]
steps = 150
batch_size = 8
seed = 3
eval_interval = 75
eval_batches = 5
gradient_clipping = { global_clipnorm = 1.0 }
[training.optimizer]
type = "adamw"
learning_rate = 0.005
weight_decay = 0.1
exclude_from_weight_decay = ["bias", "gamma", "beta"]
[training.learning_rate_schedule]
type = "cosine_decay"
initial_learning_rate = 0.0005
warmup_target = 0.005
warmup_steps = 20
decay_steps = 130
alpha = 0.1
"#;

fn trained(s: &Sandbox) -> String {
    s.write("play.txt", play());
    let spec = s.write("spec.toml", SPEC);
    let model = s.arg("lm.safetensors");
    let report = s.arg("report.json");
    let out = s.kiln(&[
        "train",
        &spec,
        "--out",
        &model,
        "--report",
        &report,
        "--run-dir",
        &s.arg("run"),
    ]);
    assert_success(&out);
    assert!(
        out.1.contains("step     75/150") && out.1.contains("val loss"),
        "{}",
        out.1
    );
    model
}

#[test]
fn trains_generates_and_evaluates() {
    let s = Sandbox::new("lm-train");
    let model = trained(&s);
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(s.path("report.json")).unwrap()).unwrap();
    let val = report["val_loss"].as_f64().unwrap();
    // 27 distinct characters: chance is ln 27 ≈ 3.3; the text is highly repetitive.
    assert!(val < 1.2, "validation loss {val}");
    assert!(s.path("run/model.safetensors").exists() && s.path("run/history.json").exists());

    let generate = |seed: &str, extra: &[&str]| {
        let mut args = vec![
            "generate", &model, "--prompt", "ROMEO:", "--tokens", "120", "--seed", seed,
        ];
        args.extend_from_slice(extra);
        let out = s.kiln(&args);
        assert_success(&out);
        out
    };
    let cached = generate("5", &[]);
    let uncached = generate("5", &["--no-cache"]);
    assert_eq!(cached.1, uncached.1, "the KV cache changed the text");
    assert!(cached.1.starts_with("ROMEO:") && cached.1.chars().count() == "ROMEO:".len() + 120 + 1);
    assert!(cached.2.contains("tokens/s, KV cache") && uncached.2.contains("no KV cache"));
    // Learned the play's shape: a speaker's line starts after a blank line.
    assert!(cached.1.contains("\n\n"), "{}", cached.1);
    let other_seed = generate("6", &[]);
    assert_ne!(cached.1, other_seed.1);

    let eval = s.kiln(&["eval", &model, "--json"]);
    assert_success(&eval);
    let scores: serde_json::Value = serde_json::from_str(eval.1.trim()).unwrap();
    let (loss, perplexity) = (
        scores["loss"].as_f64().unwrap(),
        scores["perplexity"].as_f64().unwrap(),
    );
    assert!((loss - val).abs() < 1e-4, "eval {loss} vs training's {val}");
    assert!((perplexity - loss.exp()).abs() < 1e-3);

    let inspect = s.kiln(&["inspect", &model]);
    assert_success(&inspect);
    assert!(
        inspect.1.contains("GPT: 2 layers, 2 heads, width 32") && inspect.1.contains("tokenizer: char"),
        "{}",
        inspect.1
    );
    // Commands for layer-stack models say what to use instead.
    assert_one_line_error(
        &s.kiln(&["predict", &model, "--input", &s.arg("play.txt")]),
        &["is a language model", "kiln generate"],
    );
}

#[test]
fn bad_input_is_one_clear_line() {
    let s = Sandbox::new("lm-errors");
    let model = trained(&s);
    assert_one_line_error(
        &s.kiln(&["generate", &model, "--prompt", "ROMEO: ☃"]),
        &[
            "--prompt",
            "'☃'",
            "U+2603",
            "position 8",
            "not in the model's vocabulary",
        ],
    );
    let long = "ROMEO ".repeat(6);
    assert_one_line_error(
        &s.kiln(&["generate", &model, "--prompt", &long]),
        &["36 tokens long", "longer than the model's context of 32"],
    );
    assert_one_line_error(
        &s.kiln(&["generate", &model, "--prompt", "R", "--top-k", "0"]),
        &["--top-k"],
    );

    let latin1 = s.write("latin1.txt", b"ROMEO:\nCaf\xe9 au lait\n".as_slice());
    assert_one_line_error(
        &s.kiln(&["eval", &model, "--text", &latin1]),
        &["latin1.txt", "not UTF-8", "0xE9", "line 2"],
    );
    let spec = s.write("bad-text.toml", SPEC.replace("play.txt", "latin1.txt"));
    assert_one_line_error(
        &s.kiln(&["train", &spec]),
        &["latin1.txt", "not UTF-8", "offset 10"],
    );

    s.write("small.txt", "ab".repeat(10));
    let spec = s.write("small.toml", SPEC.replace("play.txt", "small.txt"));
    assert_one_line_error(
        &s.kiln(&["train", &spec]),
        &["small.txt", "fewer than one window", "33"],
    );

    let spec = s.write("heads.toml", SPEC.replace("heads = 2", "heads = 3"));
    assert_one_line_error(
        &s.kiln(&["train", &spec]),
        &[
            "heads.toml",
            "model.width = 32: expected a multiple of `heads` 3",
            "not divisible by `heads` 3",
        ],
    );

    // The model records its text's checksum: eval refuses a changed text.
    s.write("play.txt", play().replace("Romeo", "Tybalt"));
    assert_one_line_error(&s.kiln(&["eval", &model]), &["play.txt", "has changed", "--text"]);

    let spec = s.write("spec-steps.toml", SPEC);
    assert_one_line_error(
        &s.kiln(&["train", &spec, "--epochs", "3"]),
        &["--epochs", "--steps"],
    );
    assert_one_line_error(
        &s.kiln(&["generate", &s.arg("missing.safetensors"), "--prompt", "R"]),
        &["missing.safetensors"],
    );
    // Nothing already saved is lost by a failed run.
    assert!(std::path::Path::new(&model).exists());
}

/// The tensors of a model file (its bytes after the header), to compare runs bit for bit.
fn tensor_bytes(path: &std::path::Path) -> Vec<u8> {
    let bytes = std::fs::read(path).unwrap();
    let header = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    bytes[8 + header..].to_vec()
}

#[test]
fn a_gpt_run_resumes_bit_identically_and_plots_its_curves() {
    let s = Sandbox::new("lm-resume");
    s.write("play.txt", play());
    let spec = s.write(
        "spec.toml",
        SPEC.replace("eval_interval = 75", "eval_interval = 40").replace(
            "[training.optimizer]",
            "callbacks = [{ type = \"csv_logger\", filename = \"log.csv\" }]\n[training.optimizer]",
        ),
    );
    let one = s.arg("one.safetensors");
    let out = s.kiln(&[
        "train",
        &spec,
        "--steps",
        "100",
        "--run-dir",
        &s.arg("one"),
        "--out",
        &one,
    ]);
    assert_success(&out);
    let out = s.kiln(&["train", &spec, "--steps", "60", "--run-dir", &s.arg("split")]);
    assert_success(&out);
    assert!(out.1.contains("step     60/60"), "{}", out.1);
    let resumed = s.arg("resumed.safetensors");
    let out = s.kiln(&[
        "train",
        "--resume",
        &s.arg("split"),
        "--steps",
        "100",
        "--out",
        &resumed,
    ]);
    assert_success(&out);
    assert!(out.1.contains("resuming after step 60"), "{}", out.1);
    assert!(
        out.1.contains("step    100/100") && out.1.contains("ms/step"),
        "{}",
        out.1
    );
    assert_eq!(
        tensor_bytes(s.path("one.safetensors").as_path()),
        tensor_bytes(s.path("resumed.safetensors").as_path())
    );
    // The CSV log of the resumed run: evaluations at 40 and 60, then 80 and 100.
    let csv = std::fs::read_to_string(s.path("split/log.csv")).unwrap();
    assert_eq!(csv.lines().count(), 5, "{csv}");

    let out = s.kiln(&["plot", &s.arg("split")]);
    assert_success(&out);
    assert!(s.path("split/curves.png").exists() && s.path("split/curves.svg").exists());

    // Asking for no more steps, or epochs of a language model, is refused by name.
    assert_one_line_error(
        &s.kiln(&["train", "--resume", &s.arg("split"), "--steps", "100"]),
        &["already holds 100 trained steps of the 100"],
    );
    assert_one_line_error(
        &s.kiln(&["train", "--resume", &s.arg("split"), "--epochs", "3"]),
        &["--epochs", "--steps"],
    );
    assert_one_line_error(&s.kiln(&["train", "--steps", "5"]), &["--steps", "--epochs"]);
    let bad = s.write("bad-type.toml", SPEC.replace("type = \"gpt\"", "type = \"bert\""));
    assert_one_line_error(
        &s.kiln(&["train", &bad]),
        &["bad-type.toml", "\"bert\"", "sequential"],
    );
}

/// The Hugging Face GPT-2 fixture (crates/kiln/tests/fixtures/gpt2-tiny) through the
/// command line: imported, tokenized, inspected, generated from and evaluated on a text.
#[test]
fn an_imported_gpt2_tokenizes_generates_and_evaluates() {
    let s = Sandbox::new("gpt2-import");
    let fixture = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../kiln/tests/fixtures/gpt2-tiny");
    let fixture = fixture.to_str().unwrap();
    let model = s.arg("gpt2.safetensors");
    let out = s.kiln(&["import", "gpt2", fixture, "--out", &model]);
    assert_success(&out);
    assert!(
        out.1
            .contains("2 layers, 4 heads, width 48, context 64, vocabulary 400"),
        "{}",
        out.1
    );
    let expected: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(format!("{fixture}/expected.json")).unwrap()).unwrap();
    let mixed = &expected["prompts"][1];
    let out = s.kiln(&["tokenize", &model, "--text", mixed["text"].as_str().unwrap()]);
    assert_success(&out);
    let ids: serde_json::Value = serde_json::from_str(out.1.trim()).unwrap();
    assert_eq!(ids, mixed["ids"], "the ids GPT2TokenizerFast gives");
    let out = s.kiln(&["inspect", &model]);
    assert!(
        out.1.contains("byte_level_bpe") && out.1.contains("GeluNew"),
        "{}",
        out.1
    );
    let out = s.kiln(&[
        "generate", &model, "--prompt", "Hello", "--tokens", "20", "--seed", "3",
    ]);
    assert_success(&out);
    assert!(out.1.starts_with("Hello"), "{}", out.1);
    // No training text of its own: eval needs --text, and says so.
    let out = s.kiln(&["eval", &model]);
    assert_one_line_error(&out, &["gpt2.safetensors", "--text"]);
    assert_eq!(out.0.code(), Some(2));
    let text = s.write("text.txt", play());
    let out = s.kiln(&["eval", &model, "--text", &text, "--batches", "2", "--json"]);
    assert_success(&out);
    let report: serde_json::Value = serde_json::from_str(out.1.trim()).unwrap();
    assert!(report["perplexity"].as_f64().unwrap() > 1.0, "{report}");
    // A folder that is not a checkpoint names what is missing.
    let out = s.kiln(&["import", "gpt2", &s.home(), "--out", &s.arg("x.safetensors")]);
    assert_one_line_error(&out, &["config.json"]);
    assert_eq!(out.0.code(), Some(66));
}

/// `kiln train SPEC --init IMPORTED`: fine-tuning starts from the imported GPT-2's weights
/// and reads the text with its tokenizer; a shorter context drops the later positions; a
/// resumed run finds the tokenizer again; a spec describing another network is refused.
#[test]
fn an_imported_gpt2_fine_tunes_on_a_text_and_resumes() {
    let s = Sandbox::new("gpt2-fine-tune");
    let fixture = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../kiln/tests/fixtures/gpt2-tiny");
    let imported = s.arg("gpt2.safetensors");
    assert_success(&s.kiln(&["import", "gpt2", fixture.to_str().unwrap(), "--out", &imported]));
    s.write("play.txt", play());
    let spec = |width: usize| {
        format!(
            "name = \"tuned\"\n[data]\npath = \"play.txt\"\n[model]\ntype = \"gpt\"\nlayers = 2\nheads = 4\n\
             width = {width}\ncontext = 32\ntie_weights = true\nactivation = \"gelu_new\"\n[training]\n\
             steps = 40\nbatch_size = 8\neval_interval = 20\neval_batches = 4\n\
             optimizer = {{ type = \"adam\", learning_rate = 0.003 }}\n"
        )
    };
    let good = s.write("tuned.toml", spec(48));
    let tuned = s.arg("tuned.safetensors");
    let run = s.arg("run");
    let out = s.kiln(&[
        "train",
        &good,
        "--init",
        &imported,
        "--run-dir",
        &run,
        "--out",
        &tuned,
    ]);
    assert_success(&out);
    let losses: Vec<f32> = out
        .1
        .lines()
        .filter(|l| l.starts_with("step "))
        .filter_map(|l| l.split("val loss ").nth(1)?.split(',').next()?.parse().ok())
        .collect();
    assert_eq!(losses.len(), 2, "{}", out.1);
    assert!(
        losses[1] < losses[0],
        "fine-tuning lowers the validation loss: {losses:?}"
    );
    // The tuned model reads text as the imported one does.
    let ids = |model: &str| {
        s.kiln(&["tokenize", model, "--text", "ROMEO: Romeo, wherefore?"])
            .1
    };
    assert_eq!(ids(&tuned), ids(&imported));
    let inspect = s.kiln(&["inspect", &tuned]).1;
    assert!(
        inspect.contains("context 32") && inspect.contains("byte_level_bpe"),
        "{inspect}"
    );
    // Resumed with more steps: the recorded init gives the tokenizer back.
    assert_success(&s.kiln(&["train", "--resume", &run, "--steps", "60"]));
    let wide = s.write("wide.toml", spec(64));
    let out = s.kiln(&["train", &wide, "--init", &imported, "--no-checkpoint"]);
    assert_one_line_error(&out, &["model.width", "48", "64"]);
    assert_eq!(out.0.code(), Some(65));
}
