//! Transparent gzip: data files may be stored raw or compressed under any name, so the
//! format is recognised by its magic bytes, never by the file name.

use std::io::Read;
use std::path::Path;

use flate2::read::MultiGzDecoder;

use crate::error::{Error, Result};

const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// gzip cannot expand data more than about 1032 times; a size field claiming more is
/// corrupt, and trusting it would allocate absurd amounts of memory.
const MAX_GZIP_RATIO: usize = 1032;

pub(crate) fn is_gzip(bytes: &[u8]) -> bool {
    bytes.starts_with(&GZIP_MAGIC)
}

/// The file's content, decompressed if it is gzip.
pub(crate) fn read_maybe_gzip(path: &Path) -> Result<Vec<u8>> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    gunzip_if_needed(bytes, path)
}

/// `bytes` decompressed if they start with the gzip magic, else unchanged.
pub(crate) fn gunzip_if_needed(bytes: Vec<u8>, path: &Path) -> Result<Vec<u8>> {
    if !is_gzip(&bytes) {
        return Ok(bytes);
    }
    let mut out = Vec::with_capacity(size_hint(&bytes));
    MultiGzDecoder::new(bytes.as_slice())
        .read_to_end(&mut out)
        .map_err(|e| Error::data(path, format!("corrupt gzip data: {e}")))?;
    Ok(out)
}

/// The uncompressed size from the gzip trailer (ISIZE, size mod 2^32), so the output is
/// allocated once instead of doubling through 47 MB of MNIST images.
fn size_hint(gz: &[u8]) -> usize {
    let Some(tail) = gz.len().checked_sub(4).map(|at| &gz[at..]) else {
        return 0;
    };
    let isize = u32::from_le_bytes([tail[0], tail[1], tail[2], tail[3]]) as usize;
    if isize <= gz.len().saturating_mul(MAX_GZIP_RATIO) {
        isize
    } else {
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::test_support::gzip;

    #[test]
    fn round_trips_and_passes_raw_bytes_through() {
        let raw: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
        let gz = gzip(&raw);
        assert!(is_gzip(&gz) && gz.len() < raw.len());
        assert_eq!(size_hint(&gz), raw.len());
        assert_eq!(gunzip_if_needed(gz, Path::new("x")).unwrap(), raw);
        assert_eq!(gunzip_if_needed(raw.clone(), Path::new("x")).unwrap(), raw);
    }

    #[test]
    fn corrupt_gzip_is_an_error_naming_the_file() {
        let mut gz = gzip(b"hello hello hello hello");
        let n = gz.len();
        gz.truncate(n - 6);
        let err = gunzip_if_needed(gz, Path::new("broken.gz")).unwrap_err();
        assert!(
            err.to_string().starts_with("broken.gz: corrupt gzip data"),
            "{err}"
        );
    }
}
