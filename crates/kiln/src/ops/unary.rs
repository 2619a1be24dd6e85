//! Elementwise activations: each is a pair `f(x)` and `df(x, y)` (derivative given the input
//! and the output, whichever is cheaper), the way dfdx writes its kernels.

use serde::{Deserialize, Serialize};

use crate::autograd::{gradient_base, Op, Tape, Var};

use super::parallel;

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub enum UnaryOp {
    Relu,
    LeakyRelu {
        alpha: f32,
    },
    Sigmoid,
    Tanh,
    /// Exact GELU, x·Φ(x), as Keras (approximate = false) and PyTorch compute it by default.
    Gelu,
    /// GELU's tanh approximation (GPT-2 style).
    GeluTanh,
}

impl UnaryOp {
    #[inline(always)]
    pub fn f(self, x: f32) -> f32 {
        match self {
            // Not `x.max(0.0)`, which turns NaN into 0 and would hide a poisoned input or
            // diverged weights from the loss (PyTorch and TensorFlow propagate NaN too).
            UnaryOp::Relu => {
                if x < 0.0 {
                    0.0
                } else {
                    x
                }
            }
            UnaryOp::LeakyRelu { alpha } => {
                if x > 0.0 {
                    x
                } else {
                    alpha * x
                }
            }
            UnaryOp::Sigmoid => sigmoid(x),
            UnaryOp::Tanh => x.tanh(),
            UnaryOp::Gelu => super::gelu::gelu(x),
            UnaryOp::GeluTanh => super::gelu::gelu_tanh(x),
        }
    }

    /// dy/dx at input `x` with output `y`.
    #[inline(always)]
    pub fn df(self, x: f32, y: f32) -> f32 {
        match self {
            UnaryOp::Relu => (x > 0.0) as u8 as f32,
            UnaryOp::LeakyRelu { alpha } => {
                if x > 0.0 {
                    1.0
                } else {
                    alpha
                }
            }
            UnaryOp::Sigmoid => y * (1.0 - y),
            UnaryOp::Tanh => 1.0 - y * y,
            UnaryOp::Gelu => super::gelu::gelu_derivative(x),
            UnaryOp::GeluTanh => super::gelu::gelu_tanh_derivative(x),
        }
    }
}

/// Numerically stable logistic function.
#[inline]
pub fn sigmoid(x: f32) -> f32 {
    if x >= 0.0 {
        1.0 / (1.0 + (-x).exp())
    } else {
        let e = x.exp();
        e / (1.0 + e)
    }
}

/// The error function, Abramowitz & Stegun 7.1.26 refined: max error 1.5e-7, enough for f32.
#[inline]
pub fn erf(x: f32) -> f32 {
    let t = 1.0 / (1.0 + 0.327_591_1 * x.abs() as f64);
    let poly = t
        * (0.254_829_592
            + t * (-0.284_496_736 + t * (1.421_413_741 + t * (-1.453_152_027 + t * 1.061_405_429))));
    let x64 = x as f64;
    let r = 1.0 - poly * (-x64 * x64).exp();
    (if x >= 0.0 { r } else { -r }) as f32
}

impl Tape<'_> {
    pub fn unary(&mut self, x: Var, op: UnaryOp) -> Var {
        let shape = self.shape(x);
        let mut y = self.alloc(shape.numel());
        // Each common op gets its own loop with the op fixed: with `op` read inside, the
        // loop dispatched through a jump table on every element and did not vectorize.
        match op {
            UnaryOp::Gelu => parallel::map_slices(&mut y, self.value(x), super::gelu::forward),
            UnaryOp::GeluTanh => parallel::map_slices(&mut y, self.value(x), super::gelu::tanh_forward),
            UnaryOp::Relu => parallel::map(&mut y, self.value(x), |v| UnaryOp::Relu.f(v)),
            other => parallel::map(&mut y, self.value(x), |v| other.f(v)),
        }
        self.push_op(shape, y, Op::Unary { x, op }, &[x])
    }

    pub fn relu(&mut self, x: Var) -> Var {
        self.unary(x, UnaryOp::Relu)
    }

    pub fn sigmoid(&mut self, x: Var) -> Var {
        self.unary(x, UnaryOp::Sigmoid)
    }

    pub fn tanh(&mut self, x: Var) -> Var {
        self.unary(x, UnaryOp::Tanh)
    }
}

