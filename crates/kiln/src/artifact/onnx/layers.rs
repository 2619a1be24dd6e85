//! Each kiln layer as ONNX nodes. kiln's images are channels-last (N, H, W, C) and ONNX's
//! convolutions and pooling channels-first (N, C, H, W): a value carries its current
//! layout, and a transpose is added only where the next node needs the other one, so a
//! run of convolutions, pooling and batch normalization stays channels-first and a Flatten
//! sees kiln's (H, W, C) order.

use std::collections::HashMap;

use super::graph::{float, int, ints, GraphBuilder};
use super::quantized::QuantizedKernel;
use crate::error::{Error, Result};
use crate::nn::{Activation, Layer, Sequential};
use crate::ops::conv2d::Window;
use crate::ops::conv_geometry::Axis;
use crate::tensor::Shape;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Layout {
    /// kiln's order: (N, …sample shape).
    Kiln,
    /// An image as (N, C, H, W).
    ChannelsFirst,
}

/// A value flowing through the graph: its name, layout and per-sample shape in kiln's order.
#[derive(Debug, Clone)]
pub(super) struct Flow {
    pub(super) name: String,
    pub(super) layout: Layout,
    pub(super) shape: Shape,
}

/// Emits a model's layers into a graph, quantized layers as Q/DQ pairs around the float
/// operator when `kernels` has them.
pub(super) struct LayerEmitter<'a> {
    pub(super) g: &'a mut GraphBuilder,
    pub(super) model: &'a Sequential,
    pub(super) kernels: HashMap<usize, QuantizedKernel<'a>>,
}

