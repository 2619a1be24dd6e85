//! Weight penalties (regularizers) with Keras's formulas: `l1·Σ|w| + l2·Σw²` — not ½·l2 —
//! with gradient `l1·sign(w) + 2·l2·w` (sign(0) = 0, as `tf.sign`).

use crate::autograd::{Tape, Var};
use crate::error::{Error, Result};

impl Tape<'_> {
    /// The scalar penalty of `w`; its gradient flows back into `w` (usually a parameter).
    pub fn weight_penalty(&mut self, w: Var, l1: f32, l2: f32) -> Result<Var> {
        for (name, v) in [("l1", l1), ("l2", l2)] {
            if !(v >= 0.0 && v.is_finite()) {
                return Err(Error::setting(
                    format!("regularizer {name}"),
                    v,
                    "a finite number ≥ 0",
                ));
            }
        }
        let n = self.shape(w).numel();
        let mut grad = self.alloc(n);
        let mut total = 0.0f64;
        for (g, &v) in grad.iter_mut().zip(self.value(w)) {
            total += (l1 * v.abs() + l2 * v * v) as f64;
            let sign = if v > 0.0 {
                1.0
            } else if v < 0.0 {
                -1.0
            } else {
                0.0
            };
            *g = l1 * sign + 2.0 * l2 * v;
        }
        self.finish_loss(w, total as f32, grad)
    }
}

#[cfg(test)]
mod tests {
    use crate::ops::gradcheck;

    #[test]
    fn value_follows_keras_and_gradient_checks() {
        let mut p = crate::params::ParamStore::new();
        let mut ws = crate::autograd::Workspace::new();
        let mut t = crate::autograd::Tape::new(&mut p, &mut ws);
        let w = t.input(&[1.0, -2.0, 0.0, 3.0], crate::tensor::Shape::new(&[2, 2]));
        // l1·(1+2+0+3) + l2·(1+4+0+9) with l1 = 0.1, l2 = 0.01: 0.6 + 0.14
        let l = t.weight_penalty(w, 0.1, 0.01).unwrap();
        assert!((t.value(l)[0] - 0.74).abs() < 1e-6);
        assert!(t.weight_penalty(w, -0.1, 0.0).is_err());
        // away from 0, where |w| has its kink
        gradcheck::check(
            "weight_penalty",
            &[(&[3, 4], gradcheck::away_from_zero(12, 3))],
            |t, v| t.weight_penalty(v[0], 0.05, 0.2).unwrap(),
        );
    }
}
