//! Adam (and AdamW) with Keras's formulation and defaults:
//! `α = lr·√(1−β₂ᵗ)/(1−β₁ᵗ)`; `m ← m + (g − m)(1−β₁)`; `v ← v + (g² − v)(1−β₂)`;
//! `w ← w − α·m/(√v + ε)`. AdamW first decays `w ← w − lr·λ·w` (decoupled weight decay),
//! except for parameters whose names contain one of `exclude_from_weight_decay` (Keras's
//! argument of that name; PyTorch users write the same thing as two parameter groups).

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Adam {
    pub learning_rate: f32,
    pub beta_1: f32,
    pub beta_2: f32,
    pub epsilon: f32,
    /// Decoupled weight decay `w ← w − lr·λ·w`, as Keras applies it to any optimizer.
    /// Unset: none for Adam, Keras's 0.004 for AdamW.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub weight_decay: Option<f32>,
    /// Parameters left undecayed: any whose name contains one of these (`"bias"`,
    /// `"gamma"`, …). The usual choice for transformers: decay matrices only.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub exclude_from_weight_decay: Vec<String>,
}

impl Default for Adam {
    fn default() -> Self {
        Adam {
            learning_rate: 0.001,
            beta_1: 0.9,
            beta_2: 0.999,
            epsilon: 1e-7,
            weight_decay: None,
            exclude_from_weight_decay: Vec::new(),
        }
    }
}

impl Adam {
    /// The decay rate in force: the configured one, or `default` when unset.
    pub(crate) fn weight_decay_or(&self, default: f32) -> f32 {
        self.weight_decay.unwrap_or(default)
    }

    /// Whether the parameter of this name is decayed.
    pub(crate) fn decays(&self, name: &str) -> bool {
        !self
            .exclude_from_weight_decay
            .iter()
            .any(|p| name.contains(p.as_str()))
    }

