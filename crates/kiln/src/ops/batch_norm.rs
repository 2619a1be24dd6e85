//! Batch normalization over the last (channel) axis, Keras semantics: while training,
//! `y = γ·(x − μ_B)/√(σ²_B + ε) + β` with the batch's mean and biased variance per channel,
//! and the moving statistics follow `m ← m·momentum + batch·(1 − momentum)`; at inference
//! the moving statistics replace the batch's.

use crate::autograd::{Op, Tape, Var};
use crate::error::{Error, Result};
use crate::params::ParamId;

/// The moving statistics a training step updates.
#[derive(Debug, Clone, Copy)]
pub struct MovingStats {
    pub mean: ParamId,
    pub variance: ParamId,
    pub momentum: f32,
}

impl Tape<'_> {
    /// Training-mode batch normalization of `x` (…, C); `gamma` and `beta` are (C) or
    /// absent (Keras `scale = false` / `center = false`).
    pub fn batch_norm_train(
        &mut self,
        x: Var,
        gamma: Option<Var>,
        beta: Option<Var>,
        moving: MovingStats,
        epsilon: f32,
    ) -> Result<Var> {
        let (shape, c) = (self.shape(x), self.check_channels(x, &[gamma, beta])?);
        let n = shape.numel() / c;
        let (mean, variance) = channel_moments(self.value(x), c);
        let mut saved = self.alloc(n * c + c); // x̂, then 1/σ per channel
        let (xhat, inv_std) = saved.split_at_mut(n * c);
        for ch in 0..c {
            inv_std[ch] = 1.0 / (variance[ch] as f32 + epsilon).sqrt();
        }
        for (row_hat, row) in xhat.chunks_exact_mut(c).zip(self.value(x).chunks_exact(c)) {
            for ch in 0..c {
                row_hat[ch] = (row[ch] - mean[ch] as f32) * inv_std[ch];
            }
        }
        let mut y = self.alloc(n * c);
        self.scale_shift(&mut y, xhat, gamma, beta, c);
        self.update_moving(moving, &mean, &variance);
        let out = self.push_op(
            shape,
            y,
            Op::BatchNorm { x, gamma, beta },
            &[Some(x), gamma, beta].map(|v| v.unwrap_or(x)),
        );
        self.set_saved(out, saved);
        Ok(out)
    }

    /// Inference-mode batch normalization with the moving statistics: a per-channel affine
    /// map. Only `x` gets a gradient (the statistics and γ, β are constants here).
    pub fn batch_norm_infer(
        &mut self,
        x: Var,
        gamma: Option<Var>,
        beta: Option<Var>,
        moving: MovingStats,
        epsilon: f32,
    ) -> Result<Var> {
        let (shape, c) = (self.shape(x), self.check_channels(x, &[gamma, beta])?);
        let mut scale = self.alloc(2 * c); // per channel: scale, then shift
        {
            let (mm, mv) = (
                self.params.get(moving.mean).value.data(),
                self.params.get(moving.variance).value.data(),
            );
            let g = gamma.map(|v| self.value(v));
            let b = beta.map(|v| self.value(v));
            for ch in 0..c {
                let s = g.map_or(1.0, |g| g[ch]) / (mv[ch] + epsilon).sqrt();
                scale[ch] = s;
                scale[c + ch] = b.map_or(0.0, |b| b[ch]) - mm[ch] * s;
            }
        }
        let mut y = self.alloc(shape.numel());
        for (out, row) in y.chunks_exact_mut(c).zip(self.value(x).chunks_exact(c)) {
            for ch in 0..c {
                out[ch] = row[ch] * scale[ch] + scale[c + ch];
            }
        }
        let out = self.push_op(shape, y, Op::ChannelAffine { x }, &[x]);
        self.set_saved(out, scale);
        Ok(out)
    }

    /// The channel count of `x`, checked against the per-channel parameters.
    fn check_channels(&self, x: Var, per_channel: &[Option<Var>]) -> Result<usize> {
        let s = self.shape(x);
        let c = s.last();
        if s.rank() < 2 || c == 0 {
            return Err(Error::shape("batch_normalization", "(batch, …, channels)", s));
        }
        for v in per_channel.iter().flatten() {
            if self.shape(*v).dims() != [c] {
                return Err(Error::shape(
                    "batch_normalization parameter",
                    format!("[{c}] for {c} channels"),
                    self.shape(*v),
                ));
            }
        }
        Ok(c)
    }

    /// `y = γ·x̂ + β` per channel.
    fn scale_shift(&self, y: &mut [f32], xhat: &[f32], gamma: Option<Var>, beta: Option<Var>, c: usize) {
        let g = gamma.map(|v| self.value(v));
        let b = beta.map(|v| self.value(v));
        for (out, row) in y.chunks_exact_mut(c).zip(xhat.chunks_exact(c)) {
            for ch in 0..c {
                out[ch] = row[ch] * g.map_or(1.0, |g| g[ch]) + b.map_or(0.0, |b| b[ch]);
            }
        }
    }

    fn update_moving(&mut self, moving: MovingStats, mean: &[f64], variance: &[f64]) {
        let m = moving.momentum;
        for (id, batch) in [(moving.mean, mean), (moving.variance, variance)] {
            let stat = self.params.get_mut(id).value.data_mut();
            for (s, &b) in stat.iter_mut().zip(batch) {
                *s = *s * m + b as f32 * (1.0 - m);
            }
        }
    }
}

