//! End-to-end tests of `kiln serve` with a language model: OpenAI's completions (plain and
//! streamed) and KServe's generate extension equal `kiln generate` for the same seed, alone
//! and among concurrent streams; a client that disconnects frees its place; each bad
//! request gets its status and a message naming the parameter; the queue and the time to
//! the first token are bounded; a long stream is not cut by the request or idle timeouts.
//!
//! The official `openai` Python client's test needs `$KILN_PYTHON` with `openai` installed:
//! it is `#[ignore]`d, and `.ci/run` runs it.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

mod common;

use common::server::{call, Server};
use common::{assert_success, Sandbox};

/// Text with accents and emoji, so that byte-level BPE tokens split characters.
fn text() -> String {
    let lines = [
        "Café crème, s'il vous plaît! ☕\n",
        "Über den Wolken muß die Freiheit wohl grenzenlos sein. 🌥️\n",
        "Ñandú y pingüino comen piñones.\n",
    ];
    lines.iter().cycle().take(60).copied().collect()
}

const SPEC: &str = r#"
name = "tiny-bpe"
[data]
path = "text.txt"
tokenizer = { type = "bpe", vocab_size = 300 }
[model]
type = "gpt"
layers = 2
heads = 2
width = 32
context = 32
[training]
steps = 60
batch_size = 8
seed = 3
eval_interval = 60
eval_batches = 2
[training.optimizer]
type = "adamw"
learning_rate = 0.005
"#;

/// The folder of the trained model and its text (commands that read the text run there).
static TRAINED: OnceLock<(Sandbox, String)> = OnceLock::new();

/// A small byte-level BPE GPT, trained once per test binary.
fn model() -> &'static str {
    let (_, path) = TRAINED.get_or_init(|| {
        let s = Sandbox::new("serve-lm");
        s.write("text.txt", text());
        let spec = s.write("spec.toml", SPEC);
        let model = s.arg("lm.safetensors");
        assert_success(&s.kiln(&[
            "train",
            &spec,
            "--out",
            &model,
            "--quiet",
            "--run-dir",
            &s.arg("run"),
        ]));
        (s, model)
    });
    path
}

fn start(extra: &[&str]) -> Server {
    let model = format!("lm={}", model());
    let mut args = vec!["serve", model.as_str(), "--port", "0"];
    args.extend_from_slice(extra);
    Server::start_with(&args)
}

/// The model of `model()` compressed to int8 weights, once per test binary.
fn int8_model() -> &'static str {
    static MODEL: OnceLock<String> = OnceLock::new();
    MODEL.get_or_init(|| {
        let s = trained_folder();
        let out = s.arg("lm8.safetensors");
        let compressed = s.kiln(&["compress", model(), "--quantize", "int8", "--out", &out]);
        assert_success(&compressed);
        assert!(compressed.1.contains("validation loss"), "{}", compressed.1);
        out
    })
}

fn trained_folder() -> &'static Sandbox {
    model();
    &TRAINED.get().expect("trained above").0
}

/// What `kiln generate` continues `prompt` with (its output without the prompt and the
/// final newline).
fn generated(prompt: &str, tokens: usize, seed: u64, temperature: f32, top_k: Option<usize>) -> String {
    generated_by(model(), prompt, tokens, seed, temperature, top_k)
}

fn generated_by(
    path: &str,
    prompt: &str,
    tokens: usize,
    seed: u64,
    temperature: f32,
    top_k: Option<usize>,
) -> String {
    let (tokens, seed, temperature) = (tokens.to_string(), seed.to_string(), temperature.to_string());
    let mut args = vec![
        "generate",
        path,
        "--prompt",
        prompt,
        "--tokens",
        &tokens,
        "--seed",
        &seed,
        "--temperature",
        &temperature,
    ];
    let k = top_k.map(|k| k.to_string());
    if let Some(k) = &k {
        args.extend(["--top-k", k]);
    }
    let out = common::run(&args, &[]);
    assert_success(&out);
    let text = out
        .1
        .strip_prefix(prompt)
        .expect("generate prints the prompt first");
    text.strip_suffix('\n').expect("and a newline last").to_string()
}

