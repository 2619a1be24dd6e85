//! Activation functions as a layer or a Dense layer's `activation` names them.

use serde::{Deserialize, Serialize};

use crate::autograd::{Tape, Var};
use crate::ops::unary::UnaryOp;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Activation {
    #[default]
    Linear,
    Relu,
    /// Keras's `leaky_relu` activation: negative slope 0.2.
    LeakyRelu,
    Sigmoid,
    Tanh,
    Gelu,
    Softmax,
    LogSoftmax,
}

impl Activation {
    pub fn apply(self, tape: &mut Tape, x: Var) -> Var {
        match self {
            Activation::Linear => x,
            Activation::Relu => tape.unary(x, UnaryOp::Relu),
            Activation::LeakyRelu => tape.unary(x, UnaryOp::LeakyRelu { alpha: 0.2 }),
            Activation::Sigmoid => tape.unary(x, UnaryOp::Sigmoid),
            Activation::Tanh => tape.unary(x, UnaryOp::Tanh),
            Activation::Gelu => tape.unary(x, UnaryOp::Gelu),
            Activation::Softmax => tape.softmax(x),
            Activation::LogSoftmax => tape.log_softmax(x),
        }
    }
}
