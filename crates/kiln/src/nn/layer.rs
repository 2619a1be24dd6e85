//! Layer configurations (serde, as written in specs and saved in artifacts) and the built
//! layers they become.

use serde::{Deserialize, Serialize};

use super::spatial::{BatchNormLayer, ConvLayer};
use super::{
    Activation, BatchNormSpec, Conv2dSpec, GlobalPoolSpec, Initializer, PoolSpec, Regularizer, ReshapeSpec,
};
use crate::autograd::{Tape, Var};
use crate::error::{Error, Result};
use crate::ops::conv2d::Window;
use crate::params::ParamId;
use crate::tensor::Shape;

use super::sequential::{Mode, ParamSource};

/// One entry of a model's `layers` list, tagged by `type`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum LayerSpec {
    Dense(DenseSpec),
    Dropout(DropoutSpec),
    Flatten(FlattenSpec),
    Activation(ActivationSpec),
    Conv2d(Conv2dSpec),
    MaxPooling2d(PoolSpec),
    AveragePooling2d(PoolSpec),
    GlobalAveragePooling2d(GlobalPoolSpec),
    BatchNormalization(BatchNormSpec),
    Reshape(ReshapeSpec),
}

/// A fully connected layer `y = activation(x · kernel + bias)`, kernel shaped (in, units).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DenseSpec {
    pub units: usize,
    #[serde(default)]
    pub activation: Activation,
    #[serde(default = "yes")]
    pub use_bias: bool,
    #[serde(default)]
    pub kernel_initializer: Initializer,
    #[serde(default = "zeros")]
    pub bias_initializer: Initializer,
    /// Penalty on the kernel added to the loss (Keras `kernel_regularizer`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel_regularizer: Option<Regularizer>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bias_regularizer: Option<Regularizer>,
}

/// Inverted dropout: zeroes a fraction `rate` of its inputs while training.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DropoutSpec {
    pub rate: f32,
}

/// Flattens each sample to a vector.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FlattenSpec {}

/// Applies an activation function on its own.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActivationSpec {
    pub activation: Activation,
}

fn yes() -> bool {
    true
}

fn zeros() -> Initializer {
    Initializer::Zeros
}

/// A built layer. Shapes here exclude the batch axis.
#[derive(Debug, Clone)]
pub enum Layer {
    Dense {
        kernel: ParamId,
        bias: Option<ParamId>,
        activation: Activation,
        /// (parameter, regularizer) pairs whose penalties join the loss.
        penalties: Vec<(ParamId, Regularizer)>,
    },
    Dropout {
        rate: f32,
    },
    Flatten,
    Activation(Activation),
    Conv2d(ConvLayer),
    MaxPool2d(Window),
    AvgPool2d(Window),
    GlobalAvgPool2d,
    BatchNorm(BatchNormLayer),
    Reshape(Shape),
}

impl LayerSpec {
    pub fn type_name(&self) -> &'static str {
        match self {
            LayerSpec::Dense(_) => "dense",
            LayerSpec::Dropout(_) => "dropout",
            LayerSpec::Flatten(_) => "flatten",
            LayerSpec::Activation(_) => "activation",
            LayerSpec::Conv2d(_) => "conv2d",
            LayerSpec::MaxPooling2d(_) => "max_pooling2d",
            LayerSpec::AveragePooling2d(_) => "average_pooling2d",
            LayerSpec::GlobalAveragePooling2d(_) => "global_average_pooling2d",
            LayerSpec::BatchNormalization(_) => "batch_normalization",
            LayerSpec::Reshape(_) => "reshape",
        }
    }

    /// Builds the layer for a per-sample input shape; returns it with its output shape.
    pub(crate) fn build(
        &self,
        index: usize,
        input: Shape,
        params: &mut ParamSource,
    ) -> Result<(Layer, Shape)> {
        let layer = || format!("layer {index} ({})", self.type_name());
        let fail = |message: String| Error::Layer {
            index,
            kind: self.type_name().to_string(),
            message,
        };
        match self {
            LayerSpec::Dense(d) => {
                if d.units == 0 {
                    return Err(fail("units must be at least 1".into()));
                }
                if input.rank() == 0 {
                    return Err(Error::shape(layer(), "an input with at least one axis", input));
                }
                let fan_in = input.last();
                let kernel = params.get(
                    &format!("layers.{index}.kernel"),
                    &[fan_in, d.units],
                    d.kernel_initializer,
                    (fan_in, d.units),
                )?;
                let bias = if d.use_bias {
                    Some(params.get(
                        &format!("layers.{index}.bias"),
                        &[d.units],
                        d.bias_initializer,
                        (fan_in, d.units),
                    )?)
                } else {
                    None
                };
                let mut out = input.dims().to_vec();
                *out.last_mut().expect("rank checked") = d.units;
                let penalties = [(Some(kernel), d.kernel_regularizer), (bias, d.bias_regularizer)]
                    .into_iter()
                    .filter_map(|(p, r)| Some((p?, r?)))
                    .collect();
                let layer = Layer::Dense {
                    kernel,
                    bias,
                    activation: d.activation,
                    penalties,
                };
                Ok((layer, Shape::new(&out)))
            }
            LayerSpec::Dropout(d) => {
                if !(0.0..1.0).contains(&d.rate) {
                    return Err(Error::setting(
                        format!("{} rate", layer()),
                        d.rate,
                        "a rate in [0, 1)",
                    ));
                }
                Ok((Layer::Dropout { rate: d.rate }, input))
            }
            LayerSpec::Flatten(_) => Ok((Layer::Flatten, Shape::new(&[input.numel()]))),
            LayerSpec::Activation(a) => Ok((Layer::Activation(a.activation), input)),
            LayerSpec::Conv2d(c) => {
                let (layer, out) = c.build(index, input, params).map_err(fail)?;
                Ok((Layer::Conv2d(layer), out))
            }
            LayerSpec::MaxPooling2d(p) => {
                let (window, out) = p.build(input, self.type_name()).map_err(fail)?;
                Ok((Layer::MaxPool2d(window), out))
            }
            LayerSpec::AveragePooling2d(p) => {
                let (window, out) = p.build(input, self.type_name()).map_err(fail)?;
                Ok((Layer::AvgPool2d(window), out))
            }
            LayerSpec::GlobalAveragePooling2d(g) => {
                Ok((Layer::GlobalAvgPool2d, g.build(input).map_err(fail)?))
            }
            LayerSpec::BatchNormalization(b) => {
                let layer = b.build(index, input, params).map_err(fail)?;
                Ok((Layer::BatchNorm(layer), input))
            }
            LayerSpec::Reshape(r) => {
                let out = r.build(input).map_err(fail)?;
                Ok((Layer::Reshape(out), out))
            }
        }
    }
}

