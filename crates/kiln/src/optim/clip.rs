//! Gradient clipping before the optimizer update, as Keras's optimizer arguments do it
//! (exactly one may be set): `clipnorm` scales each parameter's gradient to norm ≤ c,
//! `global_clipnorm` scales all of them together so their joint norm ≤ c, `clipvalue`
//! clamps every element to [−c, c].

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::params::ParamStore;

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum GradientClipping {
    Clipnorm(f32),
    GlobalClipnorm(f32),
    Clipvalue(f32),
}

impl GradientClipping {
    pub fn validate(&self) -> Result<()> {
        let c = self.limit();
        if !(c > 0.0 && c.is_finite()) {
            return Err(Error::setting(
                format!("gradient_clipping.{}", self.name()),
                c,
                "a positive number",
            ));
        }
        Ok(())
    }

    /// The field as a spec writes it (`clipnorm`).
    fn name(&self) -> &'static str {
        match self {
            GradientClipping::Clipnorm(_) => "clipnorm",
            GradientClipping::GlobalClipnorm(_) => "global_clipnorm",
            GradientClipping::Clipvalue(_) => "clipvalue",
        }
    }

    fn limit(&self) -> f32 {
        match *self {
            GradientClipping::Clipnorm(c)
            | GradientClipping::GlobalClipnorm(c)
            | GradientClipping::Clipvalue(c) => c,
        }
    }

    /// Clips the gradients held in `params` in place.
    pub fn apply(&self, params: &mut ParamStore) {
        // Σg² in f32 blocks of 4096 (vectorized), the blocks added in f64 for range.
        let norm = |g: &[f32]| {
            g.chunks(4096)
                .map(|c| crate::kernels::lanes::dot(c, c) as f64)
                .sum::<f64>()
        };
        match *self {
            GradientClipping::Clipnorm(c) => {
                for p in params.iter_mut().filter(|p| !p.frozen) {
                    let n = norm(&p.grad).sqrt();
                    scale_to(&mut p.grad, n, c);
                }
            }
            GradientClipping::GlobalClipnorm(c) => {
                let global = params
                    .iter()
                    .filter(|p| !p.frozen)
                    .map(|p| norm(&p.grad))
                    .sum::<f64>()
                    .sqrt();
                for p in params.iter_mut().filter(|p| !p.frozen) {
                    scale_to(&mut p.grad, global, c);
                }
            }
            GradientClipping::Clipvalue(c) => {
                for p in params.iter_mut().filter(|p| !p.frozen) {
                    p.grad.iter_mut().for_each(|g| *g = g.clamp(-c, c));
                }
            }
        }
    }
}

/// `g · c / max(norm, c)`: unchanged when the norm is within the limit.
fn scale_to(g: &mut [f32], norm: f64, c: f32) {
    if norm > c as f64 {
        let s = (c as f64 / norm) as f32;
        g.iter_mut().for_each(|v| *v *= s);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tensor::Tensor;

    fn store(grads: &[&[f32]]) -> ParamStore {
        let mut p = ParamStore::new();
        for (i, g) in grads.iter().enumerate() {
            let id = p.add(
                format!("p{i}"),
                Tensor::new(&[g.len()], vec![0.0; g.len()]).unwrap(),
            );
            p.get_mut(id).grad.copy_from_slice(g);
        }
        p
    }

    fn grads(p: &ParamStore) -> Vec<Vec<f32>> {
        p.iter().map(|p| p.grad.clone()).collect()
    }

    #[test]
    fn clipping_matches_keras() {
        // [3, 4] has norm 5; [0.6, 0.8] norm 1. Global norm √26.
        let mut p = store(&[&[3.0, 4.0], &[0.6, 0.8]]);
        GradientClipping::Clipnorm(2.0).apply(&mut p);
        assert_eq!(grads(&p), vec![vec![1.2, 1.6], vec![0.6, 0.8]]);
        let mut p = store(&[&[3.0, 4.0], &[0.6, 0.8]]);
        GradientClipping::GlobalClipnorm(2.0).apply(&mut p);
        let s = 2.0 / 26f32.sqrt();
        for (got, want) in grads(&p)
            .concat()
            .iter()
            .zip([3.0 * s, 4.0 * s, 0.6 * s, 0.8 * s])
        {
            assert!((got - want).abs() < 1e-6);
        }
        let mut p = store(&[&[3.0, -4.0, 0.5]]);
        GradientClipping::Clipvalue(1.0).apply(&mut p);
        assert_eq!(grads(&p), vec![vec![1.0, -1.0, 0.5]]);
        assert!(GradientClipping::Clipnorm(0.0).validate().is_err());
    }

    #[test]
    fn specs_allow_exactly_one_kind() {
        #[derive(Deserialize)]
        struct T {
            gradient_clipping: GradientClipping,
        }
        let t: T = toml::from_str("gradient_clipping = { global_clipnorm = 1.0 }").unwrap();
        assert_eq!(t.gradient_clipping, GradientClipping::GlobalClipnorm(1.0));
        assert!(toml::from_str::<T>("gradient_clipping = { clipnorm = 1.0, clipvalue = 0.5 }").is_err());
        assert!(toml::from_str::<T>("gradient_clipping = { clip_norm = 1.0 }").is_err());
    }
}
