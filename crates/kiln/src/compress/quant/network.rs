//! The integer inference path of a quantized model: its Dense and Conv2D layers as packed
//! int8 kernels, a Dense-only chain run block by block of rows, static CNNs of
//! convolutions, pooling and Dense layers through `image_chain`, other models layer by layer.

use rayon::prelude::*;

use super::gemm_i8::{gemm_u8i8, PackedI8};
use super::image_chain::{self, Stage};
use super::params::{quantize_columns, AffineU8, Compression, QuantMode};
use crate::autograd::{Tape, Workspace};
use crate::error::{Error, Result};
use crate::nn::{Activation, Layer, Mode, Network, Sequential};
use crate::ops::conv2d::Window;
use crate::params::ParamStore;
use crate::tensor::Shape;

/// Metadata key under which a compressed model stores its [`Compression`].
pub const QUANTIZATION_KEY: &str = "kiln.compression";

/// Rows quantized, multiplied and requantized together (one task for the thread pool).
const BLOCK_ROWS: usize = 64;

/// How a static model's activation ranges are measured on the calibration sample.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Calibration {
    /// The smallest and largest value seen.
    MinMax,
    /// The given percentile of the values at the top (and its mirror at the bottom), so
    /// a few outliers do not stretch the range every other value is coded in.
    Percentile(f32),
}

impl Calibration {
    pub fn describe(&self) -> String {
        match self {
            Calibration::MinMax => "min_max".into(),
            Calibration::Percentile(p) => format!("percentile {p}"),
        }
    }
}

/// One Dense or Conv2D layer in int8.
#[derive(Debug, Clone)]
pub(super) struct QuantizedLayer {
    /// Index of the layer in the model.
    pub(super) layer: usize,
    /// The kernel's codes as stored, (k, n) row-major.
    codes: Vec<i8>,
    pub(super) weights: PackedI8,
    /// Per output: the kernel column's scale.
    pub(super) scales: Vec<f32>,
    pub(super) bias: Vec<f32>,
    pub(super) activation: Activation,
    /// The input's mapping (static mode); dynamic mode measures each row's (each image's
    /// for a convolution).
    pub(super) input: Option<AffineU8>,
    pub(super) window: Option<Window>,
}

/// A model's Dense and Conv2D layers quantized to int8, ready to predict.
#[derive(Debug, Clone)]
pub struct QuantizedNetwork {
    dense: Vec<QuantizedLayer>,
    /// How it was made (stored with the model).
    pub compression: Compression,
    input_shape: Shape,
    output_shape: Shape,
    /// Dense layers only: each block of rows runs the whole chain in int8, codes passed
    /// straight from layer to layer. Otherwise layer by layer, Dense and Conv2D in int8 and
    /// the others (pooling, batch normalization, …) on the float path.
    chain: bool,
    /// A static CNN of convolutions, max pooling and Dense layers: codes from layer to
    /// layer through all of them (see `image_chain`).
    image_chain: Option<Vec<Stage>>,
}

/// A Dense or Conv2D layer of the float model, as quantization reads it.
struct FloatLayer {
    /// Index of the layer in the model.
    layer: usize,
    /// (k, n) row-major.
    kernel: Vec<f32>,
    k: usize,
    n: usize,
    bias: Vec<f32>,
    activation: Activation,
    /// The window of a Conv2D layer (its kernel is (taps · channels, filters)).
    window: Option<Window>,
}

