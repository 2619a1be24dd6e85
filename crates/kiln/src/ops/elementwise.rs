//! Elementwise binary ops on same-shaped tensors: add and multiply.

use crate::autograd::{Op, Tape, Var};
use crate::error::{Error, Result};

use super::parallel;

impl Tape<'_> {
    pub fn add(&mut self, a: Var, b: Var) -> Result<Var> {
        self.binary(a, b, "add", |x, y| x + y, |a, b| Op::Add { a, b })
    }

    pub fn mul(&mut self, a: Var, b: Var) -> Result<Var> {
        self.binary(a, b, "mul", |x, y| x * y, |a, b| Op::Mul { a, b })
    }

    fn binary(
        &mut self,
        a: Var,
        b: Var,
        name: &str,
        f: impl Fn(f32, f32) -> f32 + Sync,
        op: fn(Var, Var) -> Op,
    ) -> Result<Var> {
        let shape = self.shape(a);
        if shape != self.shape(b) {
            return Err(Error::shape(
                name,
                "equal shapes",
                format!("{shape} and {}", self.shape(b)),
            ));
        }
        let mut y = self.alloc(shape.numel());
        parallel::map2(&mut y, self.value(a), self.value(b), f);
        Ok(self.push_op(shape, y, op(a, b), &[a, b]))
    }
}

/// `da += g`, `db += g`.
pub(crate) fn add_backward(tape: &mut Tape, a: Var, b: Var, g: &[f32]) {
    tape.accumulate(a, |_, da| parallel::axpy(da, 1.0, g));
    tape.accumulate(b, |_, db| parallel::axpy(db, 1.0, g));
}

/// `da += g·b`, `db += g·a`.
pub(crate) fn mul_backward(tape: &mut Tape, a: Var, b: Var, g: &[f32]) {
    tape.accumulate(a, |t, da| {
        parallel::update2(da, g, t.value(b), |d, g, b| d + g * b)
    });
    tape.accumulate(b, |t, db| {
        parallel::update2(db, g, t.value(a), |d, g, a| d + g * a)
    });
}

#[cfg(test)]
mod tests {
    use crate::ops::gradcheck;

    #[test]
    fn gradient_checks() {
        let inputs = [
            (&[3, 4][..], gradcheck::random(12, 1)),
            (&[3, 4][..], gradcheck::random(12, 2)),
        ];
        gradcheck::check("add", &inputs, |t, v| t.add(v[0], v[1]).unwrap());
        gradcheck::check("mul", &inputs, |t, v| t.mul(v[0], v[1]).unwrap());
        // the same value used twice: gradients from both uses must add up (x·x → 2x)
        gradcheck::check("mul self", &inputs[..1], |t, v| t.mul(v[0], v[0]).unwrap());
    }
}
