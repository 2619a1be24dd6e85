//! Layer normalization over the last axis (Ba et al.; PyTorch's `nn.LayerNorm`, Keras's
//! `LayerNormalization`): `y = (x − μ)/√(σ² + ε) · γ + β`, with μ and σ² the row's mean
//! and (biased) variance. Unlike batch normalization there are no running statistics: a
//! row is normalized by itself in training and inference alike.

use crate::autograd::{Op, Tape, Var};
use crate::error::{Error, Result};

use rayon::prelude::*;

use super::{lanes, parallel};

impl Tape<'_> {
    /// Normalizes each row of `x` (… × width) and applies the width-long `gamma` and `beta`.
    pub fn layer_norm(&mut self, x: Var, gamma: Var, beta: Var, epsilon: f32) -> Result<Var> {
        let shape = self.shape(x);
        let width = shape.last();
        for (name, v) in [("gamma", gamma), ("beta", beta)] {
            let s = self.shape(v);
            if s.rank() != 1 || s.dims()[0] != width {
                return Err(Error::shape(
                    format!("layer_norm {name}"),
                    format!("[{width}] to match {shape}"),
                    s,
                ));
            }
        }
        let rows = shape.rows();
        let mut y = self.alloc(shape.numel());
        // Per row: mean and 1/σ, kept for backward.
        let mut stats = self.alloc(2 * rows);
        let (xs, g, b) = (self.value(x), self.value(gamma), self.value(beta));
        normalize_rows(xs, g, b, epsilon, width, &mut y, &mut stats);
        let out = self.push_op(shape, y, Op::LayerNorm { x, gamma, beta }, &[x, gamma, beta]);
        if self.requires_grad(out) {
            self.set_saved(out, stats);
        } else {
            self.recycle(stats);
        }
        Ok(out)
    }
}

fn normalize_rows(
    x: &[f32],
    gamma: &[f32],
    beta: &[f32],
    eps: f32,
    width: usize,
    y: &mut [f32],
    stats: &mut [f32],
) {
    let rows_per_task = (PAR_ROWS_ELEMENTS / width).max(1);
    y.par_chunks_mut(rows_per_task * width)
        .zip(stats.par_chunks_mut(rows_per_task * 2))
        .zip(x.par_chunks(rows_per_task * width))
        .for_each(|((y, stats), x)| {
            for ((x, y), st) in x
                .chunks_exact(width)
                .zip(y.chunks_exact_mut(width))
                .zip(stats.chunks_exact_mut(2))
            {
                let (mean, inv_std) = row_moments(x, eps);
                normalize_row(x, mean, inv_std, gamma, beta, y);
                st[0] = mean;
                st[1] = inv_std;
            }
        });
}

/// Rows are split across the pool in blocks of about this many values: below it a
/// hand-off costs more than the rows take.
const PAR_ROWS_ELEMENTS: usize = 1 << 14;

/// `y = (x − mean)·inv_std·γ + β` for one row.
#[inline]
pub(crate) fn normalize_row(x: &[f32], mean: f32, inv_std: f32, gamma: &[f32], beta: &[f32], y: &mut [f32]) {
    for (((y, &x), &g), &b) in y.iter_mut().zip(x).zip(gamma).zip(beta) {
        *y = (x - mean) * inv_std * g + b;
    }
}

/// The row's mean and 1/√(variance + ε), in two passes (a one-pass Σx² loses precision
/// when the mean is large next to the spread).
pub(crate) fn row_moments(x: &[f32], eps: f32) -> (f32, f32) {
    let n = x.len() as f32;
    let mean = lanes::sum(x) / n;
    let mut lanes = [0.0f32; 8];
    let chunks = x.chunks_exact(8);
    let mut var: f32 = chunks.remainder().iter().map(|&v| (v - mean) * (v - mean)).sum();
    for c in chunks {
        for l in 0..8 {
            lanes[l] += (c[l] - mean) * (c[l] - mean);
        }
    }
    var += lanes.iter().sum::<f32>();
    (mean, 1.0 / (var / n + eps).sqrt())
}