/// The Dense and Conv2D layers of `model` and whether the Dense-only chain can run it, or
/// why the model cannot be quantized.
fn quantizable_layers(model: &Sequential) -> Result<(Vec<FloatLayer>, bool)> {
    let mut found = Vec::new();
    let mut chain = true;
    for (i, layer) in model.network().layers.iter().enumerate() {
        let (kernel, bias, activation, window) = match layer {
            Layer::Dense {
                kernel,
                bias,
                activation,
                ..
            } => (*kernel, *bias, *activation, None),
            Layer::Conv2d(c) => {
                chain = false;
                (c.kernel, c.bias, c.activation, Some(c.window))
            }
            Layer::Flatten | Layer::Dropout { .. } | Layer::Reshape(_) => continue,
            _ => {
                chain = false;
                continue;
            }
        };
        let w = model.params.get(kernel);
        let n = *w.value.dims().last().expect("a kernel has axes");
        let k = w.value.numel() / n;
        // The Dense chain passes whole samples from layer to layer: a Dense layer applied
        // to each pixel (no Flatten before it) runs layer by layer instead.
        let input = match i {
            0 => model.input_shape().numel(),
            _ => model.network().shapes()[i - 1].numel(),
        };
        if window.is_none() && input != k {
            chain = false;
        }
        let b = bias.map_or(vec![0.0; n], |b| model.params.get(b).value.data().to_vec());
        found.push(FloatLayer {
            layer: i,
            kernel: w.value.data().to_vec(),
            k,
            n,
            bias: b,
            activation,
            window,
        });
    }
    if found.is_empty() {
        return Err(Error::unsupported(
            "quantization",
            "the model has no Dense or Conv2D layer to quantize",
        ));
    }
    // The chain applies activations between layers itself; the layer-wise path runs any
    // other activation on the float path.
    if found[..found.len() - 1]
        .iter()
        .any(|f| !simple_activation(f.activation))
    {
        chain = false;
    }
    Ok((found, chain))
}

/// An intermediate activation in place (the final one runs through the float path).
pub(super) fn activate(activation: Activation, v: f32) -> f32 {
    match activation {
        Activation::Relu => v.max(0.0),
        Activation::LeakyRelu => {
            if v > 0.0 {
                v
            } else {
                0.2 * v
            }
        }
        Activation::Sigmoid => 1.0 / (1.0 + (-v).exp()),
        Activation::Tanh => v.tanh(),
        _ => v,
    }
}

impl QuantizedNetwork {
    /// Quantizes `model`'s weights; in static mode, calibrates each Dense layer's input
    /// range on `samples` (rows of model input, the preprocessing already applied).
    pub fn quantize(
        model: &Sequential,
        mode: QuantMode,
        calibration: Calibration,
        samples: &[f32],
        source: &str,
    ) -> Result<QuantizedNetwork> {
        let (layers, chain) = quantizable_layers(model)?;
        let input_size = model.input_shape().numel();
        let ranges = match mode {
            QuantMode::Static => {
                if samples.is_empty() || !samples.len().is_multiple_of(input_size) {
                    return Err(Error::shape(
                        "static quantization's calibration samples",
                        format!("one or more samples of {input_size} values"),
                        format!("{} values", samples.len()),
                    ));
                }
                calibrate(model, &layers, samples, calibration)?
            }
            QuantMode::Dynamic => vec![None; layers.len()],
        };
        let mut dense = Vec::new();
        for (f, input) in layers.into_iter().zip(ranges) {
            let (codes, scales) = quantize_columns(&f.kernel, f.k, f.n);
            dense.push(QuantizedLayer::new(f, codes, scales, input));
        }
        let compression = Compression {
            mode,
            calibration: (mode == QuantMode::Static).then(|| calibration.describe()),
            calibration_samples: match mode {
                QuantMode::Static => samples.len() / input_size,
                QuantMode::Dynamic => 0,
            },
            inputs: dense.iter().map(|d| (d.layer, d.input)).collect(),
            source: source.to_string(),
        };
        let image_chain = (!chain)
            .then(|| image_chain::plan(model.network(), model.input_shape().numel(), &dense))
            .flatten();
        Ok(QuantizedNetwork {
            dense,
            compression,
            input_shape: model.input_shape(),
            output_shape: model.output_shape(),
            chain,
            image_chain,
        })
    }

    /// Per quantized layer: its index, kernel codes ((k, n) row-major) and column scales.
    pub fn kernels(&self) -> impl Iterator<Item = (usize, &[i8], &[f32])> {
        self.dense
            .iter()
            .map(|d| (d.layer, d.codes.as_slice(), d.scales.as_slice()))
    }

