//! The integer inference path of a quantized model: its Dense layers as packed int8
//! kernels, run block by block of rows.

use rayon::prelude::*;

use super::gemm_i8::{gemm_u8i8, PackedI8};
use super::params::{quantize_columns, AffineU8, Compression, QuantMode};
use crate::autograd::{Tape, Workspace};
use crate::error::{Error, Result};
use crate::nn::{Activation, Layer, LayerSpec, Sequential};
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

/// One Dense layer in int8.
#[derive(Debug, Clone)]
struct QuantizedDense {
    /// Index of the layer in the model.
    layer: usize,
    /// The kernel's codes as stored, (k, n) row-major.
    codes: Vec<i8>,
    weights: PackedI8,
    /// Per output: the kernel column's scale.
    scales: Vec<f32>,
    bias: Vec<f32>,
    activation: Activation,
    /// The input's mapping (static mode); dynamic mode measures each row's.
    input: Option<AffineU8>,
}

/// A model's Dense layers quantized to int8, ready to predict.
#[derive(Debug, Clone)]
pub struct QuantizedNetwork {
    dense: Vec<QuantizedDense>,
    /// How it was made (stored with the model).
    pub compression: Compression,
    mode: QuantMode,
    input_size: usize,
    output_shape: Shape,
}

/// A Dense layer of the float model, as quantization reads it.
struct FloatDense {
    /// Index of the layer in the model.
    layer: usize,
    /// (k, n) row-major.
    kernel: Vec<f32>,
    k: usize,
    n: usize,
    bias: Vec<f32>,
    activation: Activation,
}

/// The Dense layers of `model`, or why the model cannot be quantized.
fn dense_layers(model: &Sequential) -> Result<Vec<FloatDense>> {
    let mut found = Vec::new();
    for (i, (layer, spec)) in model.network().layers.iter().zip(model.specs()).enumerate() {
        match (layer, spec) {
            (Layer::Dense { kernel, bias, activation, .. }, LayerSpec::Dense(d)) => {
                let w = model.params.get(*kernel);
                let (k, n) = (w.value.dims()[0], d.units);
                let b = bias.map_or(vec![0.0; n], |b| model.params.get(b).value.data().to_vec());
                found.push(FloatDense {
                    layer: i,
                    kernel: w.value.data().to_vec(),
                    k,
                    n,
                    bias: b,
                    activation: *activation,
                });
            }
            (Layer::Flatten | Layer::Dropout { .. } | Layer::Reshape(_), _) => {}
            (_, spec) => {
                return Err(Error::Value(format!(
                    "layer {i} ({}): int8 quantization covers Dense layers (with Flatten, Reshape and Dropout between them); this layer is not supported yet",
                    spec.type_name()
                )))
            }
        }
    }
    let last = found.len().saturating_sub(1);
    for (
        position,
        FloatDense {
            layer: i, activation, ..
        },
    ) in found.iter().enumerate()
    {
        let inner_ok = matches!(
            activation,
            Activation::Linear
                | Activation::Relu
                | Activation::LeakyRelu
                | Activation::Sigmoid
                | Activation::Tanh
        );
        if position != last && !inner_ok {
            return Err(Error::Value(format!(
                "layer {i}: activation {activation:?} between quantized layers is not supported (relu, leaky_relu, sigmoid, tanh or linear)"
            )));
        }
    }
    if found.is_empty() {
        return Err(Error::Value("the model has no Dense layer to quantize".into()));
    }
    Ok(found)
}

