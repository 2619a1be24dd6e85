//! Float weights stored in 16 bits (IEEE half precision or bfloat16): half the file, the
//! float inference path unchanged (weights widen back to f32 when loaded).

use half::{bf16, f16};
use safetensors::Dtype;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HalfFloat {
    /// IEEE 754 binary16: 11 bits of precision, range ±65504.
    F16,
    /// bfloat16: f32's range, 8 bits of precision.
    Bf16,
}

impl HalfFloat {
    /// The safetensors dtype name.
    pub fn dtype(self) -> &'static str {
        match self {
            HalfFloat::F16 => "F16",
            HalfFloat::Bf16 => "BF16",
        }
    }

    pub fn of(dtype: Dtype) -> Option<HalfFloat> {
        match dtype {
            Dtype::F16 => Some(HalfFloat::F16),
            Dtype::BF16 => Some(HalfFloat::Bf16),
            _ => None,
        }
    }

    /// Little-endian 16-bit values, each rounded to nearest (ties to even).
    pub fn encode(self, values: &[f32]) -> Vec<u8> {
        values
            .iter()
            .flat_map(|&v| match self {
                HalfFloat::F16 => f16::from_f32(v).to_le_bytes(),
                HalfFloat::Bf16 => bf16::from_f32(v).to_le_bytes(),
            })
            .collect()
    }

    /// The f32 values of [`HalfFloat::encode`]'s bytes (exact: every 16-bit value is an f32).
    pub fn decode(self, bytes: &[u8]) -> Vec<f32> {
        bytes
            .chunks_exact(2)
            .map(|b| match self {
                HalfFloat::F16 => f16::from_le_bytes([b[0], b[1]]).to_f32(),
                HalfFloat::Bf16 => bf16::from_le_bytes([b[0], b[1]]).to_f32(),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_within_half_a_unit_in_the_last_place() {
        let values = [0.0, 1.0, -2.5, 0.1, 2.71, 1e-3, 65504.0, 1e30];
        let f16s = HalfFloat::F16.decode(&HalfFloat::F16.encode(&values));
        assert_eq!(&f16s[..3], &[0.0, 1.0, -2.5]);
        assert!((f16s[3] - 0.1).abs() <= 0.1 * 2f32.powi(-11));
        assert_eq!(f16s[6], 65504.0);
        assert!(f16s[7].is_infinite(), "beyond f16's range");
        let bf16s = HalfFloat::Bf16.decode(&HalfFloat::Bf16.encode(&values));
        assert!((bf16s[4] - 2.71).abs() <= 2.71 * 2f32.powi(-8));
        assert!(
            (bf16s[7] - 1e30).abs() <= 1e30 * 2f32.powi(-8),
            "bf16 keeps f32's range"
        );
    }
}