    /// Rebuilds the network of a saved compressed model: `model` holds its float
    /// architecture, `codes` each Dense layer's int8 kernel and column scales.
    pub fn from_saved(
        model: &Sequential,
        compression: Compression,
        codes: Vec<(usize, Vec<i8>, Vec<f32>)>,
    ) -> Result<QuantizedNetwork> {
        let (layers, chain) = quantizable_layers(model)?;
        if layers.len() != codes.len() || layers.len() != compression.inputs.len() {
            return Err(Error::mismatch(
                "quantized kernels",
                format!("one per Dense and Conv2D layer ({})", layers.len()),
                codes.len(),
            ));
        }
        let mut dense = Vec::new();
        let inputs = compression.inputs.clone();
        for ((f, (ci, q, scales)), (ii, input)) in layers.into_iter().zip(codes).zip(&inputs) {
            let (i, k, n) = (f.layer, f.k, f.n);
            if i != ci || i != *ii || q.len() != k * n || scales.len() != n {
                return Err(Error::shape(
                    format!("layer {i}'s stored int8 kernel"),
                    format!("{k} × {n} codes and {n} scales"),
                    format!("{} codes and {} scales", q.len(), scales.len()),
                ));
            }
            if let Some(bad) = scales.iter().find(|s| !(s.is_finite() && **s > 0.0)) {
                return Err(Error::Layer {
                    index: i,
                    kind: "quantized".into(),
                    message: format!("a kernel column scale is {bad}: expected a positive finite number"),
                });
            }
            if let Some(map) = input.filter(|m| !(m.scale.is_finite() && m.scale > 0.0)) {
                return Err(Error::Layer {
                    index: i,
                    kind: "quantized".into(),
                    message: format!(
                        "its input's int8 scale in `kiln.compression` is {}: expected a positive finite number",
                        map.scale
                    ),
                });
            }
            if compression.mode == QuantMode::Static && input.is_none() {
                return Err(Error::Layer {
                    index: i,
                    kind: "quantized".into(),
                    message: "a static model needs its input's scale".into(),
                });
            }
            dense.push(QuantizedLayer::new(f, q, scales, *input));
        }
        let image_chain = (!chain)
            .then(|| image_chain::plan(model.network(), model.input_shape().numel(), &dense))
            .flatten();
        Ok(QuantizedNetwork {
            dense,
            compression,
            input_shape: model.input_shape(),
            output_shape: model.output_shape(),
            chain,
            image_chain,
        })
    }

    pub fn mode(&self) -> QuantMode {
        self.compression.mode
    }

    /// Whether predict passes codes from layer to layer through a CNN's convolutions,
    /// pooling and Dense layers (a static model of only those), rather than layer by layer.
    pub fn runs_image_chain(&self) -> bool {
        self.image_chain.is_some()
    }

    /// Runs a CNN layer by layer even where the image chain could (to compare the two);
    /// `true` plans the chain again.
    pub fn set_image_chain(&mut self, model: &Sequential, enabled: bool) {
        self.image_chain = match enabled && !self.chain {
            true => image_chain::plan(model.network(), model.input_shape().numel(), &self.dense),
            false => None,
        };
    }

    /// Values per input sample.
    fn input_size(&self) -> usize {
        self.input_shape.numel()
    }

    /// The model's outputs for `rows` samples stored back to back in `x` (the final
    /// activation applied, as the float model's predict gives them). `network`, `params`
    /// and `workspace` are the float model's, for the layers that run in float.
    pub(crate) fn run(
        &self,
        network: &Network,
        params: &mut ParamStore,
        workspace: &mut Workspace,
        x: &[f32],
        rows: usize,
    ) -> Result<Vec<f32>> {
        if x.len() != rows * self.input_size() {
            return Err(Error::shape(
                "input values",
                format!("{rows} samples of {} values", self.input_size()),
                format!("{} values", x.len()),
            ));
        }
        if let Some(stages) = &self.image_chain {
            let y = image_chain::run(stages, &self.dense, self.input_size(), x, rows);
            return Ok(self.final_activation(y, rows));
        }
        match self.chain {
            true => self.run_chain(x, rows),
            false => self.run_layerwise(network, params, workspace, x, rows),
        }
    }