/// `dx += g · df(x, y)`.
pub(crate) fn backward(tape: &mut Tape, x: Var, out: Var, op: UnaryOp, g: &[f32]) {
    let vectorized = match op {
        UnaryOp::Gelu => Some(super::gelu::backward as fn(&mut [f32], &[f32], &[f32])),
        UnaryOp::GeluTanh => Some(super::gelu::tanh_backward as fn(&mut [f32], &[f32], &[f32])),
        _ => None,
    };
    if let Some(rule) = vectorized {
        tape.accumulate(x, |t, dx| parallel::update2_slices(dx, g, t.value(x), rule));
        return;
    }
    match op {
        UnaryOp::Relu => accumulate_derivative(tape, x, out, g, |x, y| UnaryOp::Relu.df(x, y)),
        other => accumulate_derivative(tape, x, out, g, |x, y| other.df(x, y)),
    }
}

/// `dx[i] += g[i] · df(x[i], y[i])`, x and y folded into one pass; `df` is a closure so
/// each op's loop is compiled with the op fixed.
fn accumulate_derivative(tape: &mut Tape, x: Var, out: Var, g: &[f32], df: impl Fn(f32, f32) -> f32 + Sync) {
    tape.accumulate_or_write(x, |t, dx, fresh| {
        let (xs, ys) = (t.value(x), t.value(out));
        let n = dx.len();
        let work = |start: usize, chunk: &mut [f32]| {
            let (xs, ys, g) = (
                &xs[start..][..chunk.len()],
                &ys[start..][..chunk.len()],
                &g[start..][..chunk.len()],
            );
            for (((d, &x), &y), &g) in chunk.iter_mut().zip(xs).zip(ys).zip(g) {
                *d = gradient_base(fresh, *d) + g * df(x, y);
            }
        };
        if n < parallel::PAR_THRESHOLD {
            work(0, dx);
        } else {
            use rayon::prelude::*;
            const CHUNK: usize = 1 << 13;
            dx.par_chunks_mut(CHUNK)
                .enumerate()
                .for_each(|(c, chunk)| work(c * CHUNK, chunk));
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::gradcheck;

    #[test]
    fn values_at_known_points() {
        assert_eq!(UnaryOp::Relu.f(-2.0), 0.0);
        assert_eq!(UnaryOp::Relu.f(3.0), 3.0);
        assert!(UnaryOp::Relu.f(f32::NAN).is_nan(), "NaN must reach the loss");
        assert_eq!(UnaryOp::LeakyRelu { alpha: 0.2 }.f(-2.0), -0.4);
        assert!((UnaryOp::Sigmoid.f(0.0) - 0.5).abs() < 1e-7);
        assert!((UnaryOp::Sigmoid.f(-100.0)).abs() < 1e-30);
        assert!((UnaryOp::Tanh.f(1.0) - 0.761_594_2).abs() < 1e-6);
        // GELU(1) = Φ(1) = 0.841344746...; GELU(-1) = -0.158655254
        assert!((UnaryOp::Gelu.f(1.0) - 0.841_344_7).abs() < 1e-6);
        assert!((UnaryOp::Gelu.f(-1.0) + 0.158_655_25).abs() < 1e-6);
        assert!((UnaryOp::GeluTanh.f(1.0) - 0.841_192).abs() < 1e-5);
        assert!((erf(0.5) - 0.520_499_9).abs() < 1e-6);
    }

    #[test]
    fn gradient_checks() {
        let ops = [
            ("relu", UnaryOp::Relu),
            ("leaky_relu", UnaryOp::LeakyRelu { alpha: 0.1 }),
            ("sigmoid", UnaryOp::Sigmoid),
            ("tanh", UnaryOp::Tanh),
            ("gelu", UnaryOp::Gelu),
            ("gelu_tanh", UnaryOp::GeluTanh),
        ];
        for (name, op) in ops {
            // kinked ops are checked away from the kink
            let x = gradcheck::away_from_zero(24, 5);
            gradcheck::check(name, &[(&[4, 6], x)], |t, v| t.unary(v[0], op));
        }
    }
}