/// Sends `body` to `path` and reads the answer's server-sent events: each `data:` payload.
fn events(addr: &str, path: &str, body: &Value) -> (u16, Vec<String>) {
    let request = ureq::post(&format!("http://{addr}{path}")).set("Content-Type", "application/json");
    let response = match request.send_string(&body.to_string()) {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => panic!("transport error: {e}"),
    };
    let status = response.status();
    if status == 200 {
        assert_eq!(response.header("content-type"), Some("text/event-stream"));
    }
    let mut data = Vec::new();
    for line in BufReader::new(response.into_reader()).lines() {
        let line = line.unwrap();
        if let Some(payload) = line.strip_prefix("data: ") {
            data.push(payload.to_string());
        } else {
            assert!(line.is_empty(), "not an event line: {line:?}");
        }
    }
    (status, data)
}

/// The text and finish reason of a streamed OpenAI completion; every chunk holds whole
/// characters (it is a JSON string), and the stream ends with `[DONE]`.
fn streamed_completion(addr: &str, body: &Value) -> (String, String) {
    let (status, data) = events(addr, "/v1/completions", body);
    assert_eq!(status, 200, "{data:?}");
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"));
    let chunks: Vec<Value> = data[..data.len() - 1]
        .iter()
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    let text: String = chunks
        .iter()
        .map(|c| c["choices"][0]["text"].as_str().unwrap())
        .collect();
    // Only the last chunk says why it ended; every other one carries text.
    let (last, rest) = chunks.split_last().unwrap();
    assert!(rest.iter().all(|c| c["choices"][0]["finish_reason"].is_null()
        && !c["choices"][0]["text"].as_str().unwrap().is_empty()));
    (
        text,
        last["choices"][0]["finish_reason"].as_str().unwrap().to_string(),
    )
}

fn metric(s: &Server, name: &str) -> f64 {
    s.text("/metrics")
        .lines()
        .find_map(|l| l.strip_prefix(name).and_then(|v| v.trim().parse().ok()))
        .unwrap_or_else(|| panic!("no metric {name}"))
}

