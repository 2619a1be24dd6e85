//! Stochastic gradient descent with optional (Nesterov) momentum, Keras's formulation:
//! `v ← μ·v − lr·g`; `w ← w + v`, or with Nesterov `w ← w + μ·v − lr·g`.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Sgd {
    pub learning_rate: f32,
    pub momentum: f32,
    pub nesterov: bool,
}

impl Default for Sgd {
    fn default() -> Self {
        Sgd {
            learning_rate: 0.01,
            momentum: 0.0,
            nesterov: false,
        }
    }
}

impl Sgd {
    pub(crate) fn update(&self, w: &mut [f32], g: super::Grad, state: &mut [Vec<f32>], lr: f32) {
        let (mu, nesterov) = (self.momentum, self.nesterov);
        match state {
            [] => {
                crate::kernels::parallel::axpy(w, -lr, g.values);
                if g.clear {
                    crate::kernels::parallel::fill(g.values, 0.0);
                }
            }
            [velocity, ..] => super::zip1(w, g, velocity, |w, g, v| {
                *v = mu * *v - lr * g;
                *w += if nesterov { mu * *v - lr * g } else { *v };
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::optim::test_support::*;
    use crate::optim::OptimizerSpec;

    #[test]
    fn plain_step_matches_the_worked_example() {
        // ∂L/∂w = 2(1+2+3) = 12 for each weight, so w − 0.1·12 = [−0.2, 0.8, 1.8].
        let mut p = quadratic_problem();
        let mut opt = OptimizerSpec::Sgd(Sgd {
            learning_rate: 0.1,
            ..Sgd::default()
        })
        .build();
        set_quadratic_grad(&mut p);
        opt.step(&mut p, 0.1);
        assert_close(&weights(&p), &[-0.2, 0.8, 1.8]);
    }

    #[test]
    fn momentum_and_nesterov_match_hand_computation() {
        // Step 1: g = 12, v = −1.2, w = [−0.2, 0.8, 1.8]; Σw = 2.4.
        // Step 2: g = 4.8, v = 0.9·(−1.2) − 0.48 = −1.56, w = [−1.76, −0.76, 0.24].
        let spec = Sgd {
            learning_rate: 0.1,
            momentum: 0.9,
            nesterov: false,
        };
        let mut p = quadratic_problem();
        let mut opt = OptimizerSpec::Sgd(spec).build();
        for _ in 0..2 {
            set_quadratic_grad(&mut p);
            opt.step(&mut p, 0.1);
        }
        assert_close(&weights(&p), &[-1.76, -0.76, 0.24]);
        // Nesterov step 1: v = −1.2, w += 0.9·(−1.2) − 1.2 = −2.28 → [−1.28, −0.28, 0.72].
        let mut p = quadratic_problem();
        let mut opt = OptimizerSpec::Sgd(Sgd {
            nesterov: true,
            ..spec
        })
        .build();
        set_quadratic_grad(&mut p);
        opt.step(&mut p, 0.1);
        assert_close(&weights(&p), &[-1.28, -0.28, 0.72]);
    }
}
