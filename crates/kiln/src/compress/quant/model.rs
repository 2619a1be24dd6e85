//! A quantized model: its float architecture and weights (code × scale, for the layers that
//! run in float and for what reads the architecture) plus the int8 network that predict and
//! evaluate run.

use crate::error::Result;
use crate::nn::{Batch, BatchLoss, Evaluate, Loss, Predict, Sequential};
use crate::tensor::{Shape, Tensor};

use super::{Calibration, QuantMode, QuantizedNetwork};

#[derive(Debug)]
pub struct QuantizedModel {
    float: Sequential,
    network: QuantizedNetwork,
}

impl QuantizedModel {
    /// Quantizes `float`'s Dense and Conv2D layers; see [`QuantizedNetwork::quantize`].
    pub fn quantize(
        float: Sequential,
        mode: QuantMode,
        calibration: Calibration,
        samples: &[f32],
        source: &str,
    ) -> Result<Self> {
        let network = QuantizedNetwork::quantize(&float, mode, calibration, samples, source)?;
        Ok(QuantizedModel { float, network })
    }

    /// Joins a float model with an int8 network made from it (a saved compressed model).
    pub fn from_parts(float: Sequential, network: QuantizedNetwork) -> Self {
        QuantizedModel { float, network }
    }

    /// The float layers: architecture, parameter names, and the weights the codes stand for.
    pub fn float(&self) -> &Sequential {
        &self.float
    }

    /// The float model alone, to compare with the int8 path or to compress again.
    pub fn into_float(self) -> Sequential {
        self.float
    }

    pub fn network(&self) -> &QuantizedNetwork {
        &self.network
    }

    pub fn mode(&self) -> QuantMode {
        self.network.mode()
    }

    /// Runs a CNN layer by layer even where the image chain could (to compare the two).
    pub fn set_image_chain(&mut self, enabled: bool) {
        self.network.set_image_chain(&self.float, enabled);
    }
}

impl Evaluate for QuantizedModel {
    fn evaluate_batch(&mut self, batch: Batch, loss: &Loss) -> Result<BatchLoss> {
        let (x, labels) = batch.samples("a quantized model")?;
        let outputs = self.predict(x, labels.len())?;
        // The int8 outputs are already activated; the weight penalties are the float
        // model's, as before compression.
        self.float.loss_of_outputs(outputs.data(), labels, loss, true)
    }

    fn check_samples(&self, sample_shape: &[usize], classes: usize, what: &str) -> Result<()> {
        self.float.check_samples(sample_shape, classes, what)
    }
}

impl Predict for QuantizedModel {
    fn input_shape(&self) -> Shape {
        self.float.input_shape()
    }

    fn output_shape(&self) -> Shape {
        self.float.output_shape()
    }

    fn predict(&mut self, x: &[f32], count: usize) -> Result<Tensor> {
        self.float.check_input(x, count)?;
        let outputs = self.float.output_shape().numel();
        let (network, params, workspace) = self.float.parts();
        let y = self.network.run(network, params, workspace, x, count)?;
        Ok(Tensor::from_shape(Shape::new(&[count, outputs]), y))
    }
}
