//! Layers for images, channels-last as in Keras: Conv2D, MaxPooling2D, AveragePooling2D,
//! GlobalAveragePooling2D, BatchNormalization and Reshape — their spec fields (Keras names
//! and defaults) and how each is built for a given input shape.

use serde::{Deserialize, Serialize};

use super::{Activation, Initializer, Regularizer};
use crate::error::{Error, Result};
use crate::ops::batch_norm::MovingStats;
use crate::ops::conv2d::{Axis, Padding, Window};
use crate::params::ParamId;
use crate::tensor::Shape;

use super::sequential::ParamSource;

/// A size given once for both spatial axes (`3`) or per axis (`[3, 5]`), as Keras accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Pair {
    Both(usize),
    Each([usize; 2]),
}

impl Pair {
    pub fn get(self) -> (usize, usize) {
        match self {
            Pair::Both(v) => (v, v),
            Pair::Each([h, w]) => (h, w),
        }
    }
}

fn one() -> Pair {
    Pair::Both(1)
}

fn two() -> Pair {
    Pair::Both(2)
}

fn yes() -> bool {
    true
}

fn zeros() -> Initializer {
    Initializer::Zeros
}

/// TensorFlow's padding names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PaddingSpec {
    #[default]
    Valid,
    Same,
}

impl From<PaddingSpec> for Padding {
    fn from(p: PaddingSpec) -> Padding {
        match p {
            PaddingSpec::Valid => Padding::Valid,
            PaddingSpec::Same => Padding::Same,
        }
    }
}

/// A 2-D convolution: `filters` kernels of `kernel_size` over (height, width, channels).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Conv2dSpec {
    pub filters: usize,
    pub kernel_size: Pair,
    #[serde(default = "one")]
    pub strides: Pair,
    #[serde(default)]
    pub padding: PaddingSpec,
    #[serde(default = "one")]
    pub dilation_rate: Pair,
    #[serde(default)]
    pub activation: Activation,
    #[serde(default = "yes")]
    pub use_bias: bool,
    #[serde(default)]
    pub kernel_initializer: Initializer,
    #[serde(default = "zeros")]
    pub bias_initializer: Initializer,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel_regularizer: Option<Regularizer>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bias_regularizer: Option<Regularizer>,
}

/// Max or average pooling: `pool_size` windows moved by `strides` (default: the pool size).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoolSpec {
    #[serde(default = "two")]
    pub pool_size: Pair,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strides: Option<Pair>,
    #[serde(default)]
    pub padding: PaddingSpec,
}

/// The mean over all pixels per channel: (H, W, C) → (C).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GlobalPoolSpec {}

/// Batch normalization over the last axis (Keras defaults).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchNormSpec {
    #[serde(default = "momentum")]
    pub momentum: f32,
    #[serde(default = "epsilon")]
    pub epsilon: f32,
    /// Learn a shift β.
    #[serde(default = "yes")]
    pub center: bool,
    /// Learn a scale γ.
    #[serde(default = "yes")]
    pub scale: bool,
}

fn momentum() -> f32 {
    0.99
}

fn epsilon() -> f32 {
    1e-3
}

/// A new per-sample shape with the same number of values; one entry may be -1 (inferred).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReshapeSpec {
    pub target_shape: Vec<i64>,
}

/// Built forms of these layers (shapes exclude the batch axis).
#[derive(Debug, Clone)]
pub struct ConvLayer {
    pub kernel: ParamId,
    pub bias: Option<ParamId>,
    pub window: Window,
    pub activation: Activation,
    pub penalties: Vec<(ParamId, Regularizer)>,
}

#[derive(Debug, Clone, Copy)]
pub struct BatchNormLayer {
    pub gamma: Option<ParamId>,
    pub beta: Option<ParamId>,
    pub moving: MovingStats,
    pub epsilon: f32,
}

/// (height, width, channels) of an image input, or an error that says how to get one.
fn image_dims(input: Shape, what: &str) -> std::result::Result<(usize, usize, usize), String> {
    match *input.dims() {
        [h, w, c] => Ok((h, w, c)),
        [h, w] => Err(format!(
            "expects (height, width, channels) images, got {input}; add {{ type = \"reshape\", target_shape = [{h}, {w}, 1] }} before the {what}"
        )),
        _ => Err(format!("expects (height, width, channels) images, got {input}")),
    }
}

/// The window of a kernel or pool over `input`, or why no output pixel fits.
fn window_over(
    input: (usize, usize, usize),
    size: Pair,
    strides: Pair,
    dilation: Pair,
    padding: PaddingSpec,
) -> std::result::Result<Window, String> {
    let (kh, kw) = size.get();
    let (sh, sw) = strides.get();
    let (dh, dw) = dilation.get();
    for (field, (a, b)) in [
        ("kernel_size or pool_size", (kh, kw)),
        ("strides", (sh, sw)),
        ("dilation_rate", (dh, dw)),
    ] {
        if a == 0 || b == 0 {
            return Err(format!("{field} = [{a}, {b}]: expected each at least 1"));
        }
    }
    let axis = |n, k, s, d, name| {
        Axis::new(n, k, s, d, padding.into()).ok_or_else(|| {
            format!(
                "the {name} shrinks below 1: input {n}, window {k} (dilation {d}) with padding {padding:?}; use padding = \"same\" or a smaller window"
            )
        })
    };
    Ok(Window {
        height: axis(input.0, kh, sh, dh, "height")?,
        width: axis(input.1, kw, sw, dw, "width")?,
        channels: u32::try_from(input.2).map_err(|_| "too many channels".to_string())?,
    })
}