impl Layer {
    /// The parameters this layer penalises, with their regularizers.
    pub fn penalties(&self) -> &[(ParamId, Regularizer)] {
        match self {
            Layer::Dense { penalties, .. } => penalties,
            Layer::Conv2d(c) => &c.penalties,
            _ => &[],
        }
    }

    /// The activation this layer ends with, if any (losses fuse with a final softmax).
    pub fn activation(&self) -> Activation {
        match self {
            Layer::Dense { activation, .. } | Layer::Activation(activation) => *activation,
            Layer::Conv2d(c) => c.activation,
            _ => Activation::Linear,
        }
    }

    /// `x` is (batch, …input shape); `skip_activation` leaves the final activation to a
    /// fused loss.
    pub fn forward(&self, tape: &mut Tape, x: Var, mode: &mut Mode, skip_activation: bool) -> Result<Var> {
        let activate =
            |tape: &mut Tape, y: Var, a: Activation| if skip_activation { y } else { a.apply(tape, y) };
        match self {
            Layer::Dense {
                kernel,
                bias,
                activation,
                ..
            } => {
                let w = tape.param(*kernel);
                let mut y = tape.matmul(x, w)?;
                if let Some(b) = bias {
                    let b = tape.param(*b);
                    y = tape.add_bias(y, b)?;
                }
                Ok(activate(tape, y, *activation))
            }
            Layer::Dropout { rate } => match mode {
                Mode::Train(rng) => tape.dropout(x, *rate, rng),
                Mode::Infer => Ok(x),
            },
            Layer::Flatten => tape.flatten(x),
            Layer::Activation(a) => Ok(activate(tape, x, *a)),
            Layer::Conv2d(c) => {
                let k = tape.param(c.kernel);
                let b = c.bias.map(|b| tape.param(b));
                if c.activation == Activation::Relu && !skip_activation {
                    return tape.conv2d_relu(x, k, b, c.window);
                }
                let y = tape.conv2d(x, k, b, c.window)?;
                Ok(activate(tape, y, c.activation))
            }
            Layer::MaxPool2d(w) => tape.max_pool2d(x, *w),
            Layer::AvgPool2d(w) => tape.avg_pool2d(x, *w),
            Layer::GlobalAvgPool2d => tape.global_avg_pool2d(x),
            Layer::BatchNorm(b) => {
                let gamma = b.gamma.map(|g| tape.param(g));
                let beta = b.beta.map(|g| tape.param(g));
                match mode {
                    Mode::Train(_) => tape.batch_norm_train(x, gamma, beta, b.moving, b.epsilon),
                    Mode::Infer => tape.batch_norm_infer(x, gamma, beta, b.moving, b.epsilon),
                }
            }
            Layer::Reshape(shape) => {
                let batch = tape.shape(x).dims()[0];
                tape.reshape(x, shape.with_batch(batch))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize)]
    struct Layers {
        layers: Vec<LayerSpec>,
    }

    #[test]
    fn specs_parse_with_keras_defaults() {
        let parsed: Layers = toml::from_str(
            r#"
            [[layers]]
            type = "flatten"
            [[layers]]
            type = "dense"
            units = 512
            activation = "relu"
            [[layers]]
            type = "dropout"
            rate = 0.2
            "#,
        )
        .unwrap();
        assert_eq!(parsed.layers[0], LayerSpec::Flatten(FlattenSpec {}));
        let LayerSpec::Dense(d) = &parsed.layers[1] else {
            panic!()
        };
        assert_eq!((d.units, d.activation, d.use_bias), (512, Activation::Relu, true));
        assert_eq!(
            (d.kernel_initializer, d.bias_initializer),
            (Initializer::GlorotUniform, Initializer::Zeros)
        );
    }

    #[test]
    fn unknown_layer_types_and_misspelled_fields_are_rejected() {
        let err = toml::from_str::<Layers>("[[layers]]\ntype = \"dense2\"\nunits = 3")
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("unknown variant `dense2`"), "{err}");
        let err = toml::from_str::<Layers>("[[layers]]\ntype = \"dense\"\nunit = 3")
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("unknown field `unit`"), "{err}");
        let err = toml::from_str::<Layers>("[[layers]]\ntype = \"dense\"\nunits = 3\nactivation = \"relux\"")
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("unknown variant `relux`"), "{err}");
    }
}
