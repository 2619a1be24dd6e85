//! RMSprop with Keras's formulation and defaults (lr 1e-3, ρ 0.9, ε 1e-7 inside the root):
//! `v ← ρv + (1−ρ)g²`; with `centered`, `ḡ ← ρḡ + (1−ρ)g` and the denominator uses
//! `v − ḡ²`; `Δ = lr·g/√(denominator + ε)`; with momentum `m ← μm + Δ`, `w ← w − m`,
//! otherwise `w ← w − Δ`.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RmsProp {
    pub learning_rate: f32,
    pub rho: f32,
    pub momentum: f32,
    pub epsilon: f32,
    pub centered: bool,
}

impl Default for RmsProp {
    fn default() -> Self {
        RmsProp {
            learning_rate: 0.001,
            rho: 0.9,
            momentum: 0.0,
            epsilon: 1e-7,
            centered: false,
        }
    }
}

impl RmsProp {
    pub(crate) fn update(&self, w: &mut [f32], g: super::Grad, state: &mut [Vec<f32>], lr: f32) {
        let [velocity, average_grad, momentum] = state else {
            unreachable!("rmsprop keeps three buffers")
        };
        let (rho, mu, eps, centered) = (self.rho, self.momentum, self.epsilon, self.centered);
        // The momentum buffer holds Δ's running sum; `average_grad` is used when centered.
        super::zip2(velocity, g, average_grad, momentum, |v, g, avg, m| {
            *v = rho * *v + (1.0 - rho) * g * g;
            let mut denominator = *v;
            if centered {
                *avg = rho * *avg + (1.0 - rho) * g;
                denominator -= *avg * *avg;
            }
            let increment = lr * g / (denominator + eps).sqrt();
            *m = if mu > 0.0 { mu * *m + increment } else { increment };
        });
        crate::kernels::parallel::axpy(w, -1.0, momentum);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::optim::test_support::*;
    use crate::optim::OptimizerSpec;

    #[test]
    fn rmsprop_matches_hand_computed_steps() {
        // Step 1: v = 0.1·144 = 14.4, Δ = 0.1·12/√(14.4+1e-7) = 0.316227765 → w − Δ.
        let mut p = quadratic_problem();
        let mut opt = OptimizerSpec::Rmsprop(RmsProp {
            learning_rate: 0.1,
            ..RmsProp::default()
        })
        .build();
        set_quadratic_grad(&mut p);
        opt.step(&mut p, 0.1);
        let d1 = 0.1 * 12.0 / (14.4f64 + 1e-7).sqrt();
        assert_close(&weights(&p), &[1.0 - d1, 2.0 - d1, 3.0 - d1]);
        // Step 2: g = 2Σw, v = 0.9·14.4 + 0.1·g².
        let g2 = 2.0 * (6.0 - 3.0 * d1);
        let v2 = 0.9 * 14.4 + 0.1 * g2 * g2;
        let d2 = 0.1 * g2 / (v2 + 1e-7f64).sqrt();
        set_quadratic_grad(&mut p);
        opt.step(&mut p, 0.1);
        assert_close(&weights(&p), &[1.0 - d1 - d2, 2.0 - d1 - d2, 3.0 - d1 - d2]);
    }

    #[test]
    fn centered_with_momentum_matches_hand_computation() {
        // Step 1: v = 14.4, ḡ = 1.2, denominator 14.4 − 1.44 = 12.96, Δ = 0.1·12/√12.96.
        let spec = RmsProp {
            learning_rate: 0.1,
            momentum: 0.5,
            centered: true,
            ..RmsProp::default()
        };
        let mut p = quadratic_problem();
        let mut opt = OptimizerSpec::Rmsprop(spec).build();
        set_quadratic_grad(&mut p);
        opt.step(&mut p, 0.1);
        let d1 = 1.2 / (12.96f64 + 1e-7).sqrt();
        assert_close(&weights(&p), &[1.0 - d1, 2.0 - d1, 3.0 - d1]);
        // Step 2: momentum carries half of Δ₁.
        let g2 = 2.0 * (6.0 - 3.0 * d1);
        let v2 = 0.9 * 14.4 + 0.1 * g2 * g2;
        let avg2 = 0.9 * 1.2 + 0.1 * g2;
        let m2 = 0.5 * d1 + 0.1 * g2 / (v2 - avg2 * avg2 + 1e-7).sqrt();
        set_quadratic_grad(&mut p);
        opt.step(&mut p, 0.1);
        assert_close(&weights(&p), &[1.0 - d1 - m2, 2.0 - d1 - m2, 3.0 - d1 - m2]);
    }
}
