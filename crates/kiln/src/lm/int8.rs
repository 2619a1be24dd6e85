//! int8 weights for a GPT's linear layers: each block's q|k|v, attention projection and MLP
//! kernels stored as one signed byte per weight with a scale per output column
//! (symmetric: weight ≈ code × scale, codes in −127 … 127), a quarter of the bytes a
//! token's pass reads. Activations stay f32: decoding one sequence is bound by reading the
//! weights, not by arithmetic.
//!
//! The inference pass computes each output as `(Σ x[k] · code[k, j]) · scale[j] + bias[j]`,
//! the sum in input order from zero; the training forward (evaluation, fine-tuning) uses
//! the dequantized weights `code × scale`, the same function up to rounding.

use std::ops::Range;

use super::cached_forward::{by_panels, PANEL_COLUMNS, ROWS_PER_STREAM, TILE_ROWS};
use super::gpt::Gpt;
use crate::kernels::lanes::axpy;
use crate::params::ParamId;

/// One kernel (inputs × outputs) in int8 codes with a scale per output column.
#[derive(Debug, Clone, PartialEq)]
pub struct Int8Kernel {
    /// Row-major, as the float kernel.
    pub codes: Vec<i8>,
    pub scales: Vec<f32>,
}

impl Int8Kernel {
    /// Per column: scale = max |w| / 127 (1 for a column of zeros), code = w / scale
    /// rounded to the nearest integer.
    pub fn quantize(kernel: &[f32], outputs: usize) -> Int8Kernel {
        let mut largest = vec![0.0f32; outputs];
        for row in kernel.chunks_exact(outputs) {
            for (m, &w) in largest.iter_mut().zip(row) {
                *m = m.max(w.abs());
            }
        }
        let scales: Vec<f32> = largest
            .iter()
            .map(|&m| if m > 0.0 && m.is_finite() { m / 127.0 } else { 1.0 })
            .collect();
        let codes = kernel
            .chunks_exact(outputs)
            .flat_map(|row| {
                row.iter()
                    .zip(&scales)
                    .map(|(&w, &s)| (w / s).round().clamp(-127.0, 127.0) as i8)
            })
            .collect();
        Int8Kernel { codes, scales }
    }

    /// code × scale, the weights the training forward sees.
    pub fn dequantized(&self) -> Vec<f32> {
        let outputs = self.scales.len();
        self.codes
            .chunks_exact(outputs)
            .flat_map(|row| row.iter().zip(&self.scales).map(|(&c, &s)| c as f32 * s))
            .collect()
    }
}

/// The four int8 kernels of every block, in block order: q|k|v, attention projection,
/// MLP in, MLP out.
#[derive(Debug, Clone, PartialEq)]
pub struct Int8Weights {
    pub blocks: Vec<[Int8Kernel; 4]>,
}

/// The parameter names of a block's four kernels, in `Int8Weights` order.
pub fn kernel_names(layer: usize) -> [String; 4] {
    ["attention.qkv", "attention.proj", "mlp.fc", "mlp.proj"].map(|p| format!("blocks.{layer}.{p}.kernel"))
}

impl Int8Weights {
    /// Quantizes `model`'s block kernels.
    pub fn quantize(model: &Gpt) -> Int8Weights {
        let value = |id: ParamId| model.params.get(id).value.data();
        let blocks = model
            .layout
            .blocks
            .iter()
            .map(|b| {
                [b.qkv.0, b.proj.0, b.fc.0, b.fc_out.0].map(|kernel| {
                    let outputs = model.params.get(kernel).value.dims()[1];
                    Int8Kernel::quantize(value(kernel), outputs)
                })
            })
            .collect();
        Int8Weights { blocks }
    }

    /// Sets `model`'s block kernels to these weights dequantized, so that its training
    /// forward computes what the int8 pass computes, up to rounding.
    pub fn apply_to(&self, model: &mut Gpt) {
        let ids: Vec<[ParamId; 4]> = model
            .layout
            .blocks
            .iter()
            .map(|b| [b.qkv.0, b.proj.0, b.fc.0, b.fc_out.0])
            .collect();
        for (kernels, ids) in self.blocks.iter().zip(ids) {
            for (kernel, id) in kernels.iter().zip(ids) {
                let values = kernel.dequantized();
                model.params.get_mut(id).value.data_mut().copy_from_slice(&values);
            }
        }
    }
}

/// `out = (x · codes) · scales + bias` row by row (x: rows × inputs): each output the sum
/// of `x[k] · code[k, j]` in input order from zero, times its column's scale, plus its
/// bias, whichever rows share the pass.
pub(crate) fn linear_rows(x: &[f32], inputs: usize, kernel: &Int8Kernel, bias: &[f32], out: &mut [f32]) {
    let (rows, outputs) = (x.len() / inputs, bias.len());
    if rows <= ROWS_PER_STREAM || outputs < PANEL_COLUMNS {
        int8_columns(x, inputs, kernel, bias, 0..outputs, out);
        return;
    }
    by_panels(rows, outputs, out, |_, cols, panel| {
        if cols.len() < PANEL_COLUMNS {
            int8_columns(x, inputs, kernel, bias, cols, panel);
        } else {
            int8_panel(x, inputs, kernel, bias, cols.start, panel);
        }
    });
}