    /// [`QuantizedNetwork::run`] for a Dense-only chain.
    fn run_chain(&self, x: &[f32], rows: usize) -> Result<Vec<f32>> {
        let outputs = self.dense.last().expect("at least one layer").weights.n;
        let mut y = vec![0.0f32; rows * outputs];
        let (x_block, y_block) = (BLOCK_ROWS * self.input_size(), BLOCK_ROWS * outputs);
        if rows > BLOCK_ROWS {
            x.par_chunks(x_block)
                .zip(y.par_chunks_mut(y_block))
                .for_each(|(x, y)| self.forward_block(x, y));
        } else if rows > 0 {
            self.forward_block(x, &mut y);
        }
        Ok(self.final_activation(y, rows))
    }

    /// The last layer's activation (softmax, say) on its outputs, through the float path
    /// as the float model runs it.
    fn final_activation(&self, y: Vec<f32>, rows: usize) -> Vec<f32> {
        let last = self.dense.last().expect("at least one layer").activation;
        if last == Activation::Linear {
            return y;
        }
        let (mut params, mut workspace) = (ParamStore::new(), Workspace::new());
        let mut tape = Tape::inference(&mut params, &mut workspace);
        let v = tape.input(&y, self.output_shape.with_batch(rows));
        let out = last.apply(&mut tape, v);
        tape.value(out).to_vec()
    }

    /// Every layer for one block of rows: quantize, multiply, requantize, … , and the last
    /// layer's pre-activation outputs in `y`.
    fn forward_block(&self, x: &[f32], y: &mut [f32]) {
        let rows = x.len() / self.input_size();
        let first = &self.dense[0];
        let (mut codes, mut next_codes) = (Vec::new(), Vec::new());
        let (mut maps, mut next_maps) = (Vec::new(), Vec::new());
        quantize_rows(
            x,
            self.input_size(),
            first.weights.k_padded,
            first.input,
            &mut codes,
            &mut maps,
        );
        let (mut sums, mut row_out) = (Vec::new(), Vec::new());
        let mut rescale = Rescale::default();
        for (l, d) in self.dense.iter().enumerate() {
            let n = d.weights.n;
            sums.resize(rows * n, 0);
            gemm_u8i8(&codes, rows, &d.weights, &mut sums);
            let next = self.dense.get(l + 1);
            if let Some(next) = next {
                next_codes.clear();
                next_codes.resize(rows * next.weights.k_padded, 0);
                next_maps.clear();
            }
            row_out.resize(n, 0.0);
            rescale.made_for = None;
            for (r, map) in maps.iter().enumerate() {
                rescale.prepare(d, *map);
                let out: &mut [f32] = match next {
                    Some(_) => &mut row_out,
                    None => &mut y[r * n..(r + 1) * n],
                };
                rescale.apply(&sums[r * n..(r + 1) * n], &d.bias, out);
                let Some(next) = next else { continue };
                let to = &mut next_codes[r * next.weights.k_padded..][..next.weights.k_padded];
                activate_row(d.activation, out);
                let map = next.input.unwrap_or_else(|| own_range(out));
                quantize_into(out, map, to);
                next_maps.push(map);
            }
            if next.is_some() {
                std::mem::swap(&mut codes, &mut next_codes);
                std::mem::swap(&mut maps, &mut next_maps);
            }
        }
    }
}

/// Per output column, what turns an i32 sum back into a real value:
/// (sum − zero point · column sum) · (input scale · column scale) + bias.
#[derive(Default)]
pub(super) struct Rescale {
    /// The input mapping the arrays were made for (a static model's is the same for every
    /// row, so they are made once per layer and block).
    made_for: Option<(u32, u8)>,
    zero_sums: Vec<i32>,
    scales: Vec<f32>,
}

