//! A stack of layers applied in order, with the parameters they own.

use crate::autograd::{Tape, Var, Workspace};
use crate::error::{Error, Result};
use crate::ops::conv2d::Window;
use crate::params::{ParamId, ParamStore};
use crate::rng::Rng;
use crate::tensor::{Shape, Tensor};

use super::{Activation, Initializer, Layer, LayerSpec};

/// Whether a forward pass trains (dropout active, drawing from the rng) or infers.
pub enum Mode<'r> {
    Train(&'r mut Rng),
    Infer,
}

/// Where a layer's parameters come from while building: fresh initialisation or a file.
/// It fills the store the built model will own.
pub(crate) struct ParamSource<'a> {
    store: ParamStore,
    origin: Origin<'a>,
}

enum Origin<'a> {
    Init(Rng),
    Load(&'a mut dyn FnMut(&str, &[usize]) -> Result<Tensor>),
}

impl ParamSource<'_> {
    pub(crate) fn get(
        &mut self,
        name: &str,
        dims: &[usize],
        init: Initializer,
        fans: (usize, usize),
    ) -> Result<ParamId> {
        let so_far = self.store.count() as u64 * 4 * super::memory::TRAINING_COPIES;
        super::memory::check_parameter(name, dims, so_far)?;
        let tensor = match &mut self.origin {
            Origin::Init(rng) => {
                let count = dims.iter().product();
                Tensor::new(dims, init.sample(fans.0, fans.1, count, rng))?
            }
            Origin::Load(tensors) => tensors(name, dims)?,
        };
        Ok(self.store.add(name, tensor))
    }

    /// A non-trainable parameter (layer state such as moving statistics).
    pub(crate) fn get_state(&mut self, name: &str, dims: &[usize], init: Initializer) -> Result<ParamId> {
        let id = self.get(name, dims, init, (1, 1))?;
        self.store.get_mut(id).trainable = false;
        Ok(id)
    }
}

/// Builds each layer in turn, checking that its input shape fits: (input, output, network).
fn build_layers(
    input_shape: &[usize],
    specs: &[LayerSpec],
    source: &mut ParamSource,
) -> Result<(Shape, Shape, Network)> {
    let sample_values = super::memory::count(input_shape).unwrap_or(usize::MAX);
    let input = Shape::try_new(input_shape)
        .filter(|s| s.rank() > 0 && sample_values > 0 && s.rank() < crate::tensor::MAX_RANK)
        .filter(|_| sample_values <= super::memory::MAX_SAMPLE_VALUES)
        .ok_or_else(|| {
            Error::setting(
                "input_shape",
                format!("{input_shape:?}"),
                format!(
                    "1 to {} axes, none of them 0, and at most {} values per sample",
                    crate::tensor::MAX_RANK - 1,
                    super::memory::MAX_SAMPLE_VALUES
                ),
            )
        })?;
    if specs.is_empty() {
        return Err(Error::too_few("model layers", 0, 1));
    }
    let mut shape = input;
    let mut layers = Vec::with_capacity(specs.len());
    let mut shapes = Vec::with_capacity(specs.len());
    for (i, spec) in specs.iter().enumerate() {
        let (layer, out) = spec.build(i, shape, source)?;
        if super::memory::count(out.dims()).is_none_or(|n| n > super::memory::MAX_SAMPLE_VALUES) {
            return Err(Error::Layer {
                index: i,
                kind: spec.type_name().to_string(),
                message: format!(
                    "outputs {out} per sample, more than the {} values kiln takes per sample",
                    super::memory::MAX_SAMPLE_VALUES
                ),
            });
        }
        layers.push(layer);
        shapes.push(out);
        shape = out;
    }
    Ok((input, shape, Network { layers, shapes }))
}

/// The layers of a model without its parameters, so a forward pass can borrow both.
#[derive(Debug, Clone)]
pub struct Network {
    pub(crate) layers: Vec<Layer>,
    /// Each layer's per-sample output shape.
    shapes: Vec<Shape>,
}

impl Network {
    /// Runs every layer; with `fuse_final_activation` the last layer's activation is left
    /// out so a loss can fuse it (softmax + cross-entropy).
    pub fn forward(
        &self,
        tape: &mut Tape,
        x: Var,
        mode: &mut Mode,
        fuse_final_activation: bool,
    ) -> Result<Var> {
        let last = self.layers.len().saturating_sub(1);
        let (mut h, mut i) = (x, 0);
        while i <= last {
            if let (Mode::Infer, Some((conv, norm))) = (&mode, self.foldable_pair(i)) {
                h = super::fold::conv_batch_norm(tape, h, conv, norm)?;
                i += 2;
                continue;
            }
            if let Some((conv, pool)) = self.poolable_pair(i) {
                let kernel = tape.param(conv.kernel);
                let bias = conv.bias.map(|b| tape.param(b));
                let relu = conv.activation == Activation::Relu;
                h = tape.conv2d_max_pool(h, kernel, bias, conv.window, relu, *pool)?;
                i += 2;
                continue;
            }
            h = self.layers[i].forward(tape, h, mode, fuse_final_activation && i == last)?;
            i += 1;
        }
        Ok(h)
    }

