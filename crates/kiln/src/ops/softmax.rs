//! Softmax and log-softmax along the last axis, computed stably (max subtracted first).

use crate::autograd::{Op, Tape, Var};

use super::parallel;

/// `row ← softmax(row)` in place.
pub fn softmax_in_place(row: &mut [f32]) {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut total = 0.0f32;
    for v in row.iter_mut() {
        *v = (*v - max).exp();
        total += *v;
    }
    let inv = 1.0 / total;
    row.iter_mut().for_each(|v| *v *= inv);
}

/// `log Σ exp(row)`, stably.
pub fn log_sum_exp(row: &[f32]) -> f32 {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let total: f32 = row.iter().map(|&v| (v - max).exp()).sum();
    max + total.ln()
}

impl Tape<'_> {
    pub fn softmax(&mut self, x: Var) -> Var {
        let shape = self.shape(x);
        let mut y = self.alloc(shape.numel());
        y.copy_from_slice(self.value(x));
        parallel::for_each_row(&mut y, shape.last(), |_, row| softmax_in_place(row));
        self.push_op(shape, y, Op::Softmax { x }, &[x])
    }

    pub fn log_softmax(&mut self, x: Var) -> Var {
        let shape = self.shape(x);
        let mut y = self.alloc(shape.numel());
        y.copy_from_slice(self.value(x));
        parallel::for_each_row(&mut y, shape.last(), |_, row| {
            let lse = log_sum_exp(row);
            row.iter_mut().for_each(|v| *v -= lse);
        });
        self.push_op(shape, y, Op::LogSoftmax { x }, &[x])
    }
}

/// `dx = y ⊙ (g − Σ g⊙y)` per row.
pub(crate) fn softmax_backward(tape: &mut Tape, x: Var, out: Var, g: &[f32]) {
    let width = tape.shape(x).last();
    tape.accumulate(x, |t, dx| {
        let y = t.value(out);
        parallel::for_each_row(dx, width, |r, dx_row| {
            let (y_row, g_row) = (&y[r * width..][..width], &g[r * width..][..width]);
            let dot: f32 = y_row.iter().zip(g_row).map(|(y, g)| y * g).sum();
            for ((d, &y), &g) in dx_row.iter_mut().zip(y_row).zip(g_row) {
                *d += y * (g - dot);
            }
        });
    });
}

/// `dx = g − softmax(x) · Σ g` per row, with softmax(x) = exp(y).
pub(crate) fn log_softmax_backward(tape: &mut Tape, x: Var, out: Var, g: &[f32]) {
    let width = tape.shape(x).last();
    tape.accumulate(x, |t, dx| {
        let y = t.value(out);
        parallel::for_each_row(dx, width, |r, dx_row| {
            let (y_row, g_row) = (&y[r * width..][..width], &g[r * width..][..width]);
            let total: f32 = g_row.iter().sum();
            for ((d, &y), &g) in dx_row.iter_mut().zip(y_row).zip(g_row) {
                *d += g - y.exp() * total;
            }
        });
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::gradcheck;

    #[test]
    fn values_are_stable_and_normalised() {
        let mut row = [1000.0, 1001.0, 1002.0];
        softmax_in_place(&mut row);
        // softmax([0,1,2]) = [0.09003057, 0.24472847, 0.66524096]
        assert!((row[0] - 0.090_030_57).abs() < 1e-6 && (row[2] - 0.665_240_96).abs() < 1e-6);
        assert!((log_sum_exp(&[1000.0, 1000.0]) - (1000.0 + 2f32.ln())).abs() < 1e-3);
    }

    #[test]
    fn gradient_checks() {
        let x = [(&[3, 5][..], gradcheck::random(15, 7))];
        gradcheck::check("softmax", &x, |t, v| t.softmax(v[0]));
        gradcheck::check("log_softmax", &x, |t, v| t.log_softmax(v[0]));
    }
}