impl LayerEmitter<'_> {
    /// Every layer in turn, from the preprocessed input; the output in kiln's layout.
    pub(super) fn emit_all(&mut self, mut x: Flow) -> Result<Flow> {
        let network = self.model.network();
        for (i, layer) in network.layers.iter().enumerate() {
            let out_shape = self.model.layer_output_shapes()[i];
            x = self.emit(i, layer, x)?;
            x.shape = out_shape;
        }
        self.make_kiln_layout(&mut x);
        Ok(x)
    }

    fn emit(&mut self, i: usize, layer: &Layer, mut x: Flow) -> Result<Flow> {
        match layer {
            Layer::Dense {
                kernel,
                bias,
                activation,
                ..
            } => {
                self.make_kiln_layout(&mut x);
                let input = self.quantized_input(i, &x)?;
                let w = match self.kernels.get(&i) {
                    Some(q) => q.dense_weight(self.g),
                    None => {
                        let w = &self.model.params.get(*kernel).value;
                        self.g.floats("kernel", w.dims(), w.data())
                    }
                };
                let mut y = self.g.op("MatMul", &[&input, &w], vec![]);
                if let Some(b) = bias {
                    let b = &self.model.params.get(*b).value;
                    let b = self.g.floats("bias", b.dims(), b.data());
                    y = self.g.op("Add", &[&y, &b], vec![]);
                }
                x.name = y;
                self.activate(*activation, x)
            }
            Layer::Dropout { .. } => Ok(x),
            Layer::Flatten => {
                self.make_kiln_layout(&mut x);
                x.name = self.g.op("Flatten", &[&x.name], vec![int("axis", 1)]);
                Ok(x)
            }
            Layer::Activation(a) => self.activate(*a, x),
            Layer::Conv2d(c) => {
                self.make_channels_first(&mut x, i)?;
                let input = self.quantized_input(i, &x)?;
                let w = match self.kernels.get(&i) {
                    Some(q) => q.conv_weight(self.g, &self.model.params.get(c.kernel).value)?,
                    None => {
                        let k = &self.model.params.get(c.kernel).value;
                        let (dims, oihw) = hwio_to_oihw(k.dims(), k.data())?;
                        self.g.floats("kernel", &dims, &oihw)
                    }
                };
                let mut inputs = vec![input, w];
                if let Some(b) = c.bias {
                    let b = &self.model.params.get(b).value;
                    inputs.push(self.g.floats("bias", b.dims(), b.data()));
                }
                let inputs: Vec<&str> = inputs.iter().map(String::as_str).collect();
                let mut attributes = window_attributes(&c.window);
                attributes.push(ints(
                    "dilations",
                    &[c.window.height.dilation as i64, c.window.width.dilation as i64],
                ));
                x.name = self.g.op("Conv", &inputs, attributes);
                self.activate(c.activation, x)
            }
            Layer::MaxPool2d(w) => {
                self.make_channels_first(&mut x, i)?;
                let mut attributes = window_attributes(w);
                attributes.push(ints(
                    "dilations",
                    &[w.height.dilation as i64, w.width.dilation as i64],
                ));
                x.name = self.g.op("MaxPool", &[&x.name], attributes);
                Ok(x)
            }
            Layer::AvgPool2d(w) => {
                self.make_channels_first(&mut x, i)?;
                if w.height.dilation != 1 || w.width.dilation != 1 {
                    return Err(layer_error(
                        i,
                        "average pooling with dilation has no ONNX opset 17 form",
                    ));
                }
                let mut attributes = window_attributes(w);
                // kiln, like TensorFlow, averages over the pixels inside the image only.
                attributes.push(int("count_include_pad", 0));
                x.name = self.g.op("AveragePool", &[&x.name], attributes);
                Ok(x)
            }
            Layer::GlobalAvgPool2d => {
                match x.layout {
                    Layout::ChannelsFirst => {
                        let pooled = self.g.op("GlobalAveragePool", &[&x.name], vec![]);
                        x.name = self.g.op("Flatten", &[&pooled], vec![int("axis", 1)]);
                    }
                    Layout::Kiln => {
                        let attributes = vec![ints("axes", &[1, 2]), int("keepdims", 0)];
                        x.name = self.g.op("ReduceMean", &[&x.name], attributes);
                    }
                }
                x.layout = Layout::Kiln;
                Ok(x)
            }
            Layer::BatchNorm(b) => {
                // Inference batch normalization is a per-channel affine map, computed here
                // exactly as kiln computes it: x · scale + shift.
                let params = &self.model.params;
                let mean = params.get(b.moving.mean).value.data();
                let variance = params.get(b.moving.variance).value.data();
                let gamma = b.gamma.map(|g| params.get(g).value.data());
                let beta = b.beta.map(|g| params.get(g).value.data());
                let channels = mean.len();
                let scale: Vec<f32> = (0..channels)
                    .map(|c| gamma.map_or(1.0, |g| g[c]) / (variance[c] + b.epsilon).sqrt())
                    .collect();
                let shift: Vec<f32> = (0..channels)
                    .map(|c| beta.map_or(0.0, |b| b[c]) - mean[c] * scale[c])
                    .collect();
                let dims = match x.layout {
                    Layout::Kiln => vec![channels],
                    Layout::ChannelsFirst => vec![channels, 1, 1],
                };
                let scale = self.g.floats("bn_scale", &dims, &scale);
                let shift = self.g.floats("bn_shift", &dims, &shift);
                let scaled = self.g.op("Mul", &[&x.name, &scale], vec![]);
                x.name = self.g.op("Add", &[&scaled, &shift], vec![]);
                Ok(x)
            }
            Layer::Reshape(shape) => {
                self.make_kiln_layout(&mut x);
                let dims: Vec<i64> = std::iter::once(-1)
                    .chain(shape.dims().iter().map(|&d| d as i64))
                    .collect();
                let target = self.g.int64s("shape", &dims);
                x.name = self.g.op("Reshape", &[&x.name, &target], vec![]);
                Ok(x)
            }
        }
    }

    /// The layer's input as its quantized layer reads it (a Q/DQ pair), or as it is.
    fn quantized_input(&mut self, i: usize, x: &Flow) -> Result<String> {
        match self.kernels.get(&i) {
            Some(q) => q.input(self.g, x),
            None => Ok(x.name.clone()),
        }
    }

    /// `a` applied to `x`; softmax needs kiln's layout (its axis is the last).
    pub(super) fn activate(&mut self, a: Activation, mut x: Flow) -> Result<Flow> {
        let name = x.name.clone();
        x.name = match a {
            Activation::Linear => return Ok(x),
            Activation::Relu => self.g.op("Relu", &[&name], vec![]),
            Activation::LeakyRelu => self.g.op("LeakyRelu", &[&name], vec![float("alpha", 0.2)]),
            Activation::Sigmoid => self.g.op("Sigmoid", &[&name], vec![]),
            Activation::Tanh => self.g.op("Tanh", &[&name], vec![]),
            Activation::Gelu => self.gelu(&name),
            Activation::Softmax | Activation::LogSoftmax => {
                self.make_kiln_layout(&mut x);
                let op = match a {
                    Activation::Softmax => "Softmax",
                    _ => "LogSoftmax",
                };
                self.g.op(op, &[&x.name], vec![int("axis", -1)])
            }
        };
        Ok(x)
    }

    /// The exact (erf) GELU kiln uses, x · ½ · (1 + erf(x / √2)): ONNX's own `Gelu` needs
    /// opset 20.
    fn gelu(&mut self, x: &str) -> String {
        let root2 = self.g.floats("sqrt2", &[], &[std::f32::consts::SQRT_2]);
        let (one, half) = (
            self.g.floats("one", &[], &[1.0]),
            self.g.floats("half", &[], &[0.5]),
        );
        let scaled = self.g.op("Div", &[x, &root2], vec![]);
        let erf = self.g.op("Erf", &[&scaled], vec![]);
        let cdf = self.g.op("Add", &[&erf, &one], vec![]);
        let half_x = self.g.op("Mul", &[x, &half], vec![]);
        self.g.op("Mul", &[&half_x, &cdf], vec![])
    }

    pub(super) fn make_kiln_layout(&mut self, x: &mut Flow) {
        if x.layout == Layout::ChannelsFirst {
            x.name = self
                .g
                .op("Transpose", &[&x.name], vec![ints("perm", &[0, 2, 3, 1])]);
            x.layout = Layout::Kiln;
        }
    }

    fn make_channels_first(&mut self, x: &mut Flow, layer: usize) -> Result<()> {
        if x.layout == Layout::ChannelsFirst {
            return Ok(());
        }
        if x.shape.rank() != 3 {
            return Err(layer_error(
                layer,
                &format!(
                    "expects (height, width, channels) images, got {:?}",
                    x.shape.dims()
                ),
            ));
        }
        x.name = self
            .g
            .op("Transpose", &[&x.name], vec![ints("perm", &[0, 3, 1, 2])]);
        x.layout = Layout::ChannelsFirst;
        Ok(())
    }
}

