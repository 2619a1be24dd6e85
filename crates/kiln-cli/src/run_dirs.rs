//! Where a run's files go: fresh run folders that never overwrite an earlier run, and
//! output paths checked before minutes of training.

use std::path::{Path, PathBuf};

use anyhow::Result;

use crate::exit_code::{cannot_create, output};

/// `runs/NAME`, or `runs/NAME-2`, `-3`… if taken, created here so that two runs started
/// together never share a folder.
pub(crate) fn fresh_run_dir(name: &str) -> Result<PathBuf> {
    let safe: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let base = Path::new("runs");
    std::fs::create_dir_all(base).map_err(|e| output(base, e))?;
    for n in 1.. {
        let dir = match n {
            1 => base.join(&safe),
            n => base.join(format!("{safe}-{n}")),
        };
        match std::fs::create_dir(&dir) {
            Ok(()) => return Ok(dir),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(output(&dir, e)),
        }
    }
    unreachable!("some suffix is free")
}

/// A run folder named with --run-dir for a fresh run: created if missing, refused if it
/// holds an earlier run's checkpoint or model, so no result is ever overwritten. A folder
/// with files but neither (a run killed before its first checkpoint) is reused, saying so.
pub(crate) fn claim_run_dir(dir: &Path) -> Result<PathBuf> {
    match std::fs::read_dir(dir) {
        Ok(mut entries) => {
            if entries.next().is_none() {
                return Ok(dir.to_path_buf());
            }
            let results = [kiln::pipeline::CHECKPOINT_FILE, "model.safetensors"];
            if results.iter().any(|f| dir.join(f).exists()) {
                return Err(cannot_create(format!(
                    "--run-dir {}: already holds an earlier run's results; choose another folder \
                     (or `--resume {}` to continue it)",
                    dir.display(),
                    dir.display()
                )));
            }
            eprintln!(
                "note: --run-dir {} holds files but no checkpoint or model (a run that ended before its first checkpoint); starting afresh in it",
                dir.display()
            );
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(dir).map_err(|e| output(dir, e))?
        }
        Err(e) => return Err(output(dir, e).context("--run-dir")),
    }
    Ok(dir.to_path_buf())
}

/// Threads kiln computes with (RAYON_NUM_THREADS, or one per core).
pub(crate) fn rayon_threads() -> usize {
    std::env::var("RAYON_NUM_THREADS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&n| n > 0)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

/// Errors early if `path`'s folder does not exist or `path` names a folder; `flag` is the
/// option that named it (`--out`, `--report`), so the message blames the right one.
pub fn check_writable(flag: &str, path: &Path) -> Result<()> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    if !dir.is_dir() {
        return Err(cannot_create(format!(
            "{flag} {}: folder {} does not exist",
            path.display(),
            dir.display()
        )));
    }
    if path.is_dir() {
        return Err(cannot_create(format!(
            "{flag} {}: is a folder, expected a file name",
            path.display()
        )));
    }
    Ok(())
}
