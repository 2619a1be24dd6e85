//! Files: safetensors encoding and decoding of f32 (and f16/bf16) tensors, and writes
//! that are atomic (a temporary file, synced, renamed), so a crash never leaves half a file.
//! Shared by model artifacts, training checkpoints and language models.

mod csv_record;
pub mod half;
pub mod proto;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

use safetensors::tensor::{Dtype, SafeTensors};

use crate::error::{Error, Result};
use crate::tensor::Tensor;
pub use csv_record::csv_record;
pub use half::HalfFloat;

/// A tensor to store: name, dimensions, values.
pub type NamedTensor<'a> = (String, &'a [usize], &'a [f32]);

/// A tensor of bytes to store: name, dimensions, dtype ("I8", "U8", "F16", "BF16"), bytes.
pub type NamedBytes = (String, Vec<usize>, &'static str, Vec<u8>);

/// f32 tensors and string metadata in the safetensors layout, keys sorted, data 8-byte
/// aligned. Shared by model artifacts and training checkpoints.
pub fn encode_safetensors(
    metadata: &BTreeMap<String, String>,
    tensors: &[NamedTensor],
) -> std::result::Result<Vec<u8>, String> {
    encode_safetensors_with_int8(metadata, tensors, &[])
}

/// [`encode_safetensors`] with I8 tensors too (after the f32 ones in the data).
pub fn encode_safetensors_with_int8(
    metadata: &BTreeMap<String, String>,
    tensors: &[NamedTensor],
    int8: &[NamedBytes],
) -> std::result::Result<Vec<u8>, String> {
    // serde_json's map keeps keys sorted, so the header is deterministic.
    let mut header = serde_json::Map::new();
    header.insert(
        "__metadata__".into(),
        serde_json::to_value(metadata).map_err(|e| e.to_string())?,
    );
    let mut offset = 0usize;
    for (name, dims, data) in tensors {
        let end = offset + data.len() * 4;
        let entry = serde_json::json!({ "dtype": "F32", "shape": dims, "data_offsets": [offset, end] });
        if header.insert(name.clone(), entry).is_some() {
            return Err(format!("two tensors are named `{name}`"));
        }
        offset = end;
    }
    for (name, dims, dtype, data) in int8 {
        let end = offset + data.len();
        let entry = serde_json::json!({ "dtype": dtype, "shape": dims, "data_offsets": [offset, end] });
        if header.insert(name.clone(), entry).is_some() {
            return Err(format!("two tensors are named `{name}`"));
        }
        offset = end;
    }
    let mut header_bytes = serde_json::to_vec(&header).map_err(|e| e.to_string())?;
    // Pad with spaces so the tensor data starts 8-byte aligned, as the format recommends.
    while header_bytes.len() % 8 != 0 {
        header_bytes.push(b' ');
    }
    let mut bytes = Vec::with_capacity(8 + header_bytes.len() + offset);
    bytes.extend_from_slice(&(header_bytes.len() as u64).to_le_bytes());
    bytes.extend_from_slice(&header_bytes);
    for (_, _, data) in tensors {
        bytes.extend(data.iter().flat_map(|v| v.to_le_bytes()));
    }
    for (_, _, _, data) in int8 {
        bytes.extend_from_slice(data);
    }
    Ok(bytes)
}

/// An F32 tensor of `tensors` by name, checked against the expected dimensions; F16 and
/// BF16 tensors (a model saved with half storage) are widened to f32.
pub fn read_f32_tensor(
    tensors: &SafeTensors,
    name: &str,
    dims: &[usize],
) -> std::result::Result<Tensor, String> {
    let view = tensors
        .tensor(name)
        .map_err(|_| format!("tensor `{name}` is missing"))?;
    if view.shape() != dims {
        return Err(format!(
            "tensor `{name}` has shape {:?}, expected {dims:?}",
            view.shape()
        ));
    }
    let values = match (view.dtype(), HalfFloat::of(view.dtype())) {
        (Dtype::F32, _) => view
            .data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect(),
        (_, Some(h)) => h.decode(view.data()),
        (other, None) => {
            return Err(format!(
                "tensor `{name}` is {other:?}, expected F32 (or F16, BF16)"
            ))
        }
    };
    Tensor::new(dims, values).map_err(|e| e.to_string())
}

/// The tensors and string metadata of a safetensors file's bytes; `fail` words the error
/// (the caller's file name and kind of error).
pub fn read_safetensors<'a, E>(
    bytes: &'a [u8],
    fail: impl Fn(String) -> E,
) -> std::result::Result<(SafeTensors<'a>, std::collections::HashMap<String, String>), E> {
    let invalid = |e: safetensors::SafeTensorError| {
        fail(bad_tensor_layout(bytes).unwrap_or_else(|| format!("not a safetensors file ({e:?})")))
    };
    let (_, header) = SafeTensors::read_metadata(bytes).map_err(invalid)?;
    let tensors = SafeTensors::deserialize(bytes).map_err(invalid)?;
    Ok((tensors, header.metadata().clone().unwrap_or_default()))
}