    /// A linear convolution at `i` directly followed by batch normalization: at inference
    /// the normalization is an affine map per filter, which folds into the convolution's
    /// kernel and bias (one pass over the activations fewer).
    fn foldable_pair(&self, i: usize) -> Option<(&super::ConvLayer, &super::BatchNormLayer)> {
        match (self.layers.get(i)?, self.layers.get(i + 1)?) {
            (Layer::Conv2d(c), Layer::BatchNorm(b)) if c.activation == Activation::Linear => Some((c, b)),
            _ => None,
        }
    }

    /// A convolution (linear or ReLU) at `i` directly followed by max pooling: computed as
    /// one op, so the convolution's output is pooled block by block while in cache and
    /// never written out whole.
    fn poolable_pair(&self, i: usize) -> Option<(&super::ConvLayer, &Window)> {
        match (self.layers.get(i)?, self.layers.get(i + 1)?) {
            (Layer::Conv2d(c), Layer::MaxPool2d(w))
                if matches!(c.activation, Activation::Relu | Activation::Linear) =>
            {
                Some((c, w))
            }
            _ => None,
        }
    }

    /// The sum of every layer's weight penalties, or `None` if no layer has a regularizer.
    pub fn regularization(&self, tape: &mut Tape) -> Result<Option<Var>> {
        let mut total: Option<Var> = None;
        for (param, r) in self.layers.iter().flat_map(Layer::penalties) {
            let w = tape.param(*param);
            let p = tape.weight_penalty(w, r.l1, r.l2)?;
            total = Some(match total {
                Some(t) => tape.add(t, p)?,
                None => p,
            });
        }
        Ok(total)
    }

    /// Each layer's per-sample output shape.
    pub(crate) fn shapes(&self) -> &[Shape] {
        &self.shapes
    }

    /// The activation the model ends with.
    pub fn final_activation(&self) -> Activation {
        self.layers.last().map_or(Activation::Linear, Layer::activation)
    }
}

#[derive(Debug)]
pub struct Sequential {
    input_shape: Shape,
    output_shape: Shape,
    specs: Vec<LayerSpec>,
    /// Per layer, the name it was given (None: the default name).
    names: Vec<Option<String>>,
    pub(crate) network: Network,
    pub params: ParamStore,
    /// Buffers reused by every forward pass (training, evaluation, prediction).
    workspace: Workspace,
}

impl Sequential {
    /// Builds the model for samples shaped `input_shape`, initialising weights from `seed`.
    pub fn new(input_shape: &[usize], specs: Vec<LayerSpec>, seed: u64) -> Result<Self> {
        Self::build(input_shape, specs, Origin::Init(Rng::derive(seed, 0x1417)))
    }

    /// Builds the model with parameters supplied by name (loading an artifact); `tensors`
    /// is asked for each parameter with the shape the architecture requires.
    pub fn with_params(
        input_shape: &[usize],
        specs: Vec<LayerSpec>,
        tensors: &mut dyn FnMut(&str, &[usize]) -> Result<Tensor>,
    ) -> Result<Self> {
        Self::build(input_shape, specs, Origin::Load(tensors))
    }

    fn build(input_shape: &[usize], specs: Vec<LayerSpec>, origin: Origin) -> Result<Self> {
        let mut source = ParamSource {
            store: ParamStore::new(),
            origin,
        };
        let (input, output, network) = build_layers(input_shape, &specs, &mut source)?;
        Ok(Sequential {
            input_shape: input,
            output_shape: output,
            names: vec![None; specs.len()],
            specs,
            network,
            params: source.store,
            workspace: Workspace::new(),
        })
    }

    pub fn input_shape(&self) -> Shape {
        self.input_shape
    }

    /// Per-sample output shape.
    pub fn output_shape(&self) -> Shape {
        self.output_shape
    }

    pub fn specs(&self) -> &[LayerSpec] {
        &self.specs
    }

    /// The architecture as data: input shape, layers, their names and which are frozen.
    pub fn architecture(&self) -> super::ModelSpec {
        let frozen = (0..self.specs.len())
            .filter(|i| {
                let prefix = format!("layers.{i}.");
                let mut params = self.params.iter().filter(|p| p.name.starts_with(&prefix));
                params.next().is_some_and(|p| p.frozen) && params.all(|p| p.frozen)
            })
            .collect();
        super::ModelSpec {
            input_shape: Some(self.input_shape.dims().to_vec()),
            layers: self.specs.clone(),
            names: self.names.clone(),
            frozen,
        }
    }

    /// Names the layers (None: the default name), as a spec's `name = "…"` does.
    pub fn set_layer_names(&mut self, names: Vec<Option<String>>) -> Result<()> {
        if names.len() != self.specs.len() {
            return Err(Error::mismatch(
                "layer names",
                format!("one per layer ({})", self.specs.len()),
                names.len(),
            ));
        }
        self.names = names;
        Ok(())
    }

