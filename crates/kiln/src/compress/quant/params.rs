//! Quantization parameters: how a tensor's real values map to 8-bit integers, and the
//! record a compressed model carries of how it was made.

use serde::{Deserialize, Serialize};

/// Real value = scale · (q − zero_point), q in 0..=255 (per-tensor affine, for activations).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct AffineU8 {
    pub scale: f32,
    pub zero_point: u8,
}

impl AffineU8 {
    /// The mapping that covers [min, max] widened to include 0 (so that 0 — padding, a
    /// ReLU's floor — is exact), as TensorFlow Lite chooses it.
    pub fn covering(min: f32, max: f32) -> AffineU8 {
        let (low, high) = (min.min(0.0), max.max(0.0));
        if high <= low || !low.is_finite() || !high.is_finite() {
            return AffineU8 {
                scale: 1.0,
                zero_point: 0,
            };
        }
        let scale = (high - low) / 255.0;
        let zero_point = (-low / scale).round().clamp(0.0, 255.0) as u8;
        AffineU8 { scale, zero_point }
    }

    /// The nearest code for `value` (saturating; halves round up).
    #[inline]
    pub fn quantize(&self, value: f32) -> u8 {
        // `as u8` saturates (below 0 → 0, above 255 → 255, NaN → 0) and truncates, so
        // adding ½ first rounds: no call into libm's roundf, and the loop vectorizes.
        (value / self.scale + self.zero_point as f32 + 0.5) as u8
    }

    pub fn dequantize(&self, q: u8) -> f32 {
        self.scale * (q as f32 - self.zero_point as f32)
    }
}

/// Symmetric per-column int8 of a (k, n) row-major kernel: (codes, one scale per column).
pub fn quantize_columns(w: &[f32], k: usize, n: usize) -> (Vec<i8>, Vec<f32>) {
    let scales: Vec<f32> = (0..n)
        .map(|j| {
            let largest = (0..k).map(|i| w[i * n + j].abs()).fold(0.0f32, f32::max);
            if largest > 0.0 {
                largest / 127.0
            } else {
                1.0
            }
        })
        .collect();
    let codes = w
        .iter()
        .enumerate()
        .map(|(idx, &v)| (v / scales[idx % n]).round().clamp(-127.0, 127.0) as i8)
        .collect();
    (codes, scales)
}

/// The observed range of one layer's input over calibration data.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ActivationRange {
    pub min: f32,
    pub max: f32,
}

/// Whether activation ranges are fixed by calibration or measured per batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum QuantMode {
    /// int8 weights and activations, activation ranges calibrated once.
    Static,
    /// int8 weights; each batch's activations quantized with that batch's own range.
    Dynamic,
}

/// How a compressed model was made; stored with it and shown by `kiln inspect`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Compression {
    pub mode: QuantMode,
    /// "min_max", or "percentile 99.99" (static only).
    pub calibration: Option<String>,
    pub calibration_samples: usize,
    /// Per quantized Dense layer (by index in the model), its input's mapping (static).
    pub inputs: Vec<(usize, Option<AffineU8>)>,
    /// The float model it was made from.
    pub source: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_affine_map_keeps_zero_exact_and_saturates() {
        let m = AffineU8::covering(-1.0, 3.0);
        assert_eq!(m.dequantize(m.quantize(0.0)), 0.0);
        assert_eq!(m.quantize(100.0), 255);
        assert_eq!(m.quantize(-100.0), 0);
        assert!((m.dequantize(m.quantize(1.234)) - 1.234).abs() <= m.scale / 2.0 + 1e-6);
        // A range of ReLU outputs starts at zero: zero point 0, all 256 codes for [0, max].
        let relu = AffineU8::covering(0.0, 6.0);
        assert_eq!((relu.zero_point, relu.scale), (0, 6.0 / 255.0));
        // Pixels scaled to [0, 1] map onto the 256 grey levels exactly.
        let pixels = AffineU8::covering(0.0, 1.0);
        assert_eq!(pixels.quantize(128.0 / 255.0), 128);
        assert_eq!(AffineU8::covering(0.0, 0.0).scale, 1.0);
    }

    #[test]
    fn columns_get_their_own_symmetric_scale() {
        // (k=2, n=3): column 0 spans ±1, column 1 up to 0.5, column 2 is all zero.
        let w = [1.0, 0.5, 0.0, -0.5, -0.25, 0.0];
        let (codes, scales) = quantize_columns(&w, 2, 3);
        assert_eq!(scales, [1.0 / 127.0, 0.5 / 127.0, 1.0]);
        assert_eq!(codes, [127, 127, 0, -64, -64, 0]);
    }
}