/// Per-channel mean and biased variance over all rows, accumulated in f64 (two passes, so
/// a large mean does not swamp a small variance).
fn channel_moments(x: &[f32], c: usize) -> (Vec<f64>, Vec<f64>) {
    let n = (x.len() / c).max(1) as f64;
    let mut mean = vec![0.0f64; c];
    for row in x.chunks_exact(c) {
        mean.iter_mut().zip(row).for_each(|(m, &v)| *m += v as f64);
    }
    mean.iter_mut().for_each(|m| *m /= n);
    let mut variance = vec![0.0f64; c];
    for row in x.chunks_exact(c) {
        for ch in 0..c {
            let d = row[ch] as f64 - mean[ch];
            variance[ch] += d * d;
        }
    }
    variance.iter_mut().for_each(|v| *v /= n);
    (mean, variance)
}

/// `dβ = Σg`, `dγ = Σg·x̂`, `dx = γ/(σ·N)·(N·g − Σg − x̂·Σg·x̂)` per channel.
pub(crate) fn backward(tape: &mut Tape, x: Var, gamma: Option<Var>, beta: Option<Var>, out: Var, g: &[f32]) {
    let c = tape.shape(x).last();
    let n = g.len() / c;
    let (sum_g, sum_gx) = {
        let xhat = &tape.saved(out)[..n * c];
        let mut sums = (vec![0.0f64; c], vec![0.0f64; c]);
        for (gr, xr) in g.chunks_exact(c).zip(xhat.chunks_exact(c)) {
            for ch in 0..c {
                sums.0[ch] += gr[ch] as f64;
                sums.1[ch] += (gr[ch] * xr[ch]) as f64;
            }
        }
        sums
    };
    if let Some(b) = beta {
        tape.accumulate(b, |_, db| {
            db.iter_mut().zip(&sum_g).for_each(|(d, s)| *d += *s as f32)
        });
    }
    if let Some(gm) = gamma {
        tape.accumulate(gm, |_, dg| {
            dg.iter_mut().zip(&sum_gx).for_each(|(d, s)| *d += *s as f32)
        });
    }
    tape.accumulate(x, |t, dx| {
        let saved = t.saved(out);
        let (xhat, inv_std) = saved.split_at(n * c);
        let gam = gamma.map(|v| t.value(v));
        let coef: Vec<f32> = (0..c)
            .map(|ch| gam.map_or(1.0, |g| g[ch]) * inv_std[ch] / n as f32)
            .collect();
        for ((d, gr), xr) in dx
            .chunks_exact_mut(c)
            .zip(g.chunks_exact(c))
            .zip(xhat.chunks_exact(c))
        {
            for ch in 0..c {
                d[ch] += coef[ch] * (n as f32 * gr[ch] - sum_g[ch] as f32 - xr[ch] * sum_gx[ch] as f32);
            }
        }
    });
}