/// (mean of d, mean of d·x̂) over a row, with d = g·γ: eight partial sums each, so the
/// loop vectorizes.
fn gradient_means(x: &[f32], g: &[f32], gamma: &[f32], mean: f32, inv_std: f32) -> (f32, f32) {
    let (mut sum_d, mut sum_dxh) = ([0.0f32; 8], [0.0f32; 8]);
    let whole = x.len() - x.len() % 8;
    for ((x, g), gm) in x[..whole]
        .chunks_exact(8)
        .zip(g.chunks_exact(8))
        .zip(gamma.chunks_exact(8))
    {
        for l in 0..8 {
            let d = g[l] * gm[l];
            sum_d[l] += d;
            sum_dxh[l] += d * (x[l] - mean) * inv_std;
        }
    }
    let (mut d, mut dxh) = (sum_d.iter().sum::<f32>(), sum_dxh.iter().sum::<f32>());
    for ((&x, &g), &gm) in x[whole..].iter().zip(&g[whole..]).zip(&gamma[whole..]) {
        d += g * gm;
        dxh += g * gm * (x - mean) * inv_std;
    }
    let n = x.len() as f32;
    (d / n, dxh / n)
}

/// With x̂ = (x − μ)/σ and d = g·γ: `dx = (d − mean(d) − x̂·mean(d·x̂)) / σ`,
/// `dγ += Σ_rows g·x̂`, `dβ += Σ_rows g`.
pub(crate) fn backward(tape: &mut Tape, x: Var, gamma: Var, beta: Var, out: Var, g: &[f32]) {
    let width = tape.shape(x).last();
    tape.accumulate(x, |t, dx| {
        let (xs, gm, stats) = (t.value(x), t.value(gamma), t.saved(out));
        parallel::for_each_row(dx, width, |r, dx| {
            let (mean, inv_std) = (stats[2 * r], stats[2 * r + 1]);
            let (x, g) = (&xs[r * width..][..width], &g[r * width..][..width]);
            let (mean_d, mean_dxh) = gradient_means(x, g, gm, mean, inv_std);
            for (((dx, &x), &g), &gm) in dx.iter_mut().zip(x).zip(g).zip(gm) {
                let x_hat = (x - mean) * inv_std;
                *dx += (g * gm - mean_d - x_hat * mean_dxh) * inv_std;
            }
        });
    });
    tape.accumulate(gamma, |t, dgamma| {
        let (xs, stats) = (t.value(x), t.saved(out));
        for (r, (x, g)) in xs.chunks_exact(width).zip(g.chunks_exact(width)).enumerate() {
            let (mean, inv_std) = (stats[2 * r], stats[2 * r + 1]);
            for ((d, &x), &g) in dgamma.iter_mut().zip(x).zip(g) {
                *d += g * (x - mean) * inv_std;
            }
        }
    });
    super::bias::bias_backward(tape, beta, g);
}

#[cfg(test)]
mod tests {
    use crate::autograd::{Tape, Workspace};
    use crate::ops::gradcheck;
    use crate::params::ParamStore;
    use crate::tensor::Shape;

    #[test]
    fn rows_have_zero_mean_and_unit_variance_before_the_affine() {
        let (mut params, mut ws) = (ParamStore::new(), Workspace::new());
        let mut tape = Tape::inference(&mut params, &mut ws);
        let x = tape.input(&[1.0, 2.0, 3.0, 4.0, 10.0, 10.0, 10.0, 14.0], Shape::new(&[2, 4]));
        let gamma = tape.input(&[1.0; 4], Shape::new(&[4]));
        let beta = tape.input(&[0.0; 4], Shape::new(&[4]));
        let y = tape.layer_norm(x, gamma, beta, 0.0).unwrap();
        // Row 1: mean 2.5, variance 1.25.
        let s = 1.25f32.sqrt();
        let expected = [-1.5 / s, -0.5 / s, 0.5 / s, 1.5 / s];
        for (a, b) in tape.value(y)[..4].iter().zip(expected) {
            assert!((a - b).abs() < 1e-6);
        }
        // Row 2: mean 11, variance 3: (−1, −1, −1, 3)/√3.
        assert!((tape.value(y)[7] - 3.0 / 3f32.sqrt()).abs() < 1e-6);
    }

    #[test]
    fn gradient_check() {
        gradcheck::check(
            "layer_norm",
            &[
                (&[3, 5], gradcheck::random(15, 11)),
                (&[5], gradcheck::random(5, 12)),
                (&[5], gradcheck::random(5, 13)),
            ],
            |t, v| t.layer_norm(v[0], v[1], v[2], 1e-5).unwrap(),
        );
    }

    #[test]
    fn a_gamma_of_the_wrong_width_is_an_error() {
        let (mut params, mut ws) = (ParamStore::new(), Workspace::new());
        let mut tape = Tape::inference(&mut params, &mut ws);
        let x = tape.input(&[0.0; 8], Shape::new(&[2, 4]));
        let gamma = tape.input(&[1.0; 3], Shape::new(&[3]));
        let err = tape.layer_norm(x, gamma, gamma, 1e-5).unwrap_err().to_string();
        assert!(err.contains("gamma") && err.contains("[4]"), "{err}");
    }
}
