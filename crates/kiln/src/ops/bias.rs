//! Broadcast add of a bias vector along the last axis: `y[r, j] = x[r, j] + bias[j]`.

use crate::autograd::{Op, Tape, Var};
use crate::error::{Error, Result};

impl Tape<'_> {
    pub fn add_bias(&mut self, x: Var, bias: Var) -> Result<Var> {
        let (sx, sb) = (self.shape(x), self.shape(bias));
        if sb.rank() != 1 || sb.dims()[0] != sx.last() {
            return Err(Error::shape("bias", format!("[{}] for {sx}", sx.last()), sb));
        }
        let width = sx.last();
        let mut y = self.alloc(sx.numel());
        y.copy_from_slice(self.value(x));
        let b = self.value(bias);
        super::parallel::for_each_row(&mut y, width, |_, row| {
            row.iter_mut().zip(b).for_each(|(v, b)| *v += b);
        });
        Ok(self.push_op(sx, y, Op::AddBias { x, bias }, &[x, bias]))
    }
}

/// `dx += g`; `dbias[j] += Σ_r g[r, j]`.
pub(crate) fn backward(tape: &mut Tape, x: Var, bias: Var, g: &[f32]) {
    super::reshape::pass_through(tape, x, g);
    bias_backward(tape, bias, g);
}

/// `dbias[j] += Σ_r g[r, j]`.
pub(crate) fn bias_backward(tape: &mut Tape, bias: Var, g: &[f32]) {
    let width = tape.shape(bias).numel();
    tape.accumulate(bias, |_, db| {
        for row in g.chunks_exact(width) {
            db.iter_mut().zip(row).for_each(|(d, g)| *d += g);
        }
    });
}

#[cfg(test)]
mod tests {
    use crate::ops::gradcheck;

    #[test]
    fn gradient_check() {
        gradcheck::check(
            "add_bias",
            &[
                (&[4, 3], gradcheck::random(12, 1)),
                (&[3], gradcheck::random(3, 2)),
            ],
            |t, v| t.add_bias(v[0], v[1]).unwrap(),
        );
    }
}
