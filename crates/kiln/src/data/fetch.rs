//! Downloading a data file (feature `download`): try each mirror in turn, write to a
//! temporary file, check it, and only then rename it into place, so that an interrupted or
//! bad download never leaves a file that a later run would trust.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::error::Result;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest wait for the next bytes of a response, so a stalled transfer fails instead of hanging.
const READ_TIMEOUT: Duration = Duration::from_secs(60);

/// Downloads `file` from the first mirror (a base URL) that serves it with content
/// `verify` accepts, to `dest`. On failure, says what went wrong with each mirror.
pub(crate) fn download_first(
    mirrors: &[String],
    file: &str,
    dest: &Path,
    verify: impl Fn(&Path) -> Result<()>,
) -> std::result::Result<(), String> {
    let agent = ureq::AgentBuilder::new()
        .timeout_connect(CONNECT_TIMEOUT)
        .timeout_read(READ_TIMEOUT)
        .build();
    let mut failures = Vec::new();
    for base in mirrors {
        let url = format!("{}/{file}", base.trim_end_matches('/'));
        match download_to(&agent, &url, dest, &verify) {
            Ok(()) => return Ok(()),
            Err(why) => failures.push(format!("{url}: {why}")),
        }
    }
    Err(failures.join("; "))
}

fn download_to(
    agent: &ureq::Agent,
    url: &str,
    dest: &Path,
    verify: &impl Fn(&Path) -> Result<()>,
) -> std::result::Result<(), String> {
    let part = part_path(dest);
    let result = fetch_into(agent, url, &part)
        .and_then(|()| verify(&part).map_err(|e| format!("{e} (the download was deleted)")))
        .and_then(|()| {
            std::fs::rename(&part, dest).map_err(|e| format!("cannot move it to {}: {e}", dest.display()))
        });
    if result.is_err() {
        let _ = std::fs::remove_file(&part);
    }
    result
}

/// A temporary name next to `dest` (same file system, so the rename is atomic), unique per
/// process so that two runs downloading at once do not write into the same file.
fn part_path(dest: &Path) -> PathBuf {
    let mut name = dest.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".part-{}", std::process::id()));
    dest.with_file_name(name)
}

/// Saves the response body. If a server sends the file with `Content-Encoding: gzip`, ureq
/// hands over the decompressed bytes; that is harmless, as readers detect gzip by content.
fn fetch_into(agent: &ureq::Agent, url: &str, part: &Path) -> std::result::Result<(), String> {
    let response = agent.get(url).call().map_err(|e| e.to_string())?;
    let mut file =
        std::fs::File::create(part).map_err(|e| format!("cannot create {}: {e}", part.display()))?;
    std::io::copy(&mut response.into_reader(), &mut file)
        .map_err(|e| format!("transfer interrupted: {e}"))?;
    file.sync_all()
        .map_err(|e| format!("cannot write {}: {e}", part.display()))
}