#[test]
fn completions_equal_kiln_generate_plain_streamed_and_through_kserve() {
    let s = start(&[]);
    // 70 tokens through a context of 32: the window is cut and rebuilt on the way.
    let expected = generated("Café", 70, 11, 0.9, Some(20));
    let body = json!({"model": "lm", "prompt": "Café", "max_tokens": 70, "seed": 11,
                      "temperature": 0.9, "top_k": 20});
    let (status, answer) = s.post("/v1/completions", &body.to_string());
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["object"], "text_completion");
    assert_eq!(answer["model"], "lm");
    assert!(answer["id"].as_str().unwrap().starts_with("cmpl-"));
    assert_eq!(answer["choices"][0]["text"], expected.as_str());
    assert_eq!(answer["choices"][0]["finish_reason"], "length");
    let prompt_tokens = answer["usage"]["prompt_tokens"].as_u64().unwrap();
    assert!((1..=4).contains(&prompt_tokens), "{answer}");
    assert_eq!(answer["usage"]["completion_tokens"], 70);
    assert_eq!(
        answer["usage"]["total_tokens"].as_u64().unwrap(),
        prompt_tokens + 70
    );

    let mut streamed = body.clone();
    streamed["stream"] = json!(true);
    assert_eq!(
        streamed_completion(s.addr(), &streamed),
        (expected.clone(), "length".into())
    );

    let kserve = json!({"text_input": "Café", "parameters": {"max_tokens": 70, "seed": 11,
                        "temperature": 0.9, "top_k": 20}});
    let (status, answer) = s.post("/v2/models/lm/generate", &kserve.to_string());
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        (answer["text_output"].as_str().unwrap(), &answer["finish_reason"]),
        (expected.as_str(), &json!("length"))
    );
    let (status, data) = events(s.addr(), "/v2/models/lm/generate_stream", &kserve);
    assert_eq!(status, 200);
    let pieces: Vec<Value> = data.iter().map(|d| serde_json::from_str(d).unwrap()).collect();
    let text: String = pieces
        .iter()
        .map(|p| p["text_output"].as_str().unwrap())
        .collect();
    assert_eq!(text, expected);
    assert_eq!(pieces.last().unwrap()["finish_reason"], "length");

    // A stop string ends the text before it; greedy decoding is seed-independent.
    let greedy = generated("Ñandú", 40, 0, 0.0, None);
    let stop = greedy.chars().skip(5).take(3).collect::<String>();
    let cut = &greedy[..greedy.find(&stop).unwrap()];
    let body = json!({"model": "lm", "prompt": "Ñandú", "max_tokens": 40, "temperature": 0, "stop": [stop]});
    let (_, answer) = s.post("/v1/completions", &body.to_string());
    assert_eq!(
        (
            answer["choices"][0]["text"].as_str().unwrap(),
            &answer["choices"][0]["finish_reason"]
        ),
        (cut, &json!("stop"))
    );
    let mut streamed = body.clone();
    streamed["stream"] = json!(true);
    assert_eq!(
        streamed_completion(s.addr(), &streamed),
        (cut.to_string(), "stop".into())
    );

    let (_, models) = s.get("/v1/models");
    assert_eq!(models["data"][0]["id"], "lm");
    let (_, meta) = s.get("/v2/models/lm");
    assert_eq!(meta["parameters"]["kind"], "language_model");
    assert_eq!(meta["parameters"]["context"], 32);
    assert!(metric(&s, "kiln_generated_tokens_total") >= 4.0 * 70.0);
    assert!(metric(&s, "kiln_time_to_first_token_seconds_count") >= 6.0);
}

#[test]
fn sixteen_concurrent_streams_each_get_their_solo_answer() {
    let s = start(&[]);
    let prompts = ["Café", "Über", "Ñandú y", "s'il"];
    let requests: Vec<(String, u64, f32)> = (0..16)
        .map(|i| {
            (
                prompts[i % 4].to_string(),
                100 + i as u64,
                [0.0, 0.7, 1.0, 1.3][i / 4],
            )
        })
        .collect();
    let solo: Vec<String> = requests
        .iter()
        .map(|(prompt, seed, t)| generated(prompt, 48, *seed, *t, None))
        .collect();
    let addr = s.addr().to_string();
    let barrier = std::sync::Arc::new(std::sync::Barrier::new(16));
    let handles: Vec<_> = requests
        .into_iter()
        .map(|(prompt, seed, temperature)| {
            let (addr, barrier) = (addr.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                let body = json!({"model": "lm", "prompt": prompt, "max_tokens": 48, "seed": seed,
                                  "temperature": temperature, "stream": true});
                streamed_completion(&addr, &body).0
            })
        })
        .collect();
    let served: Vec<String> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    assert_eq!(served, solo);
}

#[test]
fn an_int8_model_is_smaller_scores_alike_and_serves_what_kiln_generate_gives() {
    let (float, int8) = (model(), int8_model());
    let size = |p: &str| std::fs::metadata(p).unwrap().len() as f64;
    // The tiny model's embeddings, head and merges are much of its file; only its block
    // kernels shrink (4x).
    assert!(
        size(float) / size(int8) > 1.5,
        "{} vs {}",
        size(float),
        size(int8)
    );
    let loss = |p: &str| {
        let out = trained_folder().kiln(&["eval", p, "--json"]);
        assert_success(&out);
        serde_json::from_str::<Value>(out.1.trim()).unwrap()["loss"]
            .as_f64()
            .unwrap()
    };
    let (float_loss, int8_loss) = (loss(float), loss(int8));
    assert!(
        (float_loss - int8_loss).abs() < 0.05,
        "{float_loss} vs {int8_loss}"
    );
    let inspect = common::run(&["inspect", int8], &[]);
    assert!(inspect.1.contains("block kernels in int8"), "{}", inspect.1);

    let model_arg = format!("lm={int8}");
    let s = Server::start_with(&["serve", &model_arg, "--port", "0"]);
    let addr = s.addr().to_string();
    let handles: Vec<_> = (0..4u64)
        .map(|i| {
            let addr = addr.clone();
            std::thread::spawn(move || {
                let body = json!({"model": "lm", "prompt": "Über", "max_tokens": 40, "seed": i,
                                  "temperature": 0.9, "stream": true});
                streamed_completion(&addr, &body).0
            })
        })
        .collect();
    let served: Vec<String> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    let solo: Vec<String> = (0..4)
        .map(|i| generated_by(int8, "Über", 40, i, 0.9, None))
        .collect();
    assert_eq!(served, solo);
}

