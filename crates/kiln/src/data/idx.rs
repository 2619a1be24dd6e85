//! The IDX format of MNIST: a big-endian header (two zero bytes, a type code, the number
//! of dimensions, then one u32 per dimension) followed by the values, row-major.

use std::path::Path;

use crate::error::{Error, Result};

use super::gzip::read_maybe_gzip;

/// The one element type kiln reads: unsigned bytes (MNIST images and labels).
const TYPE_U8: u8 = 0x08;
const MAX_DIMS: usize = 4;

/// An IDX file of unsigned bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdxArray {
    pub dims: Vec<usize>,
    pub data: Vec<u8>,
}

/// Reads an IDX file, raw or gzip-compressed (recognised by content, not by name).
pub fn read_idx(path: &Path) -> Result<IdxArray> {
    let bytes = read_maybe_gzip(path)?;
    parse_idx(&bytes, path)
}

/// Parses the uncompressed bytes of an IDX file; `path` only names the file in errors.
pub fn parse_idx(bytes: &[u8], path: &Path) -> Result<IdxArray> {
    let (dims, offset) = parse_header(bytes, path)?;
    Ok(IdxArray {
        dims,
        data: bytes[offset..].to_vec(),
    })
}

/// Validates the header and that exactly the promised number of values follows it.
/// Returns the dimensions and where the data starts, so a caller can read the values in
/// place instead of copying them.
pub(crate) fn parse_header(bytes: &[u8], path: &Path) -> Result<(Vec<usize>, usize)> {
    if bytes.len() < 4 {
        return Err(Error::data(
            path,
            format!("too short for an IDX file: {} bytes", bytes.len()),
        ));
    }
    check_magic(bytes, path)?;
    let ndim = bytes[3] as usize;
    let offset = 4 + 4 * ndim;
    if bytes.len() < offset {
        return Err(Error::data(
            path,
            format!(
                "truncated IDX header: {ndim} dimensions need {offset} bytes, file has {}",
                bytes.len()
            ),
        ));
    }
    let dims: Vec<usize> = bytes[4..offset]
        .chunks_exact(4)
        .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize)
        .collect();
    check_data_length(&dims, bytes.len() - offset, path)?;
    Ok((dims, offset))
}

fn check_magic(bytes: &[u8], path: &Path) -> Result<()> {
    if bytes[0] != 0 || bytes[1] != 0 {
        return Err(Error::data(
            path,
            format!(
                "not an IDX file: magic number starts with {:#04x} {:#04x}, expected 0x00 0x00",
                bytes[0], bytes[1]
            ),
        ));
    }
    let code = bytes[2];
    if code != TYPE_U8 {
        return Err(Error::data(
            path,
            format!(
                "IDX type code {code:#04x} ({}) is not supported; only 0x08 (unsigned byte) is",
                type_name(code)
            ),
        ));
    }
    let ndim = bytes[3] as usize;
    if !(1..=MAX_DIMS).contains(&ndim) {
        return Err(Error::data(
            path,
            format!("IDX header declares {ndim} dimensions; expected 1 to {MAX_DIMS}"),
        ));
    }
    Ok(())
}

fn check_data_length(dims: &[usize], found: usize, path: &Path) -> Result<()> {
    let expected = dims
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| Error::data(path, format!("IDX dimensions {dims:?} are too large")))?;
    if found < expected {
        return Err(Error::data(
            path,
            format!("truncated: expected {expected} bytes of data after the header, found {found}"),
        ));
    }
    if found > expected {
        return Err(Error::data(
            path,
            format!(
                "{} unexpected bytes after the data: dimensions {dims:?} make {expected} bytes, found {found}",
                found - expected
            ),
        ));
    }
    Ok(())
}

fn type_name(code: u8) -> &'static str {
    match code {
        0x08 => "unsigned byte",
        0x09 => "signed byte",
        0x0B => "i16",
        0x0C => "i32",
        0x0D => "f32",
        0x0E => "f64",
        _ => "unknown type",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::test_support::{gzip, TempDir};

    fn idx_bytes(type_code: u8, dims: &[u32], data: &[u8]) -> Vec<u8> {
        let mut bytes = vec![0, 0, type_code, dims.len() as u8];
        for d in dims {
            bytes.extend_from_slice(&d.to_be_bytes());
        }
        bytes.extend_from_slice(data);
        bytes
    }

    fn err_text(bytes: &[u8]) -> String {
        parse_idx(bytes, Path::new("t.idx")).unwrap_err().to_string()
    }

    #[test]
    fn parses_a_three_dimensional_array() {
        let data: Vec<u8> = (0..24).collect();
        // dims 2 x 3 x 4; 0x0300 would reveal a little-endian misread.
        let bytes = idx_bytes(0x08, &[2, 3, 4], &data);
        let arr = parse_idx(&bytes, Path::new("t.idx")).unwrap();
        assert_eq!(arr.dims, vec![2, 3, 4]);
        assert_eq!(arr.data, data);
    }

    #[test]
    fn parses_a_one_dimensional_array_with_a_large_dimension() {
        let data = vec![7u8; 300];
        let arr = parse_idx(&idx_bytes(0x08, &[300], &data), Path::new("l")).unwrap();
        assert_eq!(arr.dims, vec![300]);
        assert_eq!(arr.data.len(), 300);
    }

    #[test]
    fn rejects_truncated_data_naming_the_file_and_sizes() {
        let bytes = idx_bytes(0x08, &[2, 3], &[1, 2, 3, 4]);
        assert_eq!(
            err_text(&bytes),
            "t.idx: truncated: expected 6 bytes of data after the header, found 4"
        );
        assert!(err_text(&bytes[..6]).contains("truncated IDX header"));
        assert!(err_text(&[0, 0]).contains("too short"));
    }

    #[test]
    fn rejects_trailing_bytes() {
        let text = err_text(&idx_bytes(0x08, &[2], &[1, 2, 3]));
        assert!(
            text.starts_with("t.idx: 1 unexpected bytes after the data"),
            "{text}"
        );
    }

    #[test]
    fn rejects_a_wrong_magic_and_bad_dimension_counts() {
        let mut bytes = idx_bytes(0x08, &[1], &[0]);
        bytes[0] = 0x1f;
        assert!(err_text(&bytes).contains("not an IDX file"));
        assert!(err_text(&idx_bytes(0x08, &[], &[])).contains("0 dimensions"));
        assert!(err_text(&idx_bytes(0x08, &[1, 1, 1, 1, 1], &[0])).contains("5 dimensions"));
    }

    #[test]
    fn rejects_a_type_code_other_than_unsigned_byte() {
        let text = err_text(&idx_bytes(0x0D, &[1], &[0, 0, 0, 0]));
        assert!(text.starts_with("t.idx: IDX type code 0x0d (f32)"), "{text}");
    }

    #[test]
    fn reads_raw_and_gzip_files_whatever_their_name() {
        let dir = TempDir::new("idx");
        let bytes = idx_bytes(0x08, &[2, 2], &[9, 8, 7, 6]);
        let raw = dir.path().join("a.gz"); // misleading name: content decides
        let gz = dir.path().join("b");
        std::fs::write(&raw, &bytes).unwrap();
        std::fs::write(&gz, gzip(&bytes)).unwrap();
        assert_eq!(read_idx(&raw).unwrap(), read_idx(&gz).unwrap());
        assert_eq!(read_idx(&gz).unwrap().data, vec![9, 8, 7, 6]);
        let missing = read_idx(&dir.path().join("none")).unwrap_err().to_string();
        assert!(missing.contains("none"), "{missing}");
    }
}
