//! Helpers shared by the `kiln` binary's end-to-end tests: running it, checking that a
//! failure is one clear line, and a sandbox folder per test.
#![allow(dead_code)] // each test binary uses its own subset

pub mod server;

use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};

/// (exit status, stdout, stderr) of one run of the binary.
pub type Outcome = (ExitStatus, String, String);

/// Runs `kiln ARGS` with `envs` applied: `Some(v)` sets a variable, `None` removes it.
/// The working folder is the system temp folder, so a stray relative path never writes
/// into the source tree; tests pass absolute paths.
pub fn run(args: &[&str], envs: &[(&str, Option<&str>)]) -> Outcome {
    run_in(&std::env::temp_dir(), args, envs)
}

/// [`run`] in the working folder `cwd` (where default run folders, `runs/NAME`, go).
pub fn run_in(cwd: &Path, args: &[&str], envs: &[(&str, Option<&str>)]) -> Outcome {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_kiln"));
    cmd.args(args).current_dir(cwd);
    for (key, value) in envs {
        match value {
            Some(v) => cmd.env(key, v),
            None => cmd.env_remove(key),
        };
    }
    let out = cmd.output().expect("the kiln binary runs");
    (
        out.status,
        String::from_utf8(out.stdout).expect("stdout is UTF-8"),
        String::from_utf8(out.stderr).expect("stderr is UTF-8"),
    )
}

/// The exit statuses of a user's error (usage, bad data, missing input, cannot create, I/O);
/// 70 is kiln's own failure and 1 is not used.
pub const USER_ERROR_CODES: [i32; 5] = [2, 65, 66, 73, 74];

/// A failed run: a user-error exit code (see [`USER_ERROR_CODES`]), stderr exactly one
/// non-empty line `error: …` holding every one of `must_contain`, and no panic.
pub fn assert_one_line_error(outcome: &Outcome, must_contain: &[&str]) {
    let (status, stdout, stderr) = outcome;
    assert!(
        !status.success(),
        "expected a failure, got {status}\nstdout: {stdout}\nstderr: {stderr}"
    );
    assert!(
        status.code().is_some_and(|c| USER_ERROR_CODES.contains(&c)),
        "exit code {status}; stderr: {stderr}"
    );
    assert!(!stderr.contains("panicked"), "panic: {stderr}");
    let line = stderr
        .strip_suffix('\n')
        .unwrap_or_else(|| panic!("stderr does not end with a newline: {stderr:?}"));
    assert!(
        !line.contains('\n') && !line.contains('\r'),
        "stderr is not one line: {stderr:?}"
    );
    assert!(line.starts_with("error: "), "stderr: {stderr:?}");
    assert!(line.len() > "error: ".len(), "empty message: {stderr:?}");
    for part in must_contain {
        assert!(line.contains(part), "{part:?} not in: {line}");
    }
}

pub fn assert_success(outcome: &Outcome) {
    let (status, stdout, stderr) = outcome;
    assert!(
        status.success(),
        "expected success, got {status}\nstdout: {stdout}\nstderr: {stderr}"
    );
}

/// A fresh folder per test (temp dir + process id + test name), removed on drop; it has a
/// `home` subfolder to serve as an empty `$HOME`.
pub struct Sandbox {
    pub dir: PathBuf,
}

impl Sandbox {
    pub fn new(test: &str) -> Sandbox {
        let dir = std::env::temp_dir().join(format!("kiln-cli-{}-{test}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("home")).unwrap();
        Sandbox { dir }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// `path(name)` as a string, for command-line arguments.
    pub fn arg(&self, name: &str) -> String {
        path_str(&self.path(name))
    }

    pub fn home(&self) -> String {
        self.arg("home")
    }

    pub fn write(&self, name: &str, content: impl AsRef<[u8]>) -> String {
        let path = self.path(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).unwrap();
        }
        std::fs::write(&path, content).unwrap();
        path_str(&path)
    }

    /// Runs kiln offline, with this sandbox's empty `$HOME` and no `$KILN_DATA`, so no
    /// command can find (or fetch) MNIST from elsewhere.
    pub fn kiln(&self, args: &[&str]) -> Outcome {
        let home = self.home();
        run_in(
            &self.dir,
            args,
            &[
                ("KILN_OFFLINE", Some("1")),
                ("HOME", Some(&home)),
                ("KILN_DATA", None),
                ("KILN_MNIST_MIRROR", None),
            ],
        )
    }

    /// Trains the built-in digits model into `name`; returns its path.
    pub fn digits_model(&self, name: &str) -> String {
        let out = self.arg(name);
        assert_success(&self.kiln(&["train", "--quiet", "--out", &out]));
        out
    }

    /// The names in the sandbox folder (not `home`, nor `runs` where run folders go),
    /// sorted.
    pub fn entries(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(&self.dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n != "home" && n != "runs")
            .collect();
        names.sort();
        names
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

pub fn path_str(path: &Path) -> String {
    path.to_str().expect("temp paths are UTF-8").to_string()
}

/// The value after `key` (e.g. `test_accuracy: `) on the line that starts with `line_start`.
pub fn metric(stdout: &str, line_start: &str, key: &str) -> String {
    let line = stdout
        .lines()
        .find(|l| l.starts_with(line_start))
        .unwrap_or_else(|| panic!("no line starting with {line_start:?} in:\n{stdout}"));
    let at = line.find(key).unwrap_or_else(|| panic!("no {key:?} in {line:?}")) + key.len();
    line[at..].split_whitespace().next().expect("a value").to_string()
}

/// A model file's header as JSON, and its tensor bytes.
pub fn split_model(bytes: &[u8]) -> (serde_json::Value, Vec<u8>) {
    let len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    (
        serde_json::from_slice(&bytes[8..8 + len]).unwrap(),
        bytes[8 + len..].to_vec(),
    )
}

/// A safetensors file from a header and tensor bytes (the header padded to 8 bytes).
pub fn join_model(header: &serde_json::Value, data: &[u8]) -> Vec<u8> {
    let mut text = header.to_string().into_bytes();
    while !text.len().is_multiple_of(8) {
        text.push(b' ');
    }
    let mut out = (text.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(&text);
    out.extend_from_slice(data);
    out
}

/// Rewrites one metadata entry of a safetensors file (its header is JSON after an 8-byte
/// length), as someone tampering with a model file would.
pub fn tamper_metadata(path: &str, key: &str, change: impl Fn(&mut serde_json::Value)) {
    let (mut header, data) = split_model(&std::fs::read(path).unwrap());
    let entry = header["__metadata__"][key].as_str().unwrap().to_string();
    let mut value: serde_json::Value = serde_json::from_str(&entry).unwrap();
    change(&mut value);
    header["__metadata__"][key] = serde_json::Value::String(value.to_string());
    std::fs::write(path, join_model(&header, &data)).unwrap();
}