crate::kernels::simd::widest_simd! {
    /// Columns `cols` of the product into `out` (rows × cols.len()), four rows sharing
    /// each kernel row's codes, widened to f32 once.
    fn int8_columns(x: &[f32], inputs: usize, kernel: &Int8Kernel, bias: &[f32], cols: Range<usize>, out: &mut [f32]) => int8_columns_with
}

#[inline(always)]
fn int8_columns_with(
    x: &[f32],
    inputs: usize,
    kernel: &Int8Kernel,
    bias: &[f32],
    cols: Range<usize>,
    out: &mut [f32],
) {
    let (outputs, n) = (bias.len(), cols.len());
    let mut w = vec![0.0f32; n];
    for (x4, out4) in x.chunks(TILE_ROWS * inputs).zip(out.chunks_mut(TILE_ROWS * n)) {
        out4.fill(0.0);
        for (k, codes) in kernel.codes.chunks_exact(outputs).enumerate() {
            for (w, &c) in w.iter_mut().zip(&codes[cols.clone()]) {
                *w = c as f32;
            }
            for (xr, o) in x4.chunks_exact(inputs).zip(out4.chunks_exact_mut(n)) {
                axpy(o, xr[k], &w);
            }
        }
        for o in out4.chunks_exact_mut(n) {
            let (scales, bias) = (&kernel.scales[cols.clone()], &bias[cols.clone()]);
            for ((o, &s), &b) in o.iter_mut().zip(scales).zip(bias) {
                *o = *o * s + b;
            }
        }
    }
}

crate::kernels::simd::widest_simd! {
    /// Columns `first..first + 64` into `panel` (rows × 64), four rows of sums in
    /// registers; the same arithmetic as `int8_columns`, which takes the rows left over.
    fn int8_panel(x: &[f32], inputs: usize, kernel: &Int8Kernel, bias: &[f32], first: usize, panel: &mut [f32]) => int8_panel_with
}

#[inline(always)]
fn int8_panel_with(
    x: &[f32],
    inputs: usize,
    kernel: &Int8Kernel,
    bias: &[f32],
    first: usize,
    panel: &mut [f32],
) {
    const N: usize = PANEL_COLUMNS;
    let outputs = bias.len();
    let tiles = x.len() / inputs / TILE_ROWS;
    let (scales, bias_n) = (&kernel.scales[first..first + N], &bias[first..first + N]);
    for (x4, out4) in x
        .chunks_exact(TILE_ROWS * inputs)
        .zip(panel.chunks_exact_mut(TILE_ROWS * N))
        .take(tiles)
    {
        let mut sums = [[0.0f32; N]; TILE_ROWS];
        for k in 0..inputs {
            let codes = &kernel.codes[k * outputs + first..][..N];
            let w: [f32; N] = std::array::from_fn(|j| codes[j] as f32);
            for (r, sum) in sums.iter_mut().enumerate() {
                let v = x4[r * inputs + k];
                for (s, w) in sum.iter_mut().zip(&w) {
                    *s += v * w;
                }
            }
        }
        for (out, sum) in out4.chunks_exact_mut(N).zip(&sums) {
            for (((o, &s), &scale), &b) in out.iter_mut().zip(sum).zip(scales).zip(bias_n) {
                *o = s * scale + b;
            }
        }
    }
    let done = tiles * TILE_ROWS;
    int8_columns_with(
        &x[done * inputs..],
        inputs,
        kernel,
        bias,
        first..first + N,
        &mut panel[done * N..],
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_and_scales_follow_each_columns_largest_weight() {
        // Columns: largest |w| 2.54, 0 (all zero), 1.27.
        let kernel = [2.54, 0.0, -1.27, -1.0, 0.0, 0.635];
        let q = Int8Kernel::quantize(&kernel, 3);
        assert_eq!(q.scales, [0.02, 1.0, 0.01]);
        assert_eq!(q.codes, [127, 0, -127, -50, 0, 64]);
        let back = q.dequantized();
        for (w, b) in kernel.iter().zip(&back) {
            assert!((w - b).abs() <= 0.5 * 0.02 + 1e-6, "{w} vs {b}");
        }
    }

    /// Many rows by panels equal each row alone, bit for bit, and the product is close to
    /// the float product of the dequantized kernel.
    #[test]
    fn the_int8_product_does_not_depend_on_the_batch() {
        let mut rng = crate::rng::Rng::new(9);
        let (inputs, outputs, rows) = (29, 2 * PANEL_COLUMNS + 7, 11);
        let mut random = |n: usize| (0..n).map(|_| rng.next_f32() - 0.5).collect::<Vec<f32>>();
        let (x, float, bias) = (random(rows * inputs), random(inputs * outputs), random(outputs));
        let kernel = Int8Kernel::quantize(&float, outputs);
        let mut all = vec![0.0; rows * outputs];
        linear_rows(&x, inputs, &kernel, &bias, &mut all);
        let dequantized = kernel.dequantized();
        for (r, row) in all.chunks_exact(outputs).enumerate() {
            let xr = &x[r * inputs..][..inputs];
            let mut alone = vec![0.0; outputs];
            linear_rows(xr, inputs, &kernel, &bias, &mut alone);
            assert_eq!(row, &alone[..], "row {r}");
            for (j, &y) in row.iter().enumerate() {
                let reference: f32 = bias[j]
                    + (0..inputs)
                        .map(|k| xr[k] * dequantized[k * outputs + j])
                        .sum::<f32>();
                assert!(
                    (y - reference).abs() < 1e-5,
                    "row {r} column {j}: {y} vs {reference}"
                );
            }
        }
    }
}
