//! Post-training int8 quantization (TensorFlow Lite's and PyTorch's scheme): weights per
//! output channel, symmetric (scale = max |w| / 127, no zero point); activations per
//! tensor, affine (u8 with a zero point), their ranges either calibrated on a sample of
//! training data (static) or measured on each batch as it comes (dynamic range).
//!
//! A quantized model ([`QuantizedModel`]) keeps its float architecture; predict and
//! evaluate run the integer path ([`QuantizedNetwork`]), whose matrix products (Dense layers, and convolutions
//! through im2col) are u8 × i8 with i32 sums ([`gemm_i8`]) and whose requantization (zero
//! point, scales, bias, activation, the next layer's quantization) runs on each block of
//! rows while it is in cache. Dense-only models and static CNNs of convolutions, max
//! pooling and Dense layers pass u8 codes from layer to layer (`image_chain` for the
//! latter); other models run layer by layer, with f32 between layers.

pub mod gemm_i8;
mod half_storage;
mod image_chain;
mod model;
mod network;
mod params;

pub use crate::io::HalfFloat;
pub use half_storage::round_to_half;
pub use model::QuantizedModel;
pub use network::{Calibration, QuantizedNetwork, QUANTIZATION_KEY};
pub use params::{ActivationRange, AffineU8, Compression, QuantMode};