impl Conv2dSpec {
    pub(crate) fn build(
        &self,
        index: usize,
        input: Shape,
        params: &mut ParamSource,
    ) -> Result<(ConvLayer, Shape), String> {
        let (h, w, c) = image_dims(input, "conv2d")?;
        if self.filters == 0 {
            return Err("filters must be at least 1".into());
        }
        let window = window_over(
            (h, w, c),
            self.kernel_size,
            self.strides,
            self.dilation_rate,
            self.padding,
        )?;
        let (kh, kw) = self.kernel_size.get();
        // Keras's fans for a convolution: the receptive field times the channels in / out.
        let fans = (kh * kw * c, kh * kw * self.filters);
        let err = |e: Error| e.to_string();
        let kernel = params
            .get(
                &format!("layers.{index}.kernel"),
                &[kh, kw, c, self.filters],
                self.kernel_initializer,
                fans,
            )
            .map_err(err)?;
        let bias = match self.use_bias {
            true => Some(
                params
                    .get(
                        &format!("layers.{index}.bias"),
                        &[self.filters],
                        self.bias_initializer,
                        fans,
                    )
                    .map_err(err)?,
            ),
            false => None,
        };
        let penalties = [
            (Some(kernel), self.kernel_regularizer),
            (bias, self.bias_regularizer),
        ]
        .into_iter()
        .filter_map(|(p, r)| Some((p?, r?)))
        .collect();
        let out = Shape::new(&[
            window.height.output as usize,
            window.width.output as usize,
            self.filters,
        ]);
        let layer = ConvLayer {
            kernel,
            bias,
            window,
            activation: self.activation,
            penalties,
        };
        Ok((layer, out))
    }
}

impl PoolSpec {
    pub(crate) fn build(&self, input: Shape, what: &str) -> Result<(Window, Shape), String> {
        let dims = image_dims(input, what)?;
        let window = window_over(
            dims,
            self.pool_size,
            self.strides.unwrap_or(self.pool_size),
            one(),
            self.padding,
        )?;
        let out = Shape::new(&[
            window.height.output as usize,
            window.width.output as usize,
            dims.2,
        ]);
        Ok((window, out))
    }
}

impl GlobalPoolSpec {
    pub(crate) fn build(&self, input: Shape) -> Result<Shape, String> {
        let (_, _, c) = image_dims(input, "global_average_pooling2d")?;
        Ok(Shape::new(&[c]))
    }
}

impl BatchNormSpec {
    pub(crate) fn build(
        &self,
        index: usize,
        input: Shape,
        params: &mut ParamSource,
    ) -> Result<BatchNormLayer, String> {
        if !(0.0..1.0).contains(&self.momentum) {
            return Err(format!("momentum {} must be in [0, 1)", self.momentum));
        }
        if self.epsilon <= 0.0 || !self.epsilon.is_finite() {
            return Err(format!("epsilon {} must be positive", self.epsilon));
        }
        let c = input.last();
        let err = |e: Error| e.to_string();
        let mut get = |name: &str, init: Initializer, trainable: bool| {
            let name = format!("layers.{index}.{name}");
            match trainable {
                true => params.get(&name, &[c], init, (c, c)),
                false => params.get_state(&name, &[c], init),
            }
            .map_err(err)
        };
        let gamma = if self.scale {
            Some(get("gamma", Initializer::Ones, true)?)
        } else {
            None
        };
        let beta = if self.center {
            Some(get("beta", Initializer::Zeros, true)?)
        } else {
            None
        };
        let moving = MovingStats {
            mean: get("moving_mean", Initializer::Zeros, false)?,
            variance: get("moving_variance", Initializer::Ones, false)?,
            momentum: self.momentum,
        };
        Ok(BatchNormLayer {
            gamma,
            beta,
            moving,
            epsilon: self.epsilon,
        })
    }
}

impl ReshapeSpec {
    pub(crate) fn build(&self, input: Shape) -> Result<Shape, String> {
        let inferred = self.target_shape.iter().filter(|&&d| d == -1).count();
        let bad = |why: &str| {
            format!(
                "target_shape {:?} {why} (input {input}, {} values)",
                self.target_shape,
                input.numel()
            )
        };
        if self.target_shape.is_empty() || inferred > 1 || self.target_shape.iter().any(|&d| d == 0 || d < -1)
        {
            return Err(bad("must hold positive sizes and at most one -1"));
        }
        // Checked: sizes from a file can multiply past i64 (and a wrapped 0 would divide).
        let known = self
            .target_shape
            .iter()
            .filter(|&&d| d != -1)
            .try_fold(1i64, |acc, &d| acc.checked_mul(d))
            .ok_or_else(|| bad("is too large"))?;
        let total = input.numel() as i64;
        if (inferred == 0 && known != total) || (inferred == 1 && total % known != 0) {
            return Err(bad("does not hold the same number of values"));
        }
        let dims: Vec<usize> = self
            .target_shape
            .iter()
            .map(|&d| {
                if d == -1 {
                    (total / known) as usize
                } else {
                    d as usize
                }
            })
            .collect();
        Shape::try_new(&dims).ok_or_else(|| bad("has too many axes"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fuzzing finding: sizes whose product passes i64 once wrapped to 0 and divided by it.
    #[test]
    fn a_reshape_whose_sizes_overflow_is_an_error() {
        let spec = ReshapeSpec {
            target_shape: vec![-1, 1 << 32, 1 << 32],
        };
        let err = spec.build(Shape::new(&[8, 8])).unwrap_err();
        assert!(err.contains("too large"), "{err}");
    }
}