    pub(crate) fn update(
        &self,
        w: &mut [f32],
        g: super::Grad,
        state: &mut [Vec<f32>],
        lr: f32,
        step: u64,
        decay: bool,
    ) {
        let [m, v] = state else {
            unreachable!("adam keeps two moments")
        };
        let (b1, b2, eps) = (self.beta_1, self.beta_2, self.epsilon);
        let t = step as i32;
        let alpha = lr * (1.0 - b2.powi(t)).sqrt() / (1.0 - b1.powi(t));
        let decay = if decay {
            lr * self.weight_decay.unwrap_or(0.0)
        } else {
            0.0
        };
        super::zip2(w, g, m, v, |w, g, m, v| {
            *w -= decay * *w;
            *m += (g - *m) * (1.0 - b1);
            *v += (g * g - *v) * (1.0 - b2);
            *w -= alpha * *m / (v.sqrt() + eps);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::optim::test_support::*;
    use crate::optim::OptimizerSpec;

    /// Two Adam steps on the quadratic, computed by hand in f64.
    fn expected(weight_decay: f64) -> Vec<f64> {
        let (lr, b1, b2, eps) = (0.1f64, 0.9f64, 0.999f64, 1e-7f64);
        let mut w = vec![1.0f64, 2.0, 3.0];
        let (mut m, mut v) = (0.0f64, 0.0f64);
        for t in 1..=2 {
            let g = 2.0 * w.iter().sum::<f64>();
            let alpha = lr * (1.0 - b2.powi(t)).sqrt() / (1.0 - b1.powi(t));
            m += (g - m) * (1.0 - b1);
            v += (g * g - v) * (1.0 - b2);
            for wi in w.iter_mut() {
                *wi -= lr * weight_decay * *wi;
                *wi -= alpha * m / (v.sqrt() + eps);
            }
        }
        w
    }

    #[test]
    fn adam_matches_hand_computed_steps() {
        // Step 1 moves every weight by lr (m/√v = 1): [0.9, 1.9, 2.9].
        let mut p = quadratic_problem();
        let mut opt = OptimizerSpec::Adam(Adam {
            learning_rate: 0.1,
            ..Adam::default()
        })
        .build();
        set_quadratic_grad(&mut p);
        opt.step(&mut p, 0.1);
        assert_close(&weights(&p), &[0.9, 1.9, 2.9]);
        set_quadratic_grad(&mut p);
        opt.step(&mut p, 0.1);
        assert_close(&weights(&p), &expected(0.0));
    }

    #[test]
    fn adamw_decays_weights_decoupled_from_the_gradient() {
        let mut p = quadratic_problem();
        let spec = Adam {
            learning_rate: 0.1,
            weight_decay: Some(0.05),
            ..Adam::default()
        };
        let mut opt = OptimizerSpec::AdamW(spec).build();
        for _ in 0..2 {
            set_quadratic_grad(&mut p);
            opt.step(&mut p, 0.1);
        }
        assert_close(&weights(&p), &expected(0.05));
    }

    #[test]
    fn excluded_parameters_are_not_decayed() {
        // The quadratic's parameter is named "w": excluded by a pattern it contains, it
        // follows plain Adam; a pattern it lacks leaves it decayed.
        for (patterns, decay) in [(vec!["w".to_string()], 0.0), (vec!["bias".to_string()], 0.05)] {
            let mut p = quadratic_problem();
            let spec = Adam {
                learning_rate: 0.1,
                weight_decay: Some(0.05),
                exclude_from_weight_decay: patterns,
                ..Adam::default()
            };
            let mut opt = OptimizerSpec::AdamW(spec).build();
            for _ in 0..2 {
                set_quadratic_grad(&mut p);
                opt.step(&mut p, 0.1);
            }
            assert_close(&weights(&p), &expected(decay));
        }
        let parsed: OptimizerSpec =
            toml::from_str("type = \"adamw\"\nexclude_from_weight_decay = [\"bias\", \"gamma\"]").unwrap();
        let OptimizerSpec::AdamW(a) = parsed else { panic!() };
        assert!(!a.decays("blocks.0.mlp.fc.bias") && !a.decays("ln_f.gamma") && a.decays("head.kernel"));
    }

    #[test]
    fn step_and_clear_updates_like_step_and_zeroes_the_gradients() {
        for spec in [
            OptimizerSpec::Adam(Adam::default()),
            OptimizerSpec::Sgd(crate::optim::Sgd::default()),
            OptimizerSpec::Sgd(crate::optim::Sgd {
                momentum: 0.9,
                ..Default::default()
            }),
            OptimizerSpec::Rmsprop(crate::optim::RmsProp::default()),
        ] {
            let (mut kept, mut cleared) = (quadratic_problem(), quadratic_problem());
            let (mut a, mut b) = (spec.build(), spec.build());
            for _ in 0..3 {
                set_quadratic_grad(&mut kept);
                set_quadratic_grad(&mut cleared);
                a.step(&mut kept, 0.1);
                b.step_and_clear(&mut cleared, 0.1);
            }
            assert_eq!(weights(&kept), weights(&cleared), "{spec:?}");
            assert!(
                kept.iter().all(|p| p.grad.iter().all(|&g| g != 0.0)),
                "step keeps gradients"
            );
            assert!(
                cleared.iter().all(|p| p.grad.iter().all(|&g| g == 0.0)),
                "{spec:?}"
            );
        }
    }

    #[test]
    fn defaults_are_keras_defaults() {
        let parsed: OptimizerSpec = toml::from_str("type = \"adam\"").unwrap();
        assert_eq!(parsed, OptimizerSpec::Adam(Adam::default()));
        let a = Adam::default();
        assert_eq!(
            (a.learning_rate, a.beta_1, a.beta_2, a.epsilon),
            (0.001, 0.9, 0.999, 1e-7)
        );
        assert!(toml::from_str::<OptimizerSpec>("type = \"adam\"\nlearning_rat = 0.1").is_err());
    }
}