/// Which tensor of a safetensors header does not fit its bytes, and how: its dtype and
/// shape need one byte count, its offsets span another, or they run past the data.
fn bad_tensor_layout(bytes: &[u8]) -> Option<String> {
    let len = usize::try_from(u64::from_le_bytes(bytes.get(..8)?.try_into().ok()?)).ok()?;
    let header: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(bytes.get(8..8usize.checked_add(len)?)?).ok()?;
    let data_len = bytes.len() - 8 - len;
    let mut entries: Vec<_> = header.iter().filter(|(k, _)| *k != "__metadata__").collect();
    entries.sort_by_key(|(k, _)| k.as_str());
    entries.into_iter().find_map(|(name, info)| {
        let dtype = info["dtype"].as_str().unwrap_or("?");
        let shape: Vec<u64> = info["shape"].as_array()?.iter().filter_map(|d| d.as_u64()).collect();
        let offsets: Vec<u64> = info["data_offsets"].as_array()?.iter().filter_map(|d| d.as_u64()).collect();
        let [start, end] = offsets[..] else {
            return Some(format!("tensor `{name}`: data_offsets {} is not [start, end]", info["data_offsets"]));
        };
        let width: u64 = match dtype {
            "F64" | "I64" | "U64" => 8,
            "F32" | "I32" | "U32" => 4,
            "F16" | "BF16" | "I16" | "U16" => 2,
            "I8" | "U8" | "BOOL" => 1,
            _ => return Some(format!("tensor `{name}`: dtype {dtype:?} is not one kiln reads")),
        };
        let needed = shape.iter().try_fold(width, |n, &d| n.checked_mul(d));
        if end < start || end as u128 > data_len as u128 {
            return Some(format!(
                "tensor `{name}`: data_offsets [{start}, {end}] run past the file's {data_len} bytes of tensor data"
            ));
        }
        (needed != Some(end - start)).then(|| {
            format!(
                "tensor `{name}`: dtype {dtype} and shape {shape:?} need {} bytes, but its data_offsets span {}",
                needed.map_or("more than 2^64".into(), |n| n.to_string()),
                end - start
            )
        })
    })
}

/// The bytes of the file at `path`, memory-mapped: a large model is read as its tensors
/// are used, not copied whole first.
pub fn map_file(path: &Path) -> Result<memmap2::Mmap> {
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    if file.metadata().is_ok_and(|m| m.is_dir()) {
        let folder = std::io::Error::new(std::io::ErrorKind::IsADirectory, "is a folder, not a file");
        return Err(Error::io(path, folder));
    }
    // SAFETY: the map is read-only and lives no longer than the load that reads it; as
    // with any reader, a file truncated by another process meanwhile is not supported
    // (safetensors and Hugging Face map model files the same way).
    unsafe { memmap2::Mmap::map(&file) }.map_err(|e| Error::io(path, e))
}

/// Writes to `path.tmp-PID`, syncs, then renames over `path`.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let file_name = path.file_name().ok_or_else(|| Error::Artifact {
        path: path.into(),
        message: "is not a file path".into(),
    })?;
    let mut tmp_name = file_name.to_os_string();
    tmp_name.push(format!(".tmp-{}", std::process::id()));
    let tmp = path.with_file_name(tmp_name);
    let pause = fault_injection_pause();
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        let (head, tail) = bytes.split_at(if pause.is_some() { bytes.len() / 2 } else { 0 });
        f.write_all(head)?;
        if let Some(pause) = pause {
            f.sync_all()?;
            std::thread::sleep(pause);
        }
        f.write_all(tail)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        sync_folder(path)
    };
    write().map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        Error::output(path, e)
    })?;
    remove_stale_temporaries(path);
    Ok(())
}

/// Deletes `path.tmp-PID` files beside `path` whose process no longer runs: the halves of
/// writes a killed process left behind. Best effort (a file that cannot be removed stays),
/// and only where running processes can be listed (/proc on Linux).
fn remove_stale_temporaries(path: &Path) {
    if !cfg!(target_os = "linux") {
        return;
    }
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return;
    };
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    let prefix = format!("{}.tmp-", name.to_string_lossy());
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let entry_name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = entry_name.strip_prefix(&prefix) else {
            continue;
        };
        let dead = pid
            .parse::<u32>()
            .is_ok_and(|pid| pid != std::process::id() && !Path::new("/proc").join(pid.to_string()).exists());
        if dead {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// Makes the rename itself durable: on Unix a new directory entry survives a power cut only
/// once the folder is synced. (Elsewhere folders cannot be opened for syncing; skip it.)
fn sync_folder(path: &Path) -> std::io::Result<()> {
    if cfg!(unix) {
        let dir = path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// `KILN_FAULT_PAUSE_MID_WRITE_MS`: a test hook that stops every atomic write halfway for
/// that long, so a test can kill the process mid-write and check nothing saved was lost.
fn fault_injection_pause() -> Option<std::time::Duration> {
    let ms: u64 = std::env::var("KILN_FAULT_PAUSE_MID_WRITE_MS")
        .ok()?
        .parse()
        .ok()?;
    Some(std::time::Duration::from_millis(ms))
}
