//! Helpers shared by the data tests: the shared test data folder, unique temporary
//! folders, and gzip compression.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use flate2::{write::GzEncoder, Compression};

/// `$KILN_DATA`, which the tests that need the shared data sets (marked `#[ignore]`, run
/// with `--include-ignored`) require.
pub(crate) fn shared_data() -> PathBuf {
    match std::env::var_os("KILN_DATA") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => panic!("set KILN_DATA to the shared data folder (../shared/data) to run this test"),
    }
}

pub(crate) fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = GzEncoder::new(Vec::new(), Compression::fast());
    enc.write_all(bytes).unwrap();
    enc.finish().unwrap()
}

/// A fresh folder under the system temp dir, removed when dropped. Unique per process and
/// per call, because tests run in parallel and several test binaries may run at once.
pub(crate) struct TempDir(PathBuf);

impl TempDir {
    pub(crate) fn new(label: &str) -> TempDir {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("kiln-test-{label}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    pub(crate) fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