    /// Names the first Dense layer that receives more than a vector (Dense maps only the
    /// last axis, so the spatial axes reach the output), or says what the output is.
    fn why_output_is_not_a_vector(&self) -> Error {
        let inputs = std::iter::once(self.input_shape).chain(self.network.shapes.iter().copied());
        let culprit = self
            .specs
            .iter()
            .zip(inputs)
            .enumerate()
            .find(|(_, (spec, input))| matches!(spec, LayerSpec::Dense(_)) && input.rank() > 1);
        match culprit {
            Some((i, (_, input))) => Error::Layer {
                index: i,
                kind: "dense".into(),
                message: format!(
                    "receives {input} per sample and maps only its last axis, so the model outputs {} instead of a vector of class scores; add {{ type = \"flatten\" }} before it",
                    self.output_shape
                ),
            },
            None => Error::shape(
                "the model's output per sample",
                "a vector of class scores (add a `flatten` layer before the first dense layer)",
                self.output_shape,
            ),
        }
    }

    /// Each layer's per-sample output shape, in order.
    pub fn layer_output_shapes(&self) -> &[Shape] {
        &self.network.shapes
    }

    pub fn network(&self) -> &Network {
        &self.network
    }

    /// The network, the parameters and the reusable buffers, borrowed apart so a tape can
    /// hold the parameters and buffers while the network records onto it.
    pub fn parts(&mut self) -> (&Network, &mut ParamStore, &mut Workspace) {
        (&self.network, &mut self.params, &mut self.workspace)
    }

    /// Checks that the model produces one score per class for `num_classes` classes
    /// (or one probability for a two-class problem with a sigmoid output).
    pub fn check_classifier_output(&self, num_classes: usize) -> Result<()> {
        let dims = self.output_shape.dims();
        if dims.len() != 1 {
            return Err(self.why_output_is_not_a_vector());
        }
        let units = dims[0];
        let binary = units == 1 && num_classes <= 2;
        if units < num_classes && !binary {
            return Err(Error::mismatch(
                "the output layer's units",
                format!(
                    "one per class: at least {num_classes} (the data has labels up to {})",
                    num_classes - 1
                ),
                format!("{units} units"),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::{DenseSpec, FlattenSpec};

    fn dense(units: usize, activation: Activation) -> LayerSpec {
        LayerSpec::Dense(DenseSpec {
            units,
            activation,
            use_bias: true,
            kernel_initializer: Initializer::GlorotUniform,
            bias_initializer: Initializer::Zeros,
            kernel_regularizer: None,
            bias_regularizer: None,
        })
    }

    #[test]
    fn builds_the_reference_mlp_with_the_right_parameter_count() {
        let specs = vec![
            LayerSpec::Flatten(FlattenSpec {}),
            dense(512, Activation::Relu),
            dense(10, Activation::Softmax),
        ];
        let model = Sequential::new(&[28, 28], specs, 0).unwrap();
        assert_eq!(model.params.count(), 784 * 512 + 512 + 512 * 10 + 10);
        assert_eq!(model.output_shape().dims(), &[10]);
        let names: Vec<_> = model.params.iter().map(|p| p.name.clone()).collect();
        assert_eq!(
            names,
            [
                "layers.1.kernel",
                "layers.1.bias",
                "layers.2.kernel",
                "layers.2.bias"
            ]
        );
    }

    #[test]
    fn forward_gives_probabilities() {
        let specs = vec![dense(4, Activation::Tanh), dense(3, Activation::Softmax)];
        let mut model = Sequential::new(&[5], specs, 1).unwrap();
        let (net, params, ws) = model.parts();
        let mut tape = Tape::inference(params, ws);
        let x = tape.input(&[0.5; 10], Shape::new(&[2, 5]));
        let y = net.forward(&mut tape, x, &mut Mode::Infer, false).unwrap();
        for row in tape.value(y).chunks(3) {
            assert!((row.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        }
    }

    #[test]
    fn outputs_that_do_not_fit_the_labels_are_errors() {
        // Dense on an unflattened image keeps two axes: not a vector of class scores.
        let model = Sequential::new(&[28, 28], vec![dense(10, Activation::Softmax)], 0).unwrap();
        let err = model.check_classifier_output(10).unwrap_err().to_string();
        assert!(err.contains("[28, 10]") && err.contains("flatten"), "{err}");
        let model = Sequential::new(&[8], vec![dense(5, Activation::Softmax)], 0).unwrap();
        let err = model.check_classifier_output(10).unwrap_err().to_string();
        assert!(err.contains("labels up to 9") && err.contains("5 units"), "{err}");
        let err = Sequential::new(&[8], vec![dense(0, Activation::Relu)], 0)
            .unwrap_err()
            .to_string();
        assert!(err.contains("layer 0 (dense): units must be at least 1"), "{err}");
    }
}
