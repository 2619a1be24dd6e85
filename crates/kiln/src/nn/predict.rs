//! The inference interface of a classifier: outputs for samples, and the loss of a batch.
//! `predict`, `eval`, `serve` and `compress` see a model through it, whatever it is: float
//! layers ([`super::Sequential`]), an int8 network (`compress::QuantizedModel`) or an
//! ensemble ([`super::Ensemble`]).

use crate::error::Result;
use crate::tensor::{Shape, Tensor};

use super::Evaluate;

pub trait Predict: Evaluate {
    /// The shape of one sample.
    fn input_shape(&self) -> Shape;

    /// The shape of one sample's outputs.
    fn output_shape(&self) -> Shape;

    /// The outputs (class probabilities for a softmax model) for `count` samples stored
    /// back to back in `x`, as a (count, outputs) tensor (Keras `predict`).
    fn predict(&mut self, x: &[f32], count: usize) -> Result<Tensor>;
}
