//! Text corpora for language models: reading a UTF-8 file (or the tiny-Shakespeare corpus,
//! found under `$KILN_DATA` or the cache, or downloaded and checked), splitting it by
//! position into training and validation parts, and drawing random windows as batches.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::data::sha256_hex;
use crate::error::{Error, Result};
use crate::rng::Rng;

/// Karpathy's "tiny Shakespeare" (char-rnn), 1,115,394 characters.
const SHAKESPEARE_SHA256: &str = "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed";
#[cfg_attr(not(feature = "download"), allow(dead_code))]
const SHAKESPEARE_URL: &str =
    "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare";

/// Built-in corpora a spec can name instead of a path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TextSource {
    TinyShakespeare,
    /// The UTF-8 file a spec's `path` names.
    Text,
}

/// A corpus read into memory, with where it came from and its checksum (kept in the model).
#[derive(Debug, Clone)]
pub struct Corpus {
    pub path: PathBuf,
    pub text: String,
    pub sha256: String,
}

/// Reads a text file, refusing one that is not UTF-8 with the byte offset and line of the
/// first bad byte.
pub fn read_text(path: &Path) -> Result<Corpus> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let sha256 = sha256_hex(&bytes);
    let text = String::from_utf8(bytes).map_err(|e| {
        let at = e.utf8_error().valid_up_to();
        let bytes = e.as_bytes();
        let line = 1 + bytes[..at].iter().filter(|&&b| b == b'\n').count();
        Error::data(
            path,
            format!(
                "is not UTF-8 text: byte 0x{:02X} at offset {at} (line {line}) does not start a valid character; \
                 convert the file to UTF-8 (e.g. iconv -t UTF-8)",
                bytes[at]
            ),
        )
    })?;
    if text.is_empty() {
        return Err(Error::data(
            path,
            "is empty: a language model needs text to learn from",
        ));
    }
    Ok(Corpus {
        path: path.to_path_buf(),
        text,
        sha256,
    })
}

/// Finds a built-in corpus: `$KILN_DATA/shakespeare/input.txt`, then
/// `~/.cache/kiln/shakespeare/input.txt`, then (feature `download`, unless `KILN_OFFLINE`)
/// a download into the cache. The content must match the pinned SHA-256.
pub fn load_source(source: TextSource) -> Result<Corpus> {
    if source == TextSource::Text {
        return Err(Error::setting(
            "data.source",
            "\"text\"",
            "`path = \"FILE\"` beside it",
        ));
    }
    let mut searched = Vec::new();
    let data = std::env::var_os("KILN_DATA")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from);
    let home = std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(PathBuf::from);
    let cache = home.map(|h| h.join(".cache/kiln/shakespeare"));
    for dir in data.iter().map(|d| d.join("shakespeare")).chain(cache.clone()) {
        let path = dir.join("input.txt");
        if path.is_file() {
            return checked(read_text(&path)?);
        }
        searched.push(path.display().to_string());
    }
    let why = download_shakespeare(cache.as_deref());
    match why {
        Ok(path) => checked(read_text(&path)?),
        Err(why) => Err(Error::DataUnavailable(format!(
            "tiny Shakespeare not found (looked for {}) and not downloaded: {why}. Put input.txt \
             (SHA-256 {SHAKESPEARE_SHA256}) in $KILN_DATA/shakespeare/, or give the spec a `path`.",
            if searched.is_empty() {
                "nowhere: neither $KILN_DATA nor $HOME is set".to_string()
            } else {
                searched.join(", ")
            }
        ))),
    }
}

fn checked(corpus: Corpus) -> Result<Corpus> {
    if corpus.sha256 != SHAKESPEARE_SHA256 {
        return Err(Error::data(
            &corpus.path,
            format!(
                "has SHA-256 {}, expected tiny Shakespeare's {SHAKESPEARE_SHA256}",
                corpus.sha256
            ),
        ));
    }
    Ok(corpus)
}

