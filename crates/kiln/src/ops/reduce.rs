//! Reductions to a scalar: sum and mean of all elements.

use crate::autograd::{Op, Tape, Var};
use crate::tensor::Shape;

use super::parallel;

impl Tape<'_> {
    pub fn sum(&mut self, x: Var) -> Var {
        let total = parallel::sum(self.value(x)) as f32;
        self.scalar_op(total, Op::Sum { x }, x)
    }

    pub fn mean(&mut self, x: Var) -> Var {
        let n = self.shape(x).numel().max(1);
        let mean = (parallel::sum(self.value(x)) / n as f64) as f32;
        self.scalar_op(mean, Op::Mean { x }, x)
    }

    fn scalar_op(&mut self, value: f32, op: Op, x: Var) -> Var {
        let mut v = self.alloc(1);
        v[0] = value;
        self.push_op(Shape::scalar(), v, op, &[x])
    }
}

/// `dx += g` (broadcast of the scalar upstream gradient).
pub(crate) fn sum_backward(tape: &mut Tape, x: Var, g: &[f32]) {
    let g = g[0];
    tape.accumulate(x, |_, dx| dx.iter_mut().for_each(|d| *d += g));
}

/// `dx += g / n`.
pub(crate) fn mean_backward(tape: &mut Tape, x: Var, g: &[f32]) {
    let n = tape.shape(x).numel().max(1) as f32;
    let g = g[0] / n;
    tape.accumulate(x, |_, dx| dx.iter_mut().for_each(|d| *d += g));
}

#[cfg(test)]
mod tests {
    use crate::ops::gradcheck;

    #[test]
    fn gradient_checks() {
        let x = [(&[3, 4][..], gradcheck::random(12, 1))];
        gradcheck::check("sum", &x, |t, v| t.sum(v[0]));
        gradcheck::check("mean", &x, |t, v| t.mean(v[0]));
    }
}
