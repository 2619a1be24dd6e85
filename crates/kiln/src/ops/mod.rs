//! Ops: one file per family, each holding the forward kernel, the backward rule and the
//! finite-difference gradient check side by side.

pub mod attention;
pub mod batch_matmul;
pub mod batch_norm;
pub mod bias;
pub mod conv2d;
pub mod conv_geometry;
pub mod cross_entropy;
pub(crate) mod direct_conv;
pub mod dropout;
pub mod elementwise;
pub mod embedding;
pub mod gelu;
pub mod layer_norm;
pub mod matmul;
pub mod mse;
pub mod penalty;
pub mod pool;
pub mod reduce;
pub mod reshape;
pub mod softmax;
pub mod stable_matmul;
pub mod unary;
pub(crate) mod winograd;

// The shared helpers, at their old paths too.
pub(crate) use crate::kernels::simd;
pub use crate::kernels::{keep_awake, lanes, parallel};

#[cfg(test)]
pub(crate) mod gradcheck;

/// Targets for a loss: class indices (sparse) or a dense array shaped like the predictions.
#[derive(Debug, Clone, Copy)]
pub enum Targets<'a> {
    Classes(&'a [u32]),
    Dense(&'a [f32]),
}