impl Rescale {
    pub(super) fn prepare(&mut self, d: &QuantizedLayer, map: AffineU8) {
        let key = (map.scale.to_bits(), map.zero_point);
        if self.made_for == Some(key) {
            return;
        }
        let zero = map.zero_point as i32;
        self.zero_sums.clear();
        self.zero_sums
            .extend(d.weights.column_sums.iter().map(|c| zero * c));
        self.scales.clear();
        self.scales.extend(d.scales.iter().map(|s| map.scale * s));
        self.made_for = Some(key);
    }

    pub(super) fn apply(&self, sums: &[i32], bias: &[f32], out: &mut [f32]) {
        let columns = out
            .iter_mut()
            .zip(sums)
            .zip(&self.zero_sums)
            .zip(&self.scales)
            .zip(bias);
        for ((((o, &s), &z), &m), &b) in columns {
            *o = (s - z) as f32 * m + b;
        }
    }
}

fn activate_row(activation: Activation, row: &mut [f32]) {
    match activation {
        Activation::Linear => {}
        Activation::Relu => row.iter_mut().for_each(|v| *v = v.max(0.0)),
        a => row.iter_mut().for_each(|v| *v = activate(a, *v)),
    }
}

/// The mapping covering one row's values (dynamic range).
fn own_range(row: &[f32]) -> AffineU8 {
    let (lo, hi) = row
        .iter()
        .fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), &v| {
            (lo.min(v), hi.max(v))
        });
    AffineU8::covering(lo, hi)
}

/// `row`'s codes under `map` into `to` (padded with the zero point past the row).
pub(super) fn quantize_into(row: &[f32], map: AffineU8, to: &mut [u8]) {
    let (inverse, shift) = (1.0 / map.scale, map.zero_point as f32 + 0.5);
    for (q, &v) in to.iter_mut().zip(row) {
        // max/min send NaN to 0 and keep the value in range, so the conversion needs no
        // saturation and the loop stays vector code; adding ½ then truncating rounds.
        #[allow(clippy::manual_clamp)] // clamp would keep a NaN, which must become 0 here
        let x = (v * inverse + shift).max(0.0).min(255.0);
        // SAFETY: x is finite and within 0..=255 (max/min above).
        *q = unsafe { x.to_int_unchecked::<i32>() } as u8;
    }
    to[row.len()..].fill(map.zero_point);
}

/// Codes for `x`'s rows (each `width` values) in rows of `padded` bytes, with the fixed
/// mapping or, without one, each row's own (dynamic range); `maps` gets each row's.
fn quantize_rows(
    x: &[f32],
    width: usize,
    padded: usize,
    fixed: Option<AffineU8>,
    codes: &mut Vec<u8>,
    maps: &mut Vec<AffineU8>,
) {
    let rows = x.len() / width;
    codes.clear();
    codes.resize(rows * padded, 0);
    maps.clear();
    for (row, out) in x.chunks_exact(width).zip(codes.chunks_exact_mut(padded)) {
        let map = fixed.unwrap_or_else(|| own_range(row));
        quantize_into(row, map, out);
        maps.push(map);
    }
}

/// The mapping covering `values` by the calibration rule.
fn range_of(values: &[f32], calibration: Calibration) -> AffineU8 {
    match calibration {
        Calibration::MinMax => {
            let (lo, hi) = values
                .iter()
                .fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), &v| {
                    (lo.min(v), hi.max(v))
                });
            AffineU8::covering(lo, hi)
        }
        Calibration::Percentile(p) => {
            let mut sorted = values.to_vec();
            sorted.sort_by(f32::total_cmp);
            let at = |q: f32| sorted[((q / 100.0) * (sorted.len() - 1) as f32).round() as usize];
            AffineU8::covering(at(100.0 - p), at(p))
        }
    }
}

