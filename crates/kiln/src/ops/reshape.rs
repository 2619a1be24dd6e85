//! Reshape (and flatten): same values in the same order, a new shape.

use crate::autograd::{gradient_base, Op, Tape, Var};
use crate::error::{Error, Result};
use crate::tensor::Shape;

use super::parallel;

impl Tape<'_> {
    pub fn reshape(&mut self, x: Var, shape: Shape) -> Result<Var> {
        let from = self.shape(x);
        if from.numel() != shape.numel() {
            return Err(Error::shape(
                "reshape",
                format!("a shape of {} values, as {from} holds", from.numel()),
                shape,
            ));
        }
        let mut y = self.alloc(shape.numel());
        y.copy_from_slice(self.value(x));
        Ok(self.push_op(shape, y, Op::Reshape { x }, &[x]))
    }

    /// Keeps the leading (batch) axis and flattens the rest: (B, …) → (B, ∏…).
    pub fn flatten(&mut self, x: Var) -> Result<Var> {
        let s = self.shape(x);
        let batch = s.dims().first().copied().unwrap_or(1);
        self.reshape(x, Shape::new(&[batch, s.numel() / batch.max(1)]))
    }
}

pub(crate) fn backward(tape: &mut Tape, x: Var, g: &[f32]) {
    pass_through(tape, x, g);
}

/// `dx += g`, for ops whose gradient reaches their input unchanged (a first gradient is
/// written rather than added to zeros).
pub(crate) fn pass_through(tape: &mut Tape, x: Var, g: &[f32]) {
    tape.accumulate_or_write(x, |_, dx, fresh| {
        parallel::update1(dx, g, |d, g| gradient_base(fresh, d) + g)
    });
}

#[cfg(test)]
mod tests {
    use crate::ops::gradcheck;
    use crate::tensor::Shape;

    #[test]
    fn gradient_check_and_errors() {
        gradcheck::check("flatten", &[(&[2, 3, 2], gradcheck::random(12, 1))], |t, v| {
            t.flatten(v[0]).unwrap()
        });
        gradcheck::check("reshape", &[(&[2, 6], gradcheck::random(12, 2))], |t, v| {
            t.reshape(v[0], Shape::new(&[3, 4])).unwrap()
        });
        let mut p = crate::params::ParamStore::new();
        let mut ws = crate::autograd::Workspace::new();
        let mut t = crate::autograd::Tape::new(&mut p, &mut ws);
        let x = t.input(&[0.0; 6], Shape::new(&[2, 3]));
        assert!(t.reshape(x, Shape::new(&[4])).is_err());
    }
}