#[test]
fn compressing_a_language_model_takes_int8_alone_and_once() {
    let s = Sandbox::new("compress-lm-errors");
    let out = s.arg("x.safetensors");
    for extra in [
        &["--quantize", "dynamic"][..],
        &["--quantize", "f16"],
        &["--prune", "0.5"],
        &[],
    ] {
        let mut args = vec!["compress", model(), "--out", &out];
        args.extend_from_slice(extra);
        let outcome = s.kiln(&args);
        assert_eq!(outcome.0.code(), Some(2), "{extra:?}: {}", outcome.2);
        assert!(
            outcome.2.contains("--quantize int8` alone"),
            "{extra:?}: {}",
            outcome.2
        );
    }
    let again = s.kiln(&["compress", int8_model(), "--quantize", "int8", "--out", &out]);
    assert_eq!(again.0.code(), Some(65), "{}", again.2);
    assert!(again.2.contains("already int8"), "{}", again.2);
    assert!(!s.path("x.safetensors").exists());
}

/// Reads from a raw connection until `needle` has arrived.
fn read_until(stream: &mut TcpStream, needle: &str) -> String {
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&seen).contains(needle) {
        let n = stream.read(&mut buf).expect("the stream goes on");
        assert!(
            n > 0,
            "closed before {needle:?}: {}",
            String::from_utf8_lossy(&seen)
        );
        seen.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&seen).into_owned()
}

