//! Inverted dropout: during training each element is zeroed with probability `rate` and the
//! survivors scaled by 1/(1 − rate), so inference needs no rescaling.

use crate::autograd::{Op, Tape, Var};
use crate::error::{Error, Result};
use crate::rng::Rng;

use super::parallel;

impl Tape<'_> {
    pub fn dropout(&mut self, x: Var, rate: f32, rng: &mut Rng) -> Result<Var> {
        if !(0.0..1.0).contains(&rate) {
            return Err(Error::Value(format!("dropout rate {rate} must be in [0, 1)")));
        }
        if rate == 0.0 {
            return Ok(x);
        }
        let shape = self.shape(x);
        let keep_scale = 1.0 / (1.0 - rate);
        // Drop when a uniform 32-bit draw falls below rate·2³²; one 64-bit draw feeds two
        // elements, which halves the generator's share of the step.
        let threshold = (rate as f64 * 4_294_967_296.0) as u64;
        let mut mask = self.alloc(shape.numel());
        for pair in mask.chunks_mut(2) {
            let bits = rng.next_u64();
            for (m, half) in pair.iter_mut().zip([bits & 0xFFFF_FFFF, bits >> 32]) {
                *m = if half >= threshold { keep_scale } else { 0.0 };
            }
        }
        let mut y = self.alloc(shape.numel());
        y.copy_from_slice(self.value(x));
        parallel::update1(&mut y, &mask, |v, m| v * m);
        let out = self.push_op(shape, y, Op::MaskedBy { x }, &[x]);
        self.set_saved(out, mask);
        Ok(out)
    }
}

/// `dx += g ⊙ mask`.
pub(crate) fn backward(tape: &mut Tape, x: Var, out: Var, g: &[f32]) {
    tape.accumulate(x, |t, dx| {
        parallel::update2(dx, g, t.saved(out), |d, g, m| d + g * m)
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::gradcheck;
    use crate::tensor::Shape;

    #[test]
    fn drops_about_rate_and_scales_survivors() {
        let mut p = crate::params::ParamStore::new();
        let mut ws = crate::autograd::Workspace::new();
        let mut t = Tape::new(&mut p, &mut ws);
        let x = t.input(&vec![1.0; 10_000], Shape::new(&[100, 100]));
        let y = t.dropout(x, 0.2, &mut Rng::new(1)).unwrap();
        let zeros = t.value(y).iter().filter(|&&v| v == 0.0).count();
        assert!((1800..2200).contains(&zeros), "{zeros}");
        assert!(t.value(y).iter().all(|&v| v == 0.0 || (v - 1.25).abs() < 1e-6));
        assert!(t.dropout(x, 1.0, &mut Rng::new(1)).is_err());
    }

    #[test]
    fn gradient_check() {
        // The same seed each evaluation gives the same mask, so the op is a fixed linear map.
        gradcheck::check("dropout", &[(&[4, 5], gradcheck::random(20, 1))], |t, v| {
            t.dropout(v[0], 0.3, &mut Rng::new(5)).unwrap()
        });
    }
}
