//! A running `kiln serve` for the end-to-end tests, and JSON requests to it.

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};

use serde_json::Value;

/// A running `kiln serve`, killed when dropped.
pub struct Server {
    pub child: Child,
    pub base: String,
    /// Held open: closing it would make a later write to stdout kill the server (SIGPIPE).
    _stdout: BufReader<std::process::ChildStdout>,
}

impl Server {
    pub fn start_with(args: &[&str]) -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_kiln"))
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("kiln serve starts");
        let mut line = String::new();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        stdout.read_line(&mut line).unwrap();
        let Some(addr) = line
            .split("http://")
            .nth(1)
            .and_then(|s| s.split_whitespace().next())
        else {
            let mut err = String::new();
            child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
            panic!("kiln serve did not start: stdout {line:?}, stderr {err:?}");
        };
        assert!(
            addr.starts_with("127.0.0.1:"),
            "not on loopback by default: {line}"
        );
        Server {
            base: format!("http://{addr}"),
            child,
            _stdout: stdout,
        }
    }

    pub fn addr(&self) -> &str {
        self.base.trim_start_matches("http://")
    }

    pub fn get(&self, path: &str) -> (u16, Value) {
        call(ureq::get(&format!("{}{path}", self.base)), None)
    }

    pub fn post(&self, path: &str, body: &str) -> (u16, Value) {
        call(ureq::post(&format!("{}{path}", self.base)), Some(body))
    }

    pub fn text(&self, path: &str) -> String {
        ureq::get(&format!("{}{path}", self.base))
            .call()
            .unwrap()
            .into_string()
            .unwrap()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// (status, JSON body) of a request, whatever the status; every answer must be JSON.
pub fn call(req: ureq::Request, body: Option<&str>) -> (u16, Value) {
    let result = match body {
        Some(b) => req.set("Content-Type", "application/json").send_string(b),
        None => req.call(),
    };
    let response = match result {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => panic!("transport error: {e}"),
    };
    let status = response.status();
    let text = response.into_string().unwrap();
    let value =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("answer {status} is not JSON ({e}): {text}"));
    (status, value)
}
