//! Mean squared error over all elements: `Σ (p − t)² / n`, gradient `2(p − t)/n`.

use crate::autograd::{Tape, Var};
use crate::error::{Error, Result};

impl Tape<'_> {
    pub fn mse(&mut self, predictions: Var, targets: &[f32]) -> Result<Var> {
        let shape = self.shape(predictions);
        if targets.len() != shape.numel() {
            return Err(Error::shape(
                "mse targets",
                format!("{} values for predictions {shape}", shape.numel()),
                targets.len(),
            ));
        }
        let n = shape.numel() as f32;
        let mut grad = self.alloc(shape.numel());
        let mut total = 0.0f64;
        for ((g, &p), &t) in grad.iter_mut().zip(self.value(predictions)).zip(targets) {
            let d = p - t;
            total += (d * d) as f64;
            *g = 2.0 * d / n;
        }
        self.finish_loss(predictions, (total / n as f64) as f32, grad)
    }
}

#[cfg(test)]
mod tests {
    use crate::ops::gradcheck;

    #[test]
    fn value_and_gradient() {
        let targets = gradcheck::random(6, 2);
        gradcheck::check("mse", &[(&[2, 3], gradcheck::random(6, 1))], |t, v| {
            t.mse(v[0], &targets).unwrap()
        });
        let mut p = crate::params::ParamStore::new();
        let mut ws = crate::autograd::Workspace::new();
        let mut t = crate::autograd::Tape::new(&mut p, &mut ws);
        let x = t.input(&[1.0, 2.0, 3.0, 4.0], crate::tensor::Shape::new(&[2, 2]));
        let l = t.mse(x, &[1.0, 0.0, 3.0, 0.0]).unwrap();
        assert_eq!(t.value(l)[0], (4.0 + 16.0) / 4.0);
    }
}
