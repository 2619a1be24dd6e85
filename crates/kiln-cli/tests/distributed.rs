//! `mpirun -np 2 kiln train SPEC --distributed` end to end, on Open MPI: two ranks reach
//! the weights of one process on the same global batch, also over the TCP transport (the
//! path between machines, not shared memory); a rank killed mid-training ends the job
//! quickly with a message naming it, leaves its last checkpoint intact, and the run resumes
//! from it with the same or another number of ranks.
//!
//! Built only with `--features distributed`; needs `mpirun` (Debian: openmpi-bin), which
//! `.ci/run` installs.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use kiln::nn::Model;
use kiln::tensor::Tensor;

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("kiln-mpi-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The offline digits MLP without dropout (no random masks), 3 epochs of 41 steps.
fn write_spec(dir: &Path) -> PathBuf {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../kiln/src/spec/default_spec.toml"
    ))
    .unwrap()
    .replace("epochs = 30", "epochs = 3")
    .replace("rate = 0.1", "rate = 0.0");
    let path = dir.join("digits.toml");
    std::fs::write(&path, format!("name = \"digits\"\n{text}")).unwrap();
    path
}

fn kiln(args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_kiln"));
    cmd.args(args);
    cmd
}

/// `mpirun -np RANKS [MCA…] kiln ARGS --distributed`, one thread per rank.
fn mpirun(ranks: usize, mca: &[&str], args: &[&str]) -> Command {
    let mut cmd = Command::new("mpirun");
    cmd.args(["-np", &ranks.to_string(), "--oversubscribe"])
        .args(mca)
        .arg(env!("CARGO_BIN_EXE_kiln"))
        .args(args)
        .arg("--distributed")
        // CI runs as root, which Open MPI refuses unless told.
        .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
        .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
        .env("RAYON_NUM_THREADS", "1");
    cmd
}

fn output(mut cmd: Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot start {cmd:?} ({e}); install Open MPI (openmpi-bin)"));
    out
}

fn succeed(cmd: Command) -> String {
    let out = output(cmd);
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(
        out.status.success(),
        "{}\nstdout: {stdout}\nstderr: {stderr}",
        out.status
    );
    stdout.into_owned()
}

fn weights(path: &Path) -> Vec<Tensor> {
    kiln::artifact::load(path).unwrap().model.float().weights()
}

fn max_difference(a: &[Tensor], b: &[Tensor]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .flat_map(|(a, b)| a.data().iter().zip(b.data()).map(|(x, y)| (x - y).abs()))
        .fold(0.0, f32::max)
}

