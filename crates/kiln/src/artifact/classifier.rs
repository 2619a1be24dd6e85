//! A saved classifier as it loads: float layers, an int8 network, or an ensemble. One
//! inference interface ([`Predict`]) serves the three, so `predict`, `eval`, `serve` and
//! `compress` do not ask which they hold.

use crate::error::{Error, Result};
use crate::nn::{Batch, BatchLoss, Ensemble, Evaluate, Loss, Predict, Sequential};
use crate::quant::QuantizedModel;
use crate::tensor::{Shape, Tensor};

// One per loaded file, rarely moved: the variants' sizes do not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum Classifier {
    Float(Sequential),
    Quantized(QuantizedModel),
    Ensemble(Ensemble),
}

/// A classifier borrowed for saving: what [`super::save`] takes.
#[derive(Debug, Clone, Copy)]
pub enum ClassifierRef<'a> {
    Float(&'a Sequential),
    Quantized(&'a QuantizedModel),
    Ensemble(&'a Ensemble),
}

impl Classifier {
    /// [`Predict::predict`], callable without importing the trait.
    pub fn predict(&mut self, x: &[f32], count: usize) -> Result<Tensor> {
        self.inner().predict(x, count)
    }

    pub fn input_shape(&self) -> Shape {
        self.float().input_shape()
    }

    pub fn output_shape(&self) -> Shape {
        self.float().output_shape()
    }

    /// The float layers: the model itself, a quantized model's float weights (code ×
    /// scale), or an ensemble's first member. Architecture, parameter names and counts are
    /// read from it.
    pub fn float(&self) -> &Sequential {
        self.as_ref().float()
    }

    pub fn as_ref(&self) -> ClassifierRef<'_> {
        match self {
            Classifier::Float(m) => ClassifierRef::Float(m),
            Classifier::Quantized(q) => ClassifierRef::Quantized(q),
            Classifier::Ensemble(e) => ClassifierRef::Ensemble(e),
        }
    }

    pub fn quantized(&self) -> Option<&QuantizedModel> {
        match self {
            Classifier::Quantized(q) => Some(q),
            _ => None,
        }
    }

    pub fn quantized_mut(&mut self) -> Option<&mut QuantizedModel> {
        match self {
            Classifier::Quantized(q) => Some(q),
            _ => None,
        }
    }

    pub fn ensemble(&self) -> Option<&Ensemble> {
        match self {
            Classifier::Ensemble(e) => Some(e),
            _ => None,
        }
    }

    /// The float model, to train further, prune or quantize; `operation` names what the
    /// caller is about to do, for the error a quantized model or an ensemble gets.
    pub fn into_float(self, operation: &str) -> Result<Sequential> {
        match self {
            Classifier::Float(m) => Ok(m),
            Classifier::Quantized(_) => Err(Error::unsupported(
                operation,
                "the model is int8-quantized; start from the float model it was compressed from",
            )),
            Classifier::Ensemble(e) => Err(Error::unsupported(
                operation,
                format!("the model is an ensemble of {} members", e.members().len()),
            )),
        }
    }

    fn inner(&mut self) -> &mut dyn Predict {
        match self {
            Classifier::Float(m) => m,
            Classifier::Quantized(q) => q,
            Classifier::Ensemble(e) => e,
        }
    }
}

impl<'a> ClassifierRef<'a> {
    pub fn float(self) -> &'a Sequential {
        match self {
            ClassifierRef::Float(m) => m,
            ClassifierRef::Quantized(q) => q.float(),
            ClassifierRef::Ensemble(e) => e.first(),
        }
    }
}

impl From<Sequential> for Classifier {
    fn from(model: Sequential) -> Self {
        Classifier::Float(model)
    }
}

impl From<QuantizedModel> for Classifier {
    fn from(model: QuantizedModel) -> Self {
        Classifier::Quantized(model)
    }
}

impl From<Ensemble> for Classifier {
    fn from(model: Ensemble) -> Self {
        Classifier::Ensemble(model)
    }
}

impl<'a> From<&'a Sequential> for ClassifierRef<'a> {
    fn from(model: &'a Sequential) -> Self {
        ClassifierRef::Float(model)
    }
}

impl<'a> From<&'a QuantizedModel> for ClassifierRef<'a> {
    fn from(model: &'a QuantizedModel) -> Self {
        ClassifierRef::Quantized(model)
    }
}

impl<'a> From<&'a Ensemble> for ClassifierRef<'a> {
    fn from(model: &'a Ensemble) -> Self {
        ClassifierRef::Ensemble(model)
    }
}

impl<'a> From<&'a Classifier> for ClassifierRef<'a> {
    fn from(model: &'a Classifier) -> Self {
        model.as_ref()
    }
}

impl Evaluate for Classifier {
    fn evaluate_batch(&mut self, batch: Batch, loss: &Loss) -> Result<BatchLoss> {
        self.inner().evaluate_batch(batch, loss)
    }

    fn check_samples(&self, sample_shape: &[usize], classes: usize, what: &str) -> Result<()> {
        self.float().check_samples(sample_shape, classes, what)
    }
}

impl Predict for Classifier {
    fn input_shape(&self) -> Shape {
        Classifier::input_shape(self)
    }

    fn output_shape(&self) -> Shape {
        Classifier::output_shape(self)
    }

    fn predict(&mut self, x: &[f32], count: usize) -> Result<Tensor> {
        Classifier::predict(self, x, count)
    }
}
