//! What every trainable model is to the trainer: named parameters, the loss of a batch with
//! its gradients (training), and the loss of a batch without them (evaluation). Sequential
//! and the GPT implement it; the one trainer (`crate::train::Trainer`) and its callbacks see
//! nothing else of a model.

use std::any::Any;

use crate::error::{Error, Result};
use crate::params::ParamStore;
use crate::rng::Rng;
use crate::tensor::Tensor;

use super::Loss;

/// One batch as a model reads it.
#[derive(Debug, Clone, Copy)]
pub enum Batch<'a> {
    /// `labels.len()` samples stored back to back in `x`, one label each.
    Samples { x: &'a [f32], labels: &'a [u32] },
    /// `rows` windows of token ids (row-major) and, for each position, the token that
    /// follows it: every position is one prediction.
    Tokens {
        inputs: &'a [u32],
        targets: &'a [u32],
        rows: usize,
    },
}

impl<'a> Batch<'a> {
    /// The samples and labels of a batch of samples, or an error saying that `reader`
    /// ("a Sequential model", "an ensemble") reads samples, not token windows.
    pub fn samples(self, reader: &str) -> Result<(&'a [f32], &'a [u32])> {
        match self {
            Batch::Samples { x, labels } => Ok((x, labels)),
            Batch::Tokens { .. } => Err(Error::mismatch(
                "the data",
                format!("samples with labels, which {reader} reads"),
                "token windows",
            )),
        }
    }

    /// How many predictions the batch's loss is the mean over (samples, or tokens).
    pub fn predictions(&self) -> usize {
        match self {
            Batch::Samples { labels, .. } => labels.len(),
            Batch::Tokens { targets, .. } => targets.len(),
        }
    }
}

/// The figures of one batch: the mean loss over its predictions and how many were right.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BatchLoss {
    pub loss: f32,
    pub correct: usize,
}

/// What evaluation sees of a model: the loss of a batch at inference, and whether data fit
/// it. Every model implements it, trainable or not (a quantized model, an ensemble).
pub trait Evaluate: Send {
    /// The batch's loss and correct count at inference (no dropout, no gradients).
    fn evaluate_batch(&mut self, batch: Batch, loss: &Loss) -> Result<BatchLoss>;

    /// Checks that samples shaped `sample_shape` with labels below `classes` fit the model;
    /// `what` names the data in the error ("training", "validation").
    fn check_samples(&self, sample_shape: &[usize], classes: usize, what: &str) -> Result<()> {
        let _ = (sample_shape, classes);
        Err(Error::mismatch(
            format!("{what} data"),
            "token windows, which this model reads",
            "samples with labels",
        ))
    }

    /// Checks that windows of `context` tokens below `vocab` fit the model.
    fn check_windows(&self, context: usize, vocab: usize) -> Result<()> {
        let _ = (context, vocab);
        Err(Error::mismatch(
            "the data",
            "samples with labels, which this model reads",
            "token windows",
        ))
    }
}

/// A model the trainer can fit, evaluate, checkpoint and hand to callbacks.
pub trait Model: Evaluate + Send + Any {
    fn params(&self) -> &ParamStore;
    fn params_mut(&mut self) -> &mut ParamStore;

    /// Records the forward pass of `batch` with dropout drawn from `dropout`, runs backward,
    /// and leaves the gradients in the parameters (cleared again if it fails).
    fn train_batch(&mut self, batch: Batch, loss: &Loss, dropout: &mut Rng) -> Result<BatchLoss>;

    /// The concrete model, for code that saves it (a callback writing model files).
    fn as_any(&self) -> &dyn Any;

    /// A copy of every parameter's values, in order (Keras `get_weights`).
    fn weights(&self) -> Vec<Tensor> {
        self.params().iter().map(|p| p.value.clone()).collect()
    }

    /// Replaces every parameter's values; count and shapes must match (Keras `set_weights`).
    fn set_weights(&mut self, weights: &[Tensor]) -> Result<()> {
        let params = self.params_mut();
        if weights.len() != params.len() {
            return Err(Error::mismatch(
                "weights",
                format!("{}, one per parameter", params.len()),
                weights.len(),
            ));
        }
        if let Some((p, w)) = params
            .iter()
            .zip(weights)
            .find(|(p, w)| p.value.dims() != w.dims())
        {
            return Err(Error::shape(
                format!("weight for {}", p.name),
                format!("{:?}", p.value.dims()),
                format!("{:?}", w.dims()),
            ));
        }
        for (p, w) in params.iter_mut().zip(weights) {
            p.value.data_mut().copy_from_slice(w.data());
        }
        Ok(())
    }
}