/// One process, then two ranks with the given MCA options: same weights to summation order.
fn assert_two_ranks_match_one_process(name: &str, mca: &[&str]) {
    let dir = temp_dir(name);
    let spec = write_spec(&dir);
    let spec = spec.to_str().unwrap();
    let single = dir.join("single.safetensors");
    let pair = dir.join("pair.safetensors");
    let run = |d: &str| dir.join(d).to_string_lossy().into_owned();
    succeed(kiln(&[
        "train",
        spec,
        "--quiet",
        "--run-dir",
        &run("r1"),
        "--out",
        single.to_str().unwrap(),
    ]));
    let stdout = succeed(mpirun(
        2,
        mca,
        &[
            "train",
            spec,
            "--run-dir",
            &run("r2"),
            "--out",
            pair.to_str().unwrap(),
        ],
    ));
    assert!(stdout.contains("distributed: 2 ranks"), "{stdout}");
    assert!(
        stdout.contains("2 ranks,") && stdout.contains("in all-reduce"),
        "{stdout}"
    );
    assert_eq!(
        stdout.matches("Epoch 1/3").count(),
        1,
        "only rank 0 prints: {stdout}"
    );
    // 123 Adam steps; the ranks' shares are summed in another order than one process sums
    // the whole batch, which moves the weights by a few roundings.
    let difference = max_difference(&weights(&pair), &weights(&single));
    assert!(difference < 1e-4, "weights differ by up to {difference}");
    let history = std::fs::read_to_string(dir.join("r2/history.json")).unwrap();
    assert!(history.contains("communication_seconds"), "{history}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn two_ranks_reach_the_weights_of_one_process_on_the_same_global_batch() {
    assert_two_ranks_match_one_process("equivalence", &[]);
}

#[test]
fn two_ranks_over_the_tcp_transport_match_one_process() {
    // ob1 with only the TCP and self transports: no shared memory between the ranks, so
    // the bytes go through the network stack (loopback here) as between machines.
    assert_two_ranks_match_one_process(
        "tcp",
        &[
            "--mca",
            "pml",
            "ob1",
            "--mca",
            "btl",
            "tcp,self",
            "--mca",
            "btl_tcp_if_include",
            "lo",
        ],
    );
}

#[test]
fn a_killed_rank_ends_the_job_naming_it_and_the_run_resumes_from_its_checkpoint() {
    let dir = temp_dir("fault");
    let spec = write_spec(&dir);
    let spec = spec.to_str().unwrap();
    let run_dir = dir.join("run");
    let run = run_dir.to_str().unwrap();

    // Rank 1 dies (SIGKILL) at step 20 of epoch 2, after epoch 1's checkpoint was written.
    let mut cmd = mpirun(2, &[], &["train", spec, "--run-dir", run]);
    cmd.env("KILN_FAULT_KILL", "1:2:20");
    let start = Instant::now();
    let out = output(cmd);
    let elapsed = start.elapsed();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "the job must fail: {stderr}");
    assert!(
        elapsed < Duration::from_secs(60),
        "the surviving rank took {elapsed:?} to end"
    );
    assert!(
        stderr.contains("rank 1"),
        "the message names the lost rank: {stderr}"
    );
    assert!(
        stderr.contains(&format!("--resume {run} --distributed")),
        "rank 0 says how to resume: {stderr}"
    );
    let checkpoint = kiln::train::Checkpoint::load(&run_dir.join("checkpoint.safetensors")).unwrap();
    assert_eq!(checkpoint.progress.epochs_done, 1);
    let saved = std::fs::read(run_dir.join("checkpoint.safetensors")).unwrap();

    // Resume it with another number of ranks (one copy), and with the same (the other).
    let single_dir = dir.join("run-single");
    std::fs::create_dir_all(&single_dir).unwrap();
    for f in ["checkpoint.safetensors", "history.json", "history.csv"] {
        std::fs::copy(run_dir.join(f), single_dir.join(f)).unwrap();
    }
    let stdout = succeed(kiln(&["train", "--resume", single_dir.to_str().unwrap()]));
    assert!(stdout.contains("resuming after epoch 1"), "{stdout}");
    let stdout = succeed(mpirun(2, &[], &["train", "--resume", run]));
    assert!(
        stdout.contains("resuming after epoch 1") && stdout.contains("Epoch 3/3"),
        "{stdout}"
    );
    let pair = weights(&run_dir.join("model.safetensors"));
    let single = weights(&single_dir.join("model.safetensors"));
    assert!(max_difference(&pair, &single) < 1e-4);
    assert_ne!(
        std::fs::read(run_dir.join("checkpoint.safetensors")).unwrap(),
        saved
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn an_error_on_one_rank_ends_every_rank_with_its_message() {
    let dir = temp_dir("error");
    let out = output(mpirun(2, &[], &["train", "/nonexistent/spec.toml"]));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(66), "a missing input: {stderr}");
    assert!(stderr.contains("/nonexistent/spec.toml"), "{stderr}");
    assert!(
        stderr.contains("rank 0 of 2") || stderr.contains("rank 1 of 2"),
        "{stderr}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// A tiny character-level GPT spec (no dropout) on a repeating text in `dir`.
fn write_gpt_spec(dir: &Path) -> PathBuf {
    let text =
        "First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak.\n\n".repeat(30);
    std::fs::write(dir.join("play.txt"), text).unwrap();
    let spec = r#"
name = "tiny-gpt"
[data]
path = "play.txt"
[model]
type = "gpt"
layers = 1
heads = 2
width = 32
context = 16
[training]
steps = 48
batch_size = 8
seed = 3
eval_interval = 16
eval_batches = 4
gradient_clipping = { global_clipnorm = 1.0 }
optimizer = { type = "adamw", learning_rate = 0.005 }
"#;
    let path = dir.join("gpt.toml");
    std::fs::write(&path, spec).unwrap();
    path
}

fn gpt_weights(path: &Path) -> Vec<Tensor> {
    kiln::artifact::load_language_model(path).unwrap().gpt.weights()
}

#[test]
fn two_ranks_train_a_language_model_to_the_weights_of_one_process() {
    let dir = temp_dir("gpt");
    let spec = write_gpt_spec(&dir);
    let spec = spec.to_str().unwrap();
    let (single, pair) = (dir.join("single.safetensors"), dir.join("pair.safetensors"));
    let run = |d: &str| dir.join(d).to_string_lossy().into_owned();
    succeed(kiln(&[
        "train",
        spec,
        "--quiet",
        "--run-dir",
        &run("r1"),
        "--out",
        single.to_str().unwrap(),
    ]));
    let stdout = succeed(mpirun(
        2,
        &[],
        &[
            "train",
            spec,
            "--run-dir",
            &run("r2"),
            "--out",
            pair.to_str().unwrap(),
        ],
    ));
    assert!(
        stdout.contains("distributed: 2 ranks") && stdout.contains("2 ranks,"),
        "{stdout}"
    );
    assert_eq!(
        stdout.matches("step     16/48").count(),
        1,
        "only rank 0 prints: {stdout}"
    );
    // 48 AdamW steps; each rank's half of the windows is summed in another order.
    let difference = max_difference(&gpt_weights(&pair), &gpt_weights(&single));
    assert!(difference < 1e-4, "weights differ by up to {difference}");
    let _ = std::fs::remove_dir_all(&dir);
}
