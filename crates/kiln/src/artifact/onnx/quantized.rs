//! An int8 layer in ONNX's QDQ form: the kernel stored as int8 with per-column scales and
//! a `DequantizeLinear` in front of the float operator, the input through a
//! `QuantizeLinear` → `DequantizeLinear` pair with the layer's own mapping. Runtimes that
//! fuse QDQ (ONNX Runtime does) run the layer in integers; others compute the same values in
//! float. A static model's input mapping is a constant; a dynamic model measures each
//! sample's range (each image's for a convolution) in the graph, as kiln does.

use super::graph::{int, ints, GraphBuilder};
use super::layers::{hwio_to_oihw, Flow};
use crate::error::Result;
use crate::io::proto::onnx::data_type;
use crate::quant::AffineU8;
use crate::tensor::Tensor;

/// One quantized Dense or Conv2D layer: its kernel's codes ((k, n) row-major, k = taps ·
/// channels for a convolution), column scales and input mapping (None: dynamic).
pub(super) struct QuantizedKernel<'a> {
    pub(super) codes: &'a [i8],
    pub(super) scales: &'a [f32],
    pub(super) input: Option<AffineU8>,
}

impl QuantizedKernel<'_> {
    /// The (k, n) kernel: int8 codes dequantized per column.
    pub(super) fn dense_weight(&self, g: &mut GraphBuilder) -> String {
        let n = self.scales.len();
        let codes = g.int8s("kernel_int8", &[self.codes.len() / n, n], self.codes);
        self.dequantized_weight(g, &codes, 1)
    }

    /// The (out, in, kh, kw) kernel of a convolution whose float kernel is `float`
    /// (for its dimensions): int8 codes dequantized per output channel.
    pub(super) fn conv_weight(&self, g: &mut GraphBuilder, float: &Tensor) -> Result<String> {
        let (dims, oihw) = hwio_to_oihw(float.dims(), self.codes)?;
        let codes = g.int8s("kernel_int8", &dims, &oihw);
        Ok(self.dequantized_weight(g, &codes, 0))
    }

    fn dequantized_weight(&self, g: &mut GraphBuilder, codes: &str, axis: i64) -> String {
        let n = self.scales.len();
        let scales = g.floats("kernel_scale", &[n], self.scales);
        let zero = g.tensor_of_zeros_i8(n);
        g.op(
            "DequantizeLinear",
            &[codes, &scales, &zero],
            vec![int("axis", axis)],
        )
    }

    /// The layer's input as its int8 codes stand for it.
    pub(super) fn input(&self, g: &mut GraphBuilder, x: &Flow) -> Result<String> {
        match self.input {
            Some(map) => {
                let scale = g.floats("input_scale", &[], &[map.scale]);
                let zero = g.uint8s("input_zero_point", &[], &[map.zero_point]);
                let q = g.op("QuantizeLinear", &[&x.name, &scale, &zero], vec![]);
                Ok(g.op("DequantizeLinear", &[&q, &scale, &zero], vec![]))
            }
            None => Ok(self.dynamic_input(g, x)),
        }
    }

    /// Dynamic range: a Dense layer codes each input vector (each sample after a Flatten,
    /// each pixel of an image otherwise) with its own mapping, a convolution each image.
    fn dynamic_input(&self, g: &mut GraphBuilder, x: &Flow) -> String {
        let image = x.layout == super::layers::Layout::ChannelsFirst;
        if image || x.shape.rank() == 1 {
            let axes: Vec<i64> = (1..=x.shape.rank() as i64).collect();
            return per_row_qdq(g, &x.name, &axes);
        }
        let k = x.shape.last() as i64;
        let rows_shape = g.int64s("rows", &[-1, k]);
        let rows = g.op("Reshape", &[&x.name, &rows_shape], vec![]);
        let coded = per_row_qdq(g, &rows, &[1]);
        let dims: Vec<i64> = std::iter::once(-1)
            .chain(x.shape.dims().iter().map(|&d| d as i64))
            .collect();
        let back = g.int64s("shape", &dims);
        g.op("Reshape", &[&coded, &back], vec![])
    }
}

/// Q/DQ of `x` with one mapping per index of axis 0, covering that slice's values over
/// `axes` widened to include 0 (kiln's `AffineU8::covering`): scale = (high − low) / 255,
/// zero point = round(−low / scale); scale 1 and zero point 0 for an all-zero slice.
fn per_row_qdq(g: &mut GraphBuilder, x: &str, axes: &[i64]) -> String {
    let reduce = vec![ints("axes", axes), int("keepdims", 0)];
    let (zero, top, one) = (
        g.floats("zero", &[], &[0.0]),
        g.floats("levels", &[], &[255.0]),
        g.floats("one", &[], &[1.0]),
    );
    let min = g.op("ReduceMin", &[x], reduce.clone());
    let max = g.op("ReduceMax", &[x], reduce);
    let low = g.op("Min", &[&min, &zero], vec![]);
    let high = g.op("Max", &[&max, &zero], vec![]);
    let range = g.op("Sub", &[&high, &low], vec![]);
    let spread = g.op("Greater", &[&range, &zero], vec![]);
    let step = g.op("Div", &[&range, &top], vec![]);
    let scale = g.op("Where", &[&spread, &step, &one], vec![]);
    let negative_low = g.op("Neg", &[&low], vec![]);
    let offset = g.op("Div", &[&negative_low, &scale], vec![]);
    let rounded = g.op("Round", &[&offset], vec![]);
    let clipped = g.op("Clip", &[&rounded, &zero, &top], vec![]);
    let zero_point_f = g.op("Where", &[&spread, &clipped, &zero], vec![]);
    let zero_point = g.op("Cast", &[&zero_point_f], vec![int("to", data_type::UINT8 as i64)]);
    let axis = vec![int("axis", 0)];
    let q = g.op("QuantizeLinear", &[x, &scale, &zero_point], axis.clone());
    g.op("DequantizeLinear", &[&q, &scale, &zero_point], axis)
}