#[cfg(feature = "download")]
fn download_shakespeare(cache: Option<&Path>) -> std::result::Result<PathBuf, String> {
    if let Ok(v) = std::env::var("KILN_OFFLINE") {
        if !matches!(v.as_str(), "" | "0" | "false") {
            return Err(format!("downloading is disabled by KILN_OFFLINE={v}"));
        }
    }
    let dir = cache.ok_or("$HOME is not set, so there is no cache folder")?;
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let dest = dir.join("input.txt");
    crate::data::fetch::download_first(&[SHAKESPEARE_URL.to_string()], "input.txt", &dest, |p| {
        checked(read_text(p)?).map(|_| ())
    })?;
    Ok(dest)
}

#[cfg(not(feature = "download"))]
fn download_shakespeare(_cache: Option<&Path>) -> std::result::Result<PathBuf, String> {
    Err("this build of kiln cannot download (it was built without the `download` feature)".into())
}

/// The text split by position: the first `1 − validation_fraction` of its characters for
/// training, the rest for validation (nanoGPT's rule; no shuffling, so no window straddles
/// the two).
pub fn split_by_position(text: &str, validation_fraction: f32) -> (&str, &str) {
    let chars = text.chars().count();
    // The fraction as written (0.1, not the f32's 0.100000001), so the cut falls where
    // Python's int(0.9 * n) puts it.
    let fraction: f64 = validation_fraction
        .to_string()
        .parse()
        .unwrap_or(validation_fraction as f64);
    let train_chars = ((1.0 - fraction) * chars as f64) as usize;
    let cut = text
        .char_indices()
        .nth(train_chars)
        .map_or(text.len(), |(i, _)| i);
    text.split_at(cut)
}

/// `batch` windows of `seq + 1` tokens starting at uniformly drawn positions: inputs are
/// each window's first `seq` tokens, targets the `seq` that follow them.
pub fn random_windows(
    tokens: &[u32],
    batch: usize,
    seq: usize,
    rng: &mut Rng,
    inputs: &mut Vec<u32>,
    targets: &mut Vec<u32>,
) {
    assert!(tokens.len() > seq, "windows of {seq} need more than {seq} tokens");
    inputs.clear();
    targets.clear();
    for _ in 0..batch {
        let start = rng.below(tokens.len() - seq);
        inputs.extend_from_slice(&tokens[start..start + seq]);
        targets.extend_from_slice(&tokens[start + 1..start + seq + 1]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_by_character_position() {
        let (train, val) = split_by_position("0123456789", 0.1);
        assert_eq!((train, val), ("012345678", "9"));
        // Multi-byte characters are never cut.
        let (train, val) = split_by_position("ééééé", 0.4);
        assert_eq!((train, val), ("ééé", "éé"));
    }

    #[test]
    fn windows_are_shifted_by_one() {
        let tokens: Vec<u32> = (0..20).collect();
        let (mut x, mut y) = (Vec::new(), Vec::new());
        random_windows(&tokens, 3, 5, &mut Rng::new(1), &mut x, &mut y);
        assert_eq!(x.len(), 15);
        for (row_x, row_y) in x.chunks(5).zip(y.chunks(5)) {
            for (a, b) in row_x.iter().zip(row_y) {
                assert_eq!(a + 1, *b);
            }
            assert!(row_y[4] < 20);
        }
    }

    #[test]
    fn a_file_that_is_not_utf8_is_named_with_the_offset_and_line() {
        let dir = std::env::temp_dir().join(format!("kiln-text-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("latin1.txt");
        std::fs::write(&path, b"hello\ncaf\xE9\n").unwrap();
        let err = read_text(&path).unwrap_err().to_string();
        assert!(
            err.contains("latin1.txt")
                && err.contains("0xE9")
                && err.contains("offset 9")
                && err.contains("line 2"),
            "{err}"
        );
        std::fs::write(&path, b"").unwrap();
        assert!(read_text(&path).unwrap_err().to_string().contains("is empty"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
