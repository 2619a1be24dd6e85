//! A Sequential model's passes: the training forward and backward of a batch, its loss at
//! inference, and `predict`.

use std::any::Any;

use crate::autograd::{Tape, Var};
use crate::error::{Error, Result};
use crate::metrics::count_correct;
use crate::params::ParamStore;
use crate::rng::Rng;
use crate::tensor::{Shape, Tensor};

use super::model::{Batch, BatchLoss, Evaluate, Model};
use super::{Loss, Mode, Network, Predict, Sequential};

impl Model for Sequential {
    fn params(&self) -> &ParamStore {
        &self.params
    }

    fn params_mut(&mut self) -> &mut ParamStore {
        &mut self.params
    }

    fn train_batch(&mut self, batch: Batch, loss: &Loss, dropout: &mut Rng) -> Result<BatchLoss> {
        let (x, labels) = batch.samples("a Sequential model")?;
        self.check_input(x, labels.len())?;
        let shape = self.input_shape().with_batch(labels.len());
        let (network, params, workspace) = self.parts();
        let fused = loss.fuses(network.final_activation());
        // Gradients are zero here: fresh, or cleared by the previous step's update (or by
        // the error path below).
        let recorded = (|| {
            let mut tape = Tape::new(params, workspace);
            let input = tape.input(x, shape);
            let output = network.forward(&mut tape, input, &mut Mode::Train(dropout), fused)?;
            let data_loss = loss.compute(&mut tape, output, fused, labels)?;
            let total = with_penalties(network, &mut tape, data_loss)?;
            tape.backward(total);
            let correct = count_correct(tape.value(output), labels, fused || loss.from_logits);
            Ok(BatchLoss {
                loss: tape.value(total)[0],
                correct,
            })
        })();
        if recorded.is_err() {
            params.zero_grads();
        }
        recorded
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

impl Evaluate for Sequential {
    fn evaluate_batch(&mut self, batch: Batch, loss: &Loss) -> Result<BatchLoss> {
        let (x, labels) = batch.samples("a Sequential model")?;
        let rows = labels.len();
        self.check_input(x, rows)?;
        let input_shape = self.input_shape();
        let (network, params, workspace) = self.parts();
        let fused = loss.fuses(network.final_activation());
        let mut tape = Tape::inference(params, workspace);
        let input = tape.input(x, input_shape.with_batch(rows));
        let output = network.forward(&mut tape, input, &mut Mode::Infer, fused)?;
        let data_loss = loss.compute(&mut tape, output, fused, labels)?;
        let total = with_penalties(network, &mut tape, data_loss)?;
        Ok(BatchLoss {
            loss: tape.value(total)[0],
            correct: count_correct(tape.value(output), labels, fused || loss.from_logits),
        })
    }

    fn check_samples(&self, sample_shape: &[usize], classes: usize, what: &str) -> Result<()> {
        if sample_shape != self.input_shape().dims() {
            return Err(Error::shape(
                format!("{what} samples"),
                format!("the model's input shape {}", self.input_shape()),
                format!("{sample_shape:?}"),
            ));
        }
        self.check_classifier_output(classes)
    }
}

impl Sequential {
    /// Checks that `x` holds `count` samples of the model's input shape.
    pub(crate) fn check_input(&self, x: &[f32], count: usize) -> Result<()> {
        let input_shape = self.input_shape();
        if x.len() != count * input_shape.numel() {
            return Err(Error::shape(
                "input values",
                format!(
                    "{count} samples of shape {input_shape}: {} values",
                    count * input_shape.numel()
                ),
                format!("{} values", x.len()),
            ));
        }
        Ok(())
    }

    /// The loss and correct count of outputs computed elsewhere (an int8 network's, an
    /// ensemble's average), already activated: nothing fused. `penalties` adds this
    /// model's weight penalties, as its own evaluation would.
    pub fn loss_of_outputs(
        &mut self,
        outputs: &[f32],
        labels: &[u32],
        loss: &Loss,
        penalties: bool,
    ) -> Result<BatchLoss> {
        let output_shape = self.output_shape();
        let (network, params, workspace) = self.parts();
        let mut tape = Tape::inference(params, workspace);
        let output = tape.input(outputs, output_shape.with_batch(labels.len()));
        let data_loss = loss.compute(&mut tape, output, false, labels)?;
        let total = match penalties {
            true => with_penalties(network, &mut tape, data_loss)?,
            false => data_loss,
        };
        Ok(BatchLoss {
            loss: tape.value(total)[0],
            correct: count_correct(tape.value(output), labels, loss.from_logits),
        })
    }

    /// The model's outputs (class probabilities for a softmax model) for `count` samples
    /// stored back to back in `x`, as a (count, outputs) tensor (Keras `predict`).
    pub fn predict(&mut self, x: &[f32], count: usize) -> Result<Tensor> {
        self.check_input(x, count)?;
        let input_shape = self.input_shape();
        let outputs = self.output_shape().numel();
        let mut result = Vec::with_capacity(count * outputs);
        const BATCH: usize = 1024;
        let (network, params, workspace) = self.parts();
        for chunk in x.chunks(BATCH * input_shape.numel().max(1)) {
            let rows = chunk.len() / input_shape.numel().max(1);
            let mut tape = Tape::inference(params, workspace);
            let input = tape.input(chunk, input_shape.with_batch(rows));
            let output = network.forward(&mut tape, input, &mut Mode::Infer, false)?;
            result.extend_from_slice(tape.value(output));
        }
        Ok(Tensor::from_shape(Shape::new(&[count, outputs]), result))
    }
}

impl Predict for Sequential {
    fn input_shape(&self) -> Shape {
        Sequential::input_shape(self)
    }

    fn output_shape(&self) -> Shape {
        Sequential::output_shape(self)
    }

    fn predict(&mut self, x: &[f32], count: usize) -> Result<Tensor> {
        Sequential::predict(self, x, count)
    }
}

/// The data loss plus the layers' weight penalties, as Keras reports and differentiates it.
fn with_penalties(network: &Network, tape: &mut Tape, loss: Var) -> Result<Var> {
    match network.regularization(tape)? {
        Some(p) => tape.add(loss, p),
        None => Ok(loss),
    }
}