fn raw_stream(addr: &str, body: &Value) -> TcpStream {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let body = body.to_string();
    write!(
        stream,
        "POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    stream
}

fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_client_that_disconnects_frees_its_sequence() {
    let s = start(&["--max-tokens", "1000000"]);
    let long = json!({"model": "lm", "prompt": "Café", "max_tokens": 1000000, "stream": true});
    let mut stream = raw_stream(s.addr(), &long);
    read_until(&mut stream, "data: {");
    let active = "kiln_active_sequences{model=\"lm\"}";
    assert_eq!(metric(&s, active), 1.0);
    drop(stream);
    wait_for("the sequence to leave", || metric(&s, active) == 0.0);
    // The loop still serves.
    let (status, _) = s.post(
        "/v1/completions",
        &json!({"model": "lm", "prompt": "Café", "max_tokens": 3}).to_string(),
    );
    assert_eq!(status, 200);
}

#[test]
fn a_full_queue_is_503_and_a_late_first_token_is_504() {
    // One sequence at a time, one more waiting; a long stream holds the loop.
    let s = start(&[
        "--max-sequences",
        "1",
        "--max-queue",
        "1",
        "--timeout-ms",
        "400",
        "--max-tokens",
        "1000000",
    ]);
    let long = json!({"model": "lm", "prompt": "Café", "max_tokens": 1000000, "stream": true});
    let mut holder = raw_stream(s.addr(), &long);
    read_until(&mut holder, "data: {");
    let addr = s.addr().to_string();
    let waiting = std::thread::spawn(move || {
        let body = json!({"model": "lm", "prompt": "Café", "max_tokens": 2});
        call(
            ureq::post(&format!("http://{addr}/v1/completions")),
            Some(&body.to_string()),
        )
    });
    wait_for("the second request to queue", || {
        metric(&s, "kiln_queued_sequences{model=\"lm\"}") == 1.0
    });
    let (status, answer) = s.post(
        "/v1/completions",
        &json!({"model": "lm", "prompt": "Café"}).to_string(),
    );
    assert_eq!(status, 503, "{answer}");
    assert!(answer["error"]["message"]
        .as_str()
        .unwrap()
        .contains("queue is full"));
    // The waiting request never got a first token within --timeout-ms.
    let (status, answer) = waiting.join().unwrap();
    assert_eq!(status, 504, "{answer}");
    assert!(
        answer["error"]["message"].as_str().unwrap().contains("400 ms"),
        "{answer}"
    );
    drop(holder);
}

/// A receive buffer of a few kilobytes, so that a client that stops reading soon stops
/// the server's writes.
fn shrink_receive_buffer(stream: &TcpStream) {
    use std::os::fd::AsRawFd;
    let size: libc::c_int = 4096;
    // SAFETY: a valid socket and a c_int option value of the size given.
    let rc = unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            (&size as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0, "setsockopt SO_RCVBUF");
}

#[test]
fn a_long_stream_outlives_the_request_and_idle_timeouts() {
    let s = start(&[
        "--timeout-ms",
        "200",
        "--idle-timeout-ms",
        "200",
        "--max-tokens",
        "100000",
    ]);
    let body = json!({"model": "lm", "prompt": "Café", "max_tokens": 3000, "seed": 1, "stream": true,
                      "stream_options": {"include_usage": true}});
    let mut stream = raw_stream(s.addr(), &body);
    shrink_receive_buffer(&stream);
    read_until(&mut stream, "data: {");
    // Stop reading for longer than both limits: the small receive buffer fills, and the
    // server's writes wait on this client with more to send.
    std::thread::sleep(Duration::from_millis(700));
    let rest = read_until(&mut stream, "data: [DONE]");
    assert!(
        rest.contains("\"completion_tokens\":3000"),
        "{}",
        &rest[rest.len().saturating_sub(400)..]
    );
}

#[test]
fn bad_requests_get_their_status_and_name_the_parameter() {
    let s = start(&["--max-tokens", "100"]);
    let ask = |body: Value| s.post("/v1/completions", &body.to_string());
    let base = json!({"model": "lm", "prompt": "Café"});
    let with = |key: &str, value: Value| {
        let mut b = base.clone();
        b[key] = value;
        b
    };
    let long_prompt = "Café crème ".repeat(20);
    for (body, status, param, says) in [
        (
            with("max_tokens", json!(101)),
            400,
            "max_tokens",
            "1 to 100 (--max-tokens)",
        ),
        (
            with("prompt", json!(long_prompt)),
            400,
            "prompt",
            "longer than the model's context of 32",
        ),
        (
            with("prompt", json!([5, 300])),
            400,
            "prompt",
            "token 300, outside the vocabulary of 300",
        ),
        (with("prompt", json!("")), 400, "prompt", "empty"),
        (
            with("prompt", json!(["a", "b"])),
            400,
            "prompt",
            "one prompt per request",
        ),
        (with("temperature", json!(-1)), 400, "temperature", "0 to 2"),
        (with("top_p", json!(1.5)), 400, "top_p", "(0, 1]"),
        (with("n", json!(2)), 400, "n", "not supported"),
        (with("logprobs", json!(2)), 400, "logprobs", "not supported"),
        (
            with("temprature", json!(1)),
            400,
            "temprature",
            "unknown parameter",
        ),
        (with("stream", json!("yes")), 400, "stream", "true or false"),
        (with("model", json!("gpt-4")), 404, "", "unknown model `gpt-4`"),
        (json!({"prompt": "x"}), 400, "model", "`model` must name"),
        (json!({"model": "lm"}), 400, "prompt", "`prompt` is missing"),
    ] {
        let (code, answer) = ask(body.clone());
        assert_eq!(code, status, "{body}: {answer}");
        let error = &answer["error"];
        assert!(
            error["message"].as_str().unwrap().contains(says),
            "{body}: {answer}"
        );
        if !param.is_empty() {
            assert_eq!(error["param"], param, "{body}");
        }
    }
    let (code, answer) = s.post("/v1/completions", "{not json");
    assert_eq!(code, 400, "{answer}");
    let (code, answer) = s.post(
        "/v2/models/lm/generate",
        &json!({"parameters": {"max_tokens": 2}}).to_string(),
    );
    assert_eq!(
        (code, answer["error"].as_str().unwrap()),
        (400, "`text_input` is missing")
    );
    let (code, answer) = s.post(
        "/v2/models/lm/generate",
        &json!({"text_input": "Café", "top_k": 0}).to_string(),
    );
    assert_eq!(code, 400, "{answer}");
    assert!(answer["error"].as_str().unwrap().contains("`top_k` is 0"));
    let (code, _) = s.post(
        "/v2/models/nope/generate_stream",
        &json!({"text_input": "x"}).to_string(),
    );
    assert_eq!(code, 404);
    // The classifier routes say what to use for a language model.
    let (code, answer) = s.post("/v2/models/lm/infer", "{}");
    assert_eq!(code, 400);
    assert!(
        answer["error"]
            .as_str()
            .unwrap()
            .contains("/v2/models/lm/generate"),
        "{answer}"
    );
}

#[test]
fn a_bearer_token_guards_generation_too() {
    let dir = std::env::temp_dir().join(format!("kiln-serve-lm-token-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let token = dir.join("token");
    std::fs::write(&token, "s3cret\n").unwrap();
    let s = start(&["--token-file", token.to_str().unwrap()]);
    let body = json!({"model": "lm", "prompt": "Café", "max_tokens": 2}).to_string();
    let (code, _) = s.post("/v1/completions", &body);
    assert_eq!(code, 401);
    let (code, answer) = call(
        ureq::post(&format!("{}/v1/completions", s.base)).set("Authorization", "Bearer s3cret"),
        Some(&body),
    );
    assert_eq!(code, 200, "{answer}");
    let _ = std::fs::remove_dir_all(dir);
}

/// `$KILN_PYTHON`, which must have the `openai` package.
fn python() -> PathBuf {
    PathBuf::from(std::env::var_os("KILN_PYTHON").expect("set KILN_PYTHON to a Python with `openai`"))
}

fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/python")
        .join(name)
}

#[test]
#[ignore = "needs $KILN_PYTHON with the openai package (.ci/run installs it)"]
fn the_official_openai_client_gets_kiln_generates_text() {
    let s = start(&[]);
    let prompts = ["Café", "Über", "Ñandú y", "s'il"];
    let requests: Vec<Value> = (0..16)
        .map(|i| {
            let temperature = [0.0, 0.8, 1.0, 1.2][i / 4];
            json!({"prompt": prompts[i % 4], "seed": 200 + i, "temperature": temperature, "max_tokens": 40})
        })
        .collect();
    let expected: Vec<String> = requests
        .iter()
        .map(|r| {
            generated(
                r["prompt"].as_str().unwrap(),
                40,
                r["seed"].as_u64().unwrap(),
                r["temperature"].as_f64().unwrap() as f32,
                None,
            )
        })
        .collect();
    let out = std::process::Command::new(python())
        .arg(script("openai_client.py"))
        .arg(&s.base)
        .arg("lm")
        .arg(json!(requests).to_string())
        .output()
        .expect("python runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let answers: Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    let texts = |key: &str| -> Vec<String> {
        answers[key]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t.as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(texts("plain"), expected[..1]);
    assert_eq!(texts("streamed"), expected[..1]);
    assert_eq!(texts("concurrent"), expected);
    assert_eq!(answers["errors"], json!({"max_tokens": 400, "model": 404}));
}
