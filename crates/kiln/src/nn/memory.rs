//! Memory checks before allocating: a layer or a sample too large for the machine is an
//! error naming it and the sizes, not an allocation failure that aborts the process (and
//! leaves a run folder half made).

use crate::error::{Error, Result};

/// The largest sample a model takes, in values: 2^28 f32 values is 1 GiB per sample, far
/// beyond any image or table; a larger input shape is a mistake or a crafted file.
pub const MAX_SAMPLE_VALUES: usize = 1 << 28;

/// Copies of each parameter that training keeps: the values, their gradients and up to
/// two optimizer moments (Adam's).
pub const TRAINING_COPIES: u64 = 4;

/// Bytes this process can still take: `MemAvailable` of /proc/meminfo, or (where that
/// cannot be read) no limit, leaving the allocator to say.
pub fn available_bytes() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|text| {
            let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
            let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
            kib.checked_mul(1024)
        })
        .unwrap_or(u64::MAX)
}

/// Values in a tensor of `dims`, or None when the count overflows.
pub fn count(dims: &[usize]) -> Option<usize> {
    dims.iter().try_fold(1usize, |n, &d| n.checked_mul(d))
}

/// Checks that a parameter named `name` shaped `dims`, kept `TRAINING_COPIES` times over
/// (by training; once for inference) fits beside `so_far` bytes already taken.
pub(crate) fn check_parameter(name: &str, dims: &[usize], so_far: u64) -> Result<()> {
    let values = count(dims).map_or(u64::MAX, |n| n as u64);
    let needed = values.saturating_mul(4 * TRAINING_COPIES).saturating_add(so_far);
    let available = available_bytes();
    if needed > available {
        return Err(Error::TooLarge {
            what: format!(
                "parameter {name} {dims:?} ({values} values; with its gradient and optimizer state, and the parameters before it)"
            ),
            needed,
            available,
        });
    }
    Ok(())
}

/// Checks that training `model` on batches of `batch_size` fits in memory: every layer's
/// outputs and their gradients at that batch size, plus the parameters with their
/// gradients and optimizer state. The error names the batch size and the sizes.
pub fn check_training_memory(model: &super::Sequential, batch_size: usize) -> Result<()> {
    let per_sample: u64 = std::iter::once(model.input_shape())
        .chain(model.layer_output_shapes().iter().copied())
        .map(|s| s.numel() as u64)
        .sum();
    let activations = per_sample.saturating_mul(batch_size as u64).saturating_mul(4 * 2);
    let parameters = (model.params.count() as u64).saturating_mul(4 * TRAINING_COPIES);
    let needed = activations.saturating_add(parameters);
    let available = available_bytes();
    if needed > available {
        return Err(Error::TooLarge {
            what: format!(
                "training at batch_size = {batch_size} ({} of layer outputs and their gradients, {} of parameters with gradients and optimizer state)",
                crate::error::human_bytes(activations),
                crate::error::human_bytes(parameters)
            ),
            needed,
            available,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_parameter_larger_than_the_machine_is_an_error_naming_it() {
        let err = check_parameter("layers.1.kernel", &[784, 1_000_000_000], 0).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("layers.1.kernel [784, 1000000000]"), "{text}");
        assert!(text.contains("needs") && text.contains("available"), "{text}");
        assert!(check_parameter("layers.1.kernel", &[784, 512], 0).is_ok());
        assert!(
            check_parameter("x", &[usize::MAX, 2], 0).is_err(),
            "an overflowing count"
        );
    }
}