fn layer_error(index: usize, message: &str) -> Error {
    Error::unsupported(format!("ONNX export of layer {index}"), message.to_string())
}

/// `kernel_shape`, `strides` and `pads` (top, left, bottom, right) of a window.
fn window_attributes(w: &Window) -> Vec<crate::io::proto::onnx::AttributeProto> {
    let (top, bottom) = pads(&w.height);
    let (left, right) = pads(&w.width);
    vec![
        ints("kernel_shape", &[w.height.kernel as i64, w.width.kernel as i64]),
        ints("strides", &[w.height.stride as i64, w.width.stride as i64]),
        ints("pads", &[top, left, bottom, right]),
    ]
}

/// Padding before and after one axis: what `same` adds past the end is whatever the last
/// window reaches beyond the input.
fn pads(axis: &Axis) -> (i64, i64) {
    let span = (axis.kernel as i64 - 1) * axis.dilation as i64 + 1;
    let reach = (axis.output as i64 - 1) * axis.stride as i64 + span;
    let after = (reach - axis.input as i64 - axis.pad_before as i64).max(0);
    (axis.pad_before as i64, after)
}

/// kiln's (kh, kw, in, out) kernel as ONNX's (out, in, kh, kw).
pub(super) fn hwio_to_oihw<T: Copy + Default>(dims: &[usize], values: &[T]) -> Result<(Vec<usize>, Vec<T>)> {
    let [kh, kw, cin, cout] = *dims else {
        return Err(Error::shape(
            "a convolution kernel",
            "(kh, kw, in, out)",
            format!("{dims:?}"),
        ));
    };
    if values.len() != kh * kw * cin * cout {
        return Err(Error::shape(
            "a convolution kernel",
            format!("{} values", kh * kw * cin * cout),
            values.len(),
        ));
    }
    let mut out = vec![T::default(); values.len()];
    for y in 0..kh {
        for x in 0..kw {
            for i in 0..cin {
                for o in 0..cout {
                    out[((o * cin + i) * kh + y) * kw + x] = values[((y * kw + x) * cin + i) * cout + o];
                }
            }
        }
    }
    Ok((vec![cout, cin, kh, kw], out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_padding_puts_the_odd_pixel_after() {
        let axis = Axis::new(5, 2, 2, 1, crate::ops::conv2d::Padding::Same).unwrap();
        assert_eq!(pads(&axis), (0, 1));
        let axis = Axis::new(28, 3, 1, 1, crate::ops::conv2d::Padding::Same).unwrap();
        assert_eq!(pads(&axis), (1, 1));
        let axis = Axis::new(28, 3, 1, 1, crate::ops::conv2d::Padding::Valid).unwrap();
        assert_eq!(pads(&axis), (0, 0));
        // Valid with a stride that leaves the last column unread: no padding either.
        let axis = Axis::new(6, 3, 2, 1, crate::ops::conv2d::Padding::Valid).unwrap();
        assert_eq!(pads(&axis), (0, 0));
    }

    #[test]
    fn kernels_move_from_hwio_to_oihw() {
        // (kh, kw, in, out) = (1, 2, 2, 3), values numbered in kiln's order.
        let values: Vec<i32> = (0..12).collect();
        let (dims, oihw) = hwio_to_oihw(&[1, 2, 2, 3], &values).unwrap();
        assert_eq!(dims, [3, 2, 1, 2]);
        // out 0, in 0: taps x = 0, 1 are kiln's (0,0,0,0) = 0 and (0,1,0,0) = 6.
        assert_eq!(&oihw[..2], &[0, 6]);
        // out 2, in 1: (0,0,1,2) = 5 and (0,1,1,2) = 11.
        assert_eq!(&oihw[10..], &[5, 11]);
    }
}