impl QuantizedNetwork {
    /// [`QuantizedNetwork::run`] layer by layer: f32 activations between layers, each
    /// Dense or Conv2D layer quantizing its input and running in int8, the rest (pooling,
    /// batch normalization, flatten, …) through the float model's own layers.
    fn run_layerwise(
        &self,
        network: &Network,
        params: &mut ParamStore,
        workspace: &mut Workspace,
        x: &[f32],
        rows: usize,
    ) -> Result<Vec<f32>> {
        let mut values = x.to_vec();
        let mut shape = self.input_shape;
        for (i, layer) in network.layers.iter().enumerate() {
            let out_shape = network.shapes()[i];
            values = match self.dense.iter().find(|d| d.layer == i) {
                Some(q) => {
                    let y = match q.window {
                        Some(w) => q.conv_forward(&values, rows, &w),
                        None => q.dense_forward(&values),
                    };
                    // Activations the epilogue does not cover run on the float path.
                    match simple_activation(q.activation) {
                        true => y,
                        false => {
                            let mut tape = Tape::inference(params, workspace);
                            let v = tape.input(&y, out_shape.with_batch(rows));
                            let out = q.activation.apply(&mut tape, v);
                            tape.value(out).to_vec()
                        }
                    }
                }
                None => {
                    let mut tape = Tape::inference(params, workspace);
                    let v = tape.input(&values, shape.with_batch(rows));
                    let out = layer.forward(&mut tape, v, &mut Mode::Infer, false)?;
                    tape.value(out).to_vec()
                }
            };
            shape = out_shape;
        }
        Ok(values)
    }
}

pub(super) fn simple_activation(a: Activation) -> bool {
    matches!(
        a,
        Activation::Linear
            | Activation::Relu
            | Activation::LeakyRelu
            | Activation::Sigmoid
            | Activation::Tanh
    )
}

impl QuantizedLayer {
    /// `f` with its kernel's int8 `codes` and column `scales`, reading inputs coded by
    /// `input` (None: each row's own range).
    fn new(f: FloatLayer, codes: Vec<i8>, scales: Vec<f32>, input: Option<AffineU8>) -> QuantizedLayer {
        QuantizedLayer {
            layer: f.layer,
            weights: PackedI8::pack(&codes, f.k, f.n),
            codes,
            scales,
            bias: f.bias,
            activation: f.activation,
            input,
            window: f.window,
        }
    }

    /// Real-valued outputs (activation applied when it is a simple one) of the inputs in `x`.
    fn dense_forward(&self, x: &[f32]) -> Vec<f32> {
        let k = self.weights.k;
        // One row per input vector: a sample, or each pixel of an image when the layer is
        // applied along the last axis (no Flatten before it).
        let rows = x.len() / k;
        let mut y = vec![0.0f32; rows * self.weights.n];
        let per_block = |x: &[f32], y: &mut [f32]| {
            let (mut codes, mut maps) = (Vec::new(), Vec::new());
            quantize_rows(x, k, self.weights.k_padded, self.input, &mut codes, &mut maps);
            self.multiply_and_rescale(&codes, &maps, y);
        };
        x.par_chunks(BLOCK_ROWS * k)
            .zip(y.par_chunks_mut(BLOCK_ROWS * self.weights.n))
            .for_each(|(x, y)| per_block(x, y));
        y
    }

    /// A convolution image by image: the image's codes (its own range in dynamic mode),
    /// their im2col rows (padding coded as the zero point, i.e. real 0), the product with
    /// the (taps · channels, filters) kernel, and the rescale: (B, OH, OW, filters) in f32.
    fn conv_forward(&self, x: &[f32], images: usize, w: &Window) -> Vec<f32> {
        let image_len = w.input_pixels() * w.channels as usize;
        let out_len = w.output_pixels() * self.weights.n;
        let mut y = vec![0.0f32; images * out_len];
        x.par_chunks(image_len)
            .zip(y.par_chunks_mut(out_len))
            .for_each(|(image, out)| {
                let map = self.input.unwrap_or_else(|| own_range(image));
                let mut codes = vec![0u8; image_len];
                quantize_into(image, map, &mut codes);
                let mut cols = Vec::new();
                im2col_u8_into(&codes, w, self.weights.k_padded, map.zero_point, &mut cols);
                let maps = vec![map; w.output_pixels()];
                self.multiply_and_rescale(&cols, &maps, out);
            });
        y
    }