/// An intermediate activation in place (the final one runs through the float path).
fn activate(activation: Activation, v: f32) -> f32 {
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
        let layers = dense_layers(model)?;
        let input_size = model.input_shape().numel();
        let ranges = match mode {
            QuantMode::Static => {
                if samples.is_empty() || !samples.len().is_multiple_of(input_size) {
                    return Err(Error::Value(format!(
                        "static quantization needs calibration samples: got {} values for samples of {input_size}",
                        samples.len()
                    )));
                }
                calibrate(&layers, samples, input_size, calibration)
            }
            QuantMode::Dynamic => vec![None; layers.len()],
        };
        let mut dense = Vec::new();
        for (f, input) in layers.into_iter().zip(ranges) {
            let (q, scales) = quantize_columns(&f.kernel, f.k, f.n);
            dense.push(QuantizedDense {
                layer: f.layer,
                weights: PackedI8::pack(&q, f.k, f.n),
                codes: q,
                scales,
                bias: f.bias,
                activation: f.activation,
                input,
            });
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
        Ok(QuantizedNetwork {
            dense,
            compression,
            mode,
            input_size,
            output_shape: model.output_shape(),
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
        let layers = dense_layers(model)?;
        if layers.len() != codes.len() || layers.len() != compression.inputs.len() {
            return Err(Error::Value(format!(
                "{} Dense layers but {} quantized kernels",
                layers.len(),
                codes.len()
            )));
        }
        let mut dense = Vec::new();
        let inputs = compression.inputs.clone();
        for ((f, (ci, q, scales)), (ii, input)) in layers.into_iter().zip(codes).zip(&inputs) {
            let (i, k, n) = (f.layer, f.k, f.n);
            if i != ci || i != *ii || q.len() != k * n || scales.len() != n {
                return Err(Error::Value(format!(
                    "layer {i}: the stored int8 kernel does not fit"
                )));
            }
            if compression.mode == QuantMode::Static && input.is_none() {
                return Err(Error::Value(format!(
                    "layer {i}: a static model needs its input's scale"
                )));
            }
            dense.push(QuantizedDense {
                layer: i,
                weights: PackedI8::pack(&q, k, n),
                codes: q,
                scales,
                bias: f.bias,
                activation: f.activation,
                input: *input,
            });
        }
        Ok(QuantizedNetwork {
            dense,
            mode: compression.mode,
            compression,
            input_size: model.input_shape().numel(),
            output_shape: model.output_shape(),
        })
    }

    pub fn mode(&self) -> QuantMode {
        self.mode
    }

    /// The model's outputs for `rows` samples stored back to back in `x` (the final
    /// activation applied, as the float model's predict gives them).
    pub fn predict(&self, x: &[f32], rows: usize) -> Result<Vec<f32>> {
        if x.len() != rows * self.input_size {
            return Err(Error::Shape(format!(
                "{} input values do not make {rows} samples of {}",
                x.len(),
                self.input_size
            )));
        }
        let outputs = self.dense.last().expect("at least one layer").weights.n;
        let mut y = vec![0.0f32; rows * outputs];
        let (x_block, y_block) = (BLOCK_ROWS * self.input_size, BLOCK_ROWS * outputs);
        if rows > BLOCK_ROWS {
            x.par_chunks(x_block)
                .zip(y.par_chunks_mut(y_block))
                .for_each(|(x, y)| self.forward_block(x, y));
        } else if rows > 0 {
            self.forward_block(x, &mut y);
        }
        let last = self.dense.last().expect("at least one layer").activation;
        if last == Activation::Linear {
            return Ok(y);
        }
        // The final activation (softmax) through the float path, as the float model runs it.
        let (mut params, mut workspace) = (ParamStore::new(), Workspace::new());
        let mut tape = Tape::inference(&mut params, &mut workspace);
        let v = tape.input(&y, self.output_shape.with_batch(rows));
        let out = last.apply(&mut tape, v);
        Ok(tape.value(out).to_vec())
    }

    /// Every layer for one block of rows: quantize, multiply, requantize, … , and the last
    /// layer's pre-activation outputs in `y`.
    fn forward_block(&self, x: &[f32], y: &mut [f32]) {
        let rows = x.len() / self.input_size;
        let first = &self.dense[0];
        let (mut codes, mut next_codes) = (Vec::new(), Vec::new());
        let (mut maps, mut next_maps) = (Vec::new(), Vec::new());
        quantize_rows(
            x,
            self.input_size,
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
struct Rescale {
    /// The input mapping the arrays were made for (a static model's is the same for every
    /// row, so they are made once per layer and block).
    made_for: Option<(u32, u8)>,
    zero_sums: Vec<i32>,
    scales: Vec<f32>,
}

impl Rescale {
    fn prepare(&mut self, d: &QuantizedDense, map: AffineU8) {
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

    fn apply(&self, sums: &[i32], bias: &[f32], out: &mut [f32]) {
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
fn quantize_into(row: &[f32], map: AffineU8, to: &mut [u8]) {
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

/// Each Dense layer's input mapping, from a float forward pass over the samples.
fn calibrate(
    layers: &[FloatDense],
    samples: &[f32],
    input_size: usize,
    calibration: Calibration,
) -> Vec<Option<AffineU8>> {
    let rows = samples.len() / input_size;
    let mut x = samples.to_vec();
    let mut maps = Vec::new();
    for FloatDense {
        kernel: w,
        k,
        n,
        bias,
        activation,
        ..
    } in layers
    {
        maps.push(Some(range_of(&x, calibration)));
        let mut y = vec![0.0f32; rows * n];
        y.par_chunks_mut(*n).zip(x.par_chunks(*k)).for_each(|(out, row)| {
            out.copy_from_slice(bias);
            for (i, &v) in row.iter().enumerate() {
                if v != 0.0 {
                    out.iter_mut()
                        .zip(&w[i * n..(i + 1) * n])
                        .for_each(|(o, w)| *o += v * w);
                }
            }
            activate_row(*activation, out);
        });
        x = y;
    }
    maps
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