/// `dx = g · scale` per channel.
pub(crate) fn affine_backward(tape: &mut Tape, x: Var, out: Var, g: &[f32]) {
    let c = tape.shape(x).last();
    tape.accumulate(x, |t, dx| {
        let scale = &t.saved(out)[..c];
        for (d, gr) in dx.chunks_exact_mut(c).zip(g.chunks_exact(c)) {
            for ch in 0..c {
                d[ch] += gr[ch] * scale[ch];
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::autograd::Workspace;
    use crate::ops::gradcheck;
    use crate::params::ParamStore;
    use crate::tensor::{Shape, Tensor};

    fn stats(p: &mut ParamStore, c: usize) -> MovingStats {
        MovingStats {
            mean: p.add_non_trainable("mm", Tensor::new(&[c], vec![0.0; c]).unwrap()),
            variance: p.add_non_trainable("mv", Tensor::new(&[c], vec![1.0; c]).unwrap()),
            momentum: 0.9,
        }
    }

    #[test]
    fn normalizes_per_channel_and_moves_the_statistics() {
        let mut p = ParamStore::new();
        let moving = stats(&mut p, 2);
        let mut ws = Workspace::new();
        {
            let mut t = Tape::new(&mut p, &mut ws);
            // Channel 0: 1, 3 (mean 2, var 1); channel 1: 10, 10 (mean 10, var 0).
            let x = t.input(&[1.0, 10.0, 3.0, 10.0], Shape::new(&[2, 2]));
            let y = t.batch_norm_train(x, None, None, moving, 1e-3).unwrap();
            let v = t.value(y);
            let s = 1.0 / (1.0f32 + 1e-3).sqrt();
            assert!(
                (v[0] + s).abs() < 1e-6 && (v[2] - s).abs() < 1e-6 && v[1] == 0.0 && v[3] == 0.0,
                "{v:?}"
            );
        }
        // m ← 0.9·m + 0.1·batch
        let mm = p.get(moving.mean).value.data();
        assert!((mm[0] - 0.2).abs() < 1e-6 && (mm[1] - 1.0).abs() < 1e-6, "{mm:?}");
        let mv = p.get(moving.variance).value.data();
        assert!((mv[0] - 1.0).abs() < 1e-6 && (mv[1] - 0.9).abs() < 1e-6, "{mv:?}");
        // Inference uses the moving statistics: (x − 0.2)/√(1 + ε).
        let mut t = Tape::inference(&mut p, &mut ws);
        let x = t.input(&[1.2, 1.0], Shape::new(&[1, 2]));
        let y = t.batch_norm_infer(x, None, None, moving, 1e-3).unwrap();
        assert!((t.value(y)[0] - 1.0 / (1.0f32 + 1e-3).sqrt()).abs() < 1e-6);
    }

    #[test]
    fn gradient_check_in_training_mode() {
        // The moving statistics change on every call but do not enter the training output.
        let mut p = ParamStore::new();
        let moving = stats(&mut p, 3);
        gradcheck::check_with_params(
            "batch_norm train",
            p,
            &[
                (&[4, 2, 3], gradcheck::random(24, 1)),
                (&[3], gradcheck::random(3, 2)),
                (&[3], gradcheck::random(3, 3)),
            ],
            move |t, v| {
                t.batch_norm_train(v[0], Some(v[1]), Some(v[2]), moving, 1e-3)
                    .unwrap()
            },
        );
        let mut p = ParamStore::new();
        let moving = stats(&mut p, 3);
        gradcheck::check_with_params(
            "batch_norm inference",
            p,
            &[(&[4, 3], gradcheck::random(12, 4))],
            move |t, v| t.batch_norm_infer(v[0], None, None, moving, 1e-3).unwrap(),
        );
    }
}