    /// `out` = rescaled (and simply activated) products of the code rows in `codes`.
    fn multiply_and_rescale(&self, codes: &[u8], maps: &[AffineU8], out: &mut [f32]) {
        let (rows, n) = (maps.len(), self.weights.n);
        let mut sums = vec![0i32; rows * n];
        gemm_u8i8(codes, rows, &self.weights, &mut sums);
        let mut rescale = Rescale::default();
        for (r, map) in maps.iter().enumerate() {
            rescale.prepare(self, *map);
            let row = &mut out[r * n..(r + 1) * n];
            rescale.apply(&sums[r * n..(r + 1) * n], &self.bias, row);
            if simple_activation(self.activation) {
                activate_row(self.activation, row);
            }
        }
    }
}

/// The im2col rows of one image's codes into `cols`: a row per output pixel, taps ×
/// channels bytes (zero padded to `padded`), positions outside the image coded `zero`.
pub(super) fn im2col_u8_into(image: &[u8], w: &Window, padded: usize, zero: u8, cols: &mut Vec<u8>) {
    let c = w.channels as usize;
    let (kw, out_w, in_w) = (
        w.width.kernel as usize,
        w.width.output as usize,
        w.width.input as usize,
    );
    let span = kw * c; // one kernel row's bytes, contiguous in the image when undilated
    cols.clear();
    cols.resize(w.output_pixels() * padded, zero);
    for oh in 0..w.height.output as usize {
        for i in 0..w.height.kernel as usize {
            let Some(ih) = w.height.source(oh, i) else {
                continue;
            };
            let source_row = &image[ih * in_w * c..][..in_w * c];
            for ow in 0..out_w {
                let row = &mut cols[(oh * out_w + ow) * padded + i * span..][..span];
                let first = (ow * w.width.stride as usize).checked_sub(w.width.pad_before as usize);
                match first {
                    // The whole kernel row inside the image, several channels: one copy.
                    Some(f) if c > 1 && w.width.dilation == 1 && f + kw <= in_w => {
                        row.copy_from_slice(&source_row[f * c..][..span]);
                    }
                    _ => {
                        for j in 0..kw {
                            let Some(iw) = w.width.source(ow, j) else { continue };
                            match c {
                                // A grey image: one byte per tap, no call into memcpy for it.
                                1 => row[j] = source_row[iw],
                                _ => row[j * c..][..c].copy_from_slice(&source_row[iw * c..][..c]),
                            }
                        }
                    }
                }
            }
        }
    }
}

/// Each quantized layer's input mapping, from the float model run layer by layer over the
/// samples.
fn calibrate(
    model: &Sequential,
    layers: &[FloatLayer],
    samples: &[f32],
    calibration: Calibration,
) -> Result<Vec<Option<AffineU8>>> {
    let network = model.network();
    let rows = samples.len() / model.input_shape().numel();
    let mut params = model.params.clone();
    let mut workspace = Workspace::new();
    let mut values = samples.to_vec();
    let mut shape = model.input_shape();
    let mut maps = Vec::new();
    for (i, layer) in network.layers.iter().enumerate() {
        if layers.iter().any(|f| f.layer == i) {
            maps.push(Some(range_of(&values, calibration)));
        }
        let mut tape = Tape::inference(&mut params, &mut workspace);
        let v = tape.input(&values, shape.with_batch(rows));
        let out = layer.forward(&mut tape, v, &mut Mode::Infer, false)?;
        values = tape.value(out).to_vec();
        shape = network.shapes()[i];
    }
    Ok(maps)
}
